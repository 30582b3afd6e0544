"""The `usagemeter` command line: database lifecycle and type generation (typer + rich)."""

from __future__ import annotations

import json
import signal
import sys
import uuid
import zoneinfo
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Annotated, NoReturn

import psycopg
import typer
from psycopg import conninfo
from rich.console import Console
from rich.progress import Progress, TextColumn
from rich.table import Table

from usagemeter import (
    db,
    embedded,
    errors,
    exporting,
    importing,
    migrate,
    report_output,
    reports,
    rollup,
    settings,
    sql,
    typegen,
)
from usagemeter import recorder as recorder_module
from usagemeter.sql import report_queries

app = typer.Typer(help="Record and report AI usage per tenant on PostgreSQL, isolated by RLS.", no_args_is_help=True)
db_app = typer.Typer(help="Migrate, inspect, start and stop the database.", no_args_is_help=True)
app.add_typer(db_app, name="db")

out = Console()
err = Console(stderr=True)

DatabaseUrlOption = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        help="PostgreSQL URL. Default: $USAGEMETER_DATABASE_URL, then $DATABASE_URL, then the embedded PostgreSQL.",
        show_default=False,
    ),
]


def _fail(message: str, code: int = 1) -> NoReturn:
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


def _stop_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit so context managers stop the embedded server cleanly."""

    def handler(signum: int, frame: FrameType | None) -> None:
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def _embedded_server() -> embedded.EmbeddedPostgres:
    return embedded.EmbeddedPostgres(settings.Settings().data_dir / "postgres")


def safe_url(url: str) -> str:
    """The URL without its password, for printing."""
    params = conninfo.conninfo_to_dict(url)
    params.pop("password", None)
    return conninfo.make_conninfo("", **params)


@contextmanager
def database(url: str | None) -> Iterator[str]:
    """The database to use: the given URL, the environment's, or a migrated embedded PostgreSQL."""
    url = url or settings.Settings().database_url
    if url:
        yield url
        return
    _stop_on_sigterm()
    with _embedded_server() as server:
        with db.connect(server.url(), autocommit=True) as conn:
            migrate.migrate(conn)
        yield server.url()


@contextmanager
def reported_errors() -> Iterator[None]:
    """Known failures become one clear line and exit code 1, not a traceback."""
    try:
        yield
    except errors.UsagemeterError as failure:
        _fail(str(failure))
    except psycopg.OperationalError as failure:
        _fail(f"cannot reach the database: {str(failure).strip()}")


def _print_status(conn: psycopg.Connection[tuple[object, ...]], target: str) -> int:
    """Print the migration table; returns how many are pending or changed."""
    major, full = conn.execute(sql.queries["server_version"]).fetchone() or (0, "?")
    table = Table(title=f"Migrations on {target} (PostgreSQL {full})", title_justify="left")
    table.add_column("version")
    table.add_column("name")
    table.add_column("status")
    colours = {"applied": "green", "pending": "yellow", "changed": "bold red"}
    outstanding = 0
    for state in migrate.states(conn, migrate.discover_migrations()):
        table.add_row(state.migration.version, state.migration.name, f"[{colours[state.status]}]{state.status}[/]")
        outstanding += state.status != "applied"
    out.print(table)
    if major and int(str(major)) < 15:
        err.print("[yellow]warning:[/] PostgreSQL 15 or newer is required (NULLS NOT DISTINCT).")
    return outstanding


@db_app.command("migrate")
def db_migrate(database_url: DatabaseUrlOption = None) -> None:
    """Apply the Supabase shim where needed and every pending migration, then show the status."""
    with reported_errors(), database(database_url) as url, db.connect(url, autocommit=True) as conn:
        applied = migrate.migrate(conn)
        out.print(f"Applied {len(applied)} migration(s)." if applied else "Database is up to date.")
        _print_status(conn, safe_url(url))


@db_app.command("status")
def db_status(database_url: DatabaseUrlOption = None) -> None:
    """List applied, pending and changed migrations; exit 1 when any is pending or changed."""
    with reported_errors(), database(database_url) as url, db.connect(url, autocommit=True) as conn:
        if _print_status(conn, safe_url(url)):
            raise typer.Exit(1)


@db_app.command("up")
def db_up() -> None:
    """Start the embedded PostgreSQL (if not running), migrate it, print its URL and leave it running."""
    server = _embedded_server()
    with reported_errors():
        url = server.start()
        with db.connect(url, autocommit=True) as conn:
            migrate.migrate(conn)
    err.print(f"embedded PostgreSQL running in {server.data_dir}; stop it with `usagemeter db down`")
    out.print(url, highlight=False, soft_wrap=True)


@db_app.command("down")
def db_down() -> None:
    """Stop the embedded PostgreSQL started by `usagemeter db up`."""
    server = _embedded_server()
    with reported_errors():
        was_running = server.is_running()
        server.stop()
    err.print("embedded PostgreSQL stopped" if was_running else "embedded PostgreSQL was not running")


@app.command("gen-types")
def gen_types(
    lang: Annotated[typegen.Language, typer.Option("--lang", help="typescript or python")] = "typescript",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="File to write; default stdout")] = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Generate types from the live, migrated database (Supabase TypeScript format, or Python models)."""
    with reported_errors(), database(database_url) as url, db.connect(url) as conn:
        text = typegen.render(typegen.introspect(conn), lang)
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text, encoding="utf-8")
        err.print(f"wrote {output}")


def _event_from_flags(
    *,
    action: str,
    user: uuid.UUID | None,
    tenant: uuid.UUID | None,
    module: str | None,
    tokens_in: int,
    tokens_out: int,
    metadata: str | None,
    idempotency_key: str | None,
) -> str:
    """The flags as one JSON line, so flags and files share one path."""
    try:
        parsed_metadata = json.loads(metadata) if metadata is not None else None
    except json.JSONDecodeError as failure:
        raise typer.BadParameter(f"not JSON: {failure.msg}", param_hint="--metadata") from None
    fields = {
        "action": action,
        "user_id": str(user) if user else None,
        "tenant_id": str(tenant) if tenant else None,
        "module_id": module,
        "tokens_input": tokens_in,
        "tokens_output": tokens_out,
        "metadata": parsed_metadata,
        "idempotency_key": idempotency_key,
    }
    return json.dumps({k: v for k, v in fields.items() if v is not None})


@contextmanager
def _input_lines(file: str) -> Iterator[Iterator[str]]:
    if file == "-":
        yield iter(sys.stdin)
        return
    try:
        handle = Path(file).open(encoding="utf-8")  # noqa: SIM115 - closed below, after the lines are consumed
    except OSError as failure:
        _fail(f"cannot read --file {file}: {failure.strerror}", code=2)
    with handle:
        yield iter(handle)


@app.command("record")
def record(
    action: Annotated[str | None, typer.Option("--action", help="<module>:<domain>:<verb>")] = None,
    user: Annotated[uuid.UUID | None, typer.Option("--user", help="User id (auth.users.id)")] = None,
    tenant: Annotated[uuid.UUID | None, typer.Option("--tenant", help="Tenant id; omit for personal usage")] = None,
    module: Annotated[str | None, typer.Option("--module", help="Module id; default: the action's module")] = None,
    tokens_in: Annotated[int, typer.Option("--tokens-in", help="Input tokens")] = 0,
    tokens_out: Annotated[int, typer.Option("--tokens-out", help="Output tokens")] = 0,
    metadata: Annotated[str | None, typer.Option("--metadata", help="JSON object")] = None,
    idempotency_key: Annotated[str | None, typer.Option("--idempotency-key", help="Retry key")] = None,
    file: Annotated[
        str | None, typer.Option("--file", help="JSON Lines with the Python API's field names; - for stdin")
    ] = None,
    strict: Annotated[bool, typer.Option("--strict", help="Store nothing if any line is invalid or refused")] = False,
    as_user: Annotated[
        uuid.UUID | None, typer.Option("--as-user", help="Write as this user under RLS (default: service role)")
    ] = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Record one event from flags, or many from JSON Lines; prints one JSON line per event.

    Exit 0 when every event was stored or was a duplicate, 1 when any was refused, 2 on a usage error.
    """
    if (file is None) == (action is None):
        _fail("give either --action (one event from flags) or --file (JSON Lines), not both or neither", code=2)
    refused = 0

    def report(outcome: importing.LineOutcome) -> None:
        nonlocal refused
        refused += outcome.error is not None
        print(outcome.as_json(), flush=True)

    with reported_errors(), database(database_url) as url, recorder_module.Recorder(url) as root:
        writer_face = root.as_user(as_user) if as_user else root
        write = importing.record_lines_strictly if strict else importing.record_lines_leniently
        if file is None:
            line = _event_from_flags(
                action=action or "",
                user=user,
                tenant=tenant,
                module=module,
                tokens_in=tokens_in,
                tokens_out=tokens_out,
                metadata=metadata,
                idempotency_key=idempotency_key,
            )
            write(writer_face, [line], report)
        else:
            with _input_lines(file) as lines, _progress(file) as advance:
                write(writer_face, _counting(lines, advance), report)
    if refused:
        raise typer.Exit(1)


@contextmanager
def _progress(file: str) -> Iterator[Callable[[str], None]]:
    """A progress bar on stderr for files read from a terminal session; a no-op otherwise."""
    if file == "-" or not sys.stderr.isatty():
        yield lambda line: None
        return
    total = Path(file).stat().st_size
    with Progress(console=err, transient=True) as progress:
        task = progress.add_task(f"recording {Path(file).name}", total=total)
        yield lambda line: progress.advance(task, len(line.encode("utf-8")))
        progress.update(task, completed=total)


def _counting(lines: Iterator[str], advance: Callable[[str], None]) -> Iterator[str]:
    for line in lines:
        advance(line)
        yield line


def _report_range(start: str | None, end: str | None, tz: str) -> tuple[datetime, datetime]:
    """ISO dates (midnight in `tz`) or date-times; by default the current month in `tz`."""
    try:
        zone = zoneinfo.ZoneInfo(tz)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        _fail(f"--tz: unknown time zone {tz!r} (expected an IANA name such as Europe/Paris)", code=2)

    def parse(text: str, flag: str) -> datetime:
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            _fail(f"{flag}: expected an ISO date or date-time such as 2026-06-01, got {text!r}", code=2)
        return moment if moment.tzinfo else moment.replace(tzinfo=zone)

    today = datetime.now(zone)
    month_start = datetime(today.year, today.month, 1, tzinfo=zone)
    next_month = datetime(today.year + today.month // 12, today.month % 12 + 1, 1, tzinfo=zone)
    return (parse(start, "--from") if start else month_start), (parse(end, "--to") if end else next_month)


def _scope_and_range(
    tenant: uuid.UUID | None, user: uuid.UUID | None, all_visible: bool, start: str | None, end: str | None, tz: str
) -> tuple[reports.Scope, datetime, datetime]:
    """The scope flags (exactly one) and the time range, as report and export take them."""
    if sum((tenant is not None, user is not None, all_visible)) != 1:
        _fail("give exactly one of --tenant ID, --user ID or --all", code=2)
    scope: reports.Scope = "tenant" if tenant else "user" if user else "all"
    since, until = _report_range(start, end, tz)
    return scope, since, until


@app.command("report")
def report(
    tenant: Annotated[uuid.UUID | None, typer.Option("--tenant", help="One tenant's usage")] = None,
    user: Annotated[uuid.UUID | None, typer.Option("--user", help="One user's personal usage (no tenant)")] = None,
    all_visible: Annotated[bool, typer.Option("--all", help="Everything the caller may see")] = False,
    start: Annotated[str | None, typer.Option("--from", help="ISO date; default: start of this month")] = None,
    end: Annotated[str | None, typer.Option("--to", help="ISO date, exclusive; default: start of next month")] = None,
    by: Annotated[str, typer.Option("--by", help="Comma list of action, domain, module, user")] = "",
    bucket: Annotated[str | None, typer.Option("--bucket", help="hour, day, week or month")] = None,
    tz: Annotated[str, typer.Option("--tz", help="IANA time zone of buckets and dates")] = "UTC",
    action_prefix: Annotated[str | None, typer.Option("--action-prefix", help="e.g. agency: or agency:scope:")] = None,
    top: Annotated[int | None, typer.Option("--top", help="Only the N groups with the most tokens")] = None,
    output: Annotated[str, typer.Option("--format", help="table, json or csv")] = "table",
    chart: Annotated[bool, typer.Option("--chart", help="A bar chart of tokens per bucket")] = False,
    as_user: Annotated[uuid.UUID | None, typer.Option("--as-user", help="Run as this user, under RLS")] = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Usage totals for a tenant, a user's personal usage, or all the caller may see, grouped and bucketed."""
    scope, since, until = _scope_and_range(tenant, user, all_visible, start, end, tz)
    if output not in ("table", "json", "csv"):
        _fail(f"--format: expected table, json or csv, got {output!r}", code=2)
    if chart and bucket is None:
        _fail("--chart needs --bucket", code=2)
    group_by = tuple(part.strip() for part in by.split(",") if part.strip())
    try:
        query = reports.query_from(
            reports.SummaryQuery, scope=scope, tenant_id=tenant, user_id=user, start=since, end=until,
            group_by=group_by, bucket=bucket, tz=tz, top=top, action_prefix=action_prefix,
        )  # fmt: skip
    except reports.ReportError as failure:
        _fail(str(failure).replace("group_by", "--by"), code=2)
    identity = db.Identity.user(as_user) if as_user else db.Identity.service()
    with reported_errors(), database(database_url) as url, db.connect(url) as conn:
        rows = reports.summarize(conn, identity, query)
    key_names = [report_queries.GROUP_COLUMNS[k][0] for k in query.group_by] + (["bucket"] if bucket else [])
    if output == "json":
        print(report_output.to_json(rows))
    elif output == "csv":
        sys.stdout.write(report_output.to_csv(rows, key_names))
    else:
        title = f"Usage {since.date()} to {until.date()} ({scope}{', ' + tz if bucket else ''})"
        report_output.print_table(rows, key_names, title, out)
    if chart:
        report_output.print_chart(rows, tz, out if output == "table" else err)


@app.command("rollup")
def rollup_command(
    rebuild: Annotated[bool, typer.Option("--rebuild", help="Recompute the rollup from the raw events")] = False,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Check that the rollups equal the raw events (exit 1 if not); --rebuild recomputes it.

    Triggers keep the rollup exact as events are written, so there is nothing to catch up on; a
    rebuild repairs it after a TRUNCATE or a restore made without triggers.
    """
    with reported_errors(), database(database_url) as url, db.connect(url, autocommit=True) as conn:
        if rebuild:
            written = rollup.rebuild(conn)
            out.print(f"rebuilt the rollups: {written:,} hourly rows")
        wrong = rollup.differences(conn)
    if wrong:
        err.print(f"[bold red]{wrong:,} rollup groups differ from the raw events[/]; run `usagemeter rollup --rebuild`")
        raise typer.Exit(1)
    out.print("the rollups equal the raw events")


@app.command("export")
def export(
    tenant: Annotated[uuid.UUID | None, typer.Option("--tenant", help="One tenant's events")] = None,
    user: Annotated[uuid.UUID | None, typer.Option("--user", help="One user's personal events (no tenant)")] = None,
    all_visible: Annotated[bool, typer.Option("--all", help="Every event the caller may see")] = False,
    start: Annotated[str | None, typer.Option("--from", help="ISO date; default: start of this month")] = None,
    end: Annotated[str | None, typer.Option("--to", help="ISO date, exclusive; default: start of next month")] = None,
    tz: Annotated[str, typer.Option("--tz", help="IANA time zone of --from and --to")] = "UTC",
    action_prefix: Annotated[str | None, typer.Option("--action-prefix", help="e.g. agency: or agency:scope:")] = None,
    module: Annotated[str | None, typer.Option("--module", help="Only this module")] = None,
    by_user: Annotated[uuid.UUID | None, typer.Option("--by-user", help="Only this user's events")] = None,
    metadata: Annotated[
        str | None, typer.Option("--metadata", help="Only events whose metadata contains this JSON")
    ] = None,
    output_format: Annotated[str, typer.Option("--format", help="csv, jsonl or parquet")] = "csv",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="File to write; default stdout")] = None,
    as_user: Annotated[uuid.UUID | None, typer.Option("--as-user", help="Run as this user, under RLS")] = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Stream raw events to CSV, JSON Lines or Parquet in constant memory, oldest first."""
    scope, since, until = _scope_and_range(tenant, user, all_visible, start, end, tz)
    if output_format not in ("csv", "jsonl", "parquet"):
        _fail(f"--format: expected csv, jsonl or parquet, got {output_format!r}", code=2)
    if output_format == "parquet" and output is None:
        _fail("--format parquet needs --output FILE", code=2)
    try:
        containment = json.loads(metadata) if metadata is not None else None
    except json.JSONDecodeError as failure:
        _fail(f"--metadata: not JSON: {failure.msg}", code=2)
    try:
        query = reports.query_from(
            reports.UsageFilter, scope=scope, tenant_id=tenant, user_id=user, start=since, end=until,
            action_prefix=action_prefix, module=module, by_user=by_user, metadata=containment,
        )  # fmt: skip
    except reports.ReportError as failure:
        _fail(str(failure), code=2)
    identity = db.Identity.user(as_user) if as_user else db.Identity.service()
    fmt: exporting.ExportFormat = output_format  # type: ignore[assignment]  # checked above
    with (
        reported_errors(),
        database(database_url) as url,
        db.connect(url) as conn,
        output.open("wb") if output else nullcontext(sys.stdout.buffer) as sink,
        _row_counter(output is not None and sys.stderr.isatty()) as progress,
    ):
        written = exporting.export_events(conn, identity, query, fmt, sink, progress=progress)
    if output is not None:
        err.print(f"exported {written:,} events to {output}")


@contextmanager
def _row_counter(visible: bool) -> Iterator[Callable[[int], None]]:
    """A live count of exported rows on a terminal; silent otherwise."""
    if not visible:
        yield lambda rows: None
        return
    with Progress(*Progress.get_default_columns()[:1], TextColumn("{task.completed:,} events"), console=err) as bar:
        task = bar.add_task("exporting", total=None)
        yield lambda rows: bar.update(task, completed=rows)
