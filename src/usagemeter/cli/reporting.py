"""`usagemeter report`, `export` and `rollup`: reading usage back, for people and for machines."""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from datetime import datetime
from pathlib import Path
from typing import IO, Annotated, Any, NoReturn

import psycopg
import typer
from rich.progress import Progress, TextColumn

from usagemeter import db
from usagemeter.cli.common import DatabaseUrlOption, app_database, database, err, fail, out, reported_errors
from usagemeter.reporting import archives, exporting, filters, rendering, report_sql, rollup_check, summaries

# The flag of each query field, so an error names what the user typed.
FLAGS = {
    "start": "--from", "end": "--to", "tz": "--tz", "group_by": "--by", "bucket": "--bucket", "top": "--top",
    "action_prefix": "--action-prefix", "module": "--module", "by_user": "--by-user", "metadata": "--metadata",
}  # fmt: skip


def _bad_parameter(failure: filters.ReportError) -> NoReturn:
    """A ReportError is bad input: one line naming the flag, exit 2."""
    field, separator, rest = str(failure).partition(":")
    name = field.split(".")[0]
    fail(f"{FLAGS[name]}{field.removeprefix(name)}{separator}{rest}" if name in FLAGS else str(failure), code=2)


def _report_range(start: str | None, end: str | None, tz: str) -> tuple[datetime, datetime]:
    """ISO dates (midnight in `tz`) or date-times; by default the current month in `tz`."""
    try:
        return filters.range_from_text(start, end, tz)
    except filters.ReportError as failure:
        _bad_parameter(failure)


def _scope_and_range(
    tenant: uuid.UUID | None, user: uuid.UUID | None, all_visible: bool, start: str | None, end: str | None, tz: str
) -> tuple[filters.Scope, datetime, datetime]:
    """The scope flags (exactly one) and the time range, as report and export take them."""
    if sum((tenant is not None, user is not None, all_visible)) != 1:
        fail("give exactly one of --tenant ID, --user ID or --all", code=2)
    scope: filters.Scope = "tenant" if tenant else "user" if user else "all"
    since, until = _report_range(start, end, tz)
    return scope, since, until


def report(
    tenant: Annotated[uuid.UUID | None, typer.Option("--tenant", help="One tenant's usage")] = None,
    user: Annotated[uuid.UUID | None, typer.Option("--user", help="One user's personal usage (no tenant)")] = None,
    all_visible: Annotated[bool, typer.Option("--all", help="Everything the caller may see")] = False,
    start: Annotated[str | None, typer.Option("--from", help="ISO date; default: start of this month")] = None,
    end: Annotated[str | None, typer.Option("--to", help="ISO date, exclusive; default: start of next month")] = None,
    by: Annotated[str, typer.Option("--by", help="Comma list of action, domain, module, model, user")] = "",
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
        fail(f"--format: expected table, json or csv, got {output!r}", code=2)
    if chart and bucket is None:
        fail("--chart needs --bucket", code=2)
    group_by = tuple(part.strip() for part in by.split(",") if part.strip())
    try:
        query = filters.query_from(
            summaries.SummaryQuery, scope=scope, tenant_id=tenant, user_id=user, start=since, end=until,
            group_by=group_by, bucket=bucket, tz=tz, top=top, action_prefix=action_prefix,
        )  # fmt: skip
    except filters.ReportError as failure:
        _bad_parameter(failure)
    identity = db.Identity.user(as_user) if as_user else db.Identity.service()
    with reported_errors(), app_database(database_url) as url, db.connect_app(url) as conn:
        rows = _summary(conn, identity, query)
        _note_archived(conn, identity, since, until, what="these totals come from the rollups (exact)")
    key_names = [report_sql.GROUP_COLUMNS[k][0] for k in query.group_by] + (["bucket"] if bucket else [])
    if output == "json":
        print(rendering.to_json(rows))
    elif output == "csv":
        sys.stdout.write(rendering.to_csv(rows, key_names))
    else:
        title = f"Usage {since.date()} to {until.date()} ({scope}{', ' + tz if bucket else ''})"
        rendering.print_table(rows, key_names, title, out)
    if chart:
        rendering.print_chart(rows, tz, out if output == "table" else err)


def _note_archived(
    conn: psycopg.Connection[Any], identity: db.Identity, since: datetime, until: datetime, *, what: str
) -> None:
    """Tell the reader on stderr when part of the range has no raw events any more (retention)."""
    message = archives.note(archives.archived_months(conn, identity, since, until), what=what)
    if message:
        err.print(f"note: {message}", highlight=False)


def _summary(
    conn: psycopg.Connection[Any], identity: db.Identity, query: summaries.SummaryQuery
) -> list[summaries.SummaryRow]:
    """The summary, with a size cap or a zone the server refuses reported as bad input (exit 2)."""
    try:
        return summaries.summarize(conn, identity, query)
    except filters.ReportError as failure:
        _bad_parameter(failure)


def rollup_command(
    rebuild: Annotated[bool, typer.Option("--rebuild", help="Recompute the rollup from the raw events")] = False,
    fold: Annotated[bool, typer.Option("--fold", help="Move the unfolded deltas into the rollups first")] = False,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Check that the rollups equal the raw events (exit 1 if not); --fold folds, --rebuild recomputes them.

    Triggers keep the rollups plus their deltas exact as events are written, and fold the deltas
    every 1000, so there is nothing to catch up on; --fold only makes the delta table small now.
    A rebuild repairs the rollups after a TRUNCATE or a restore made without triggers.
    """
    with reported_errors(), database(database_url) as url, db.connect(url, autocommit=True) as conn:
        if fold:
            folded = rollup_check.fold(conn)
            out.print("another fold is running" if folded is None else f"folded {folded:,} deltas")
        if rebuild:
            written = rollup_check.rebuild(conn)
            out.print(f"rebuilt the rollups: {written:,} hourly rows")
        wrong = rollup_check.differences(conn)
    if wrong:
        err.print(f"[bold red]{wrong:,} rollup groups differ from the raw events[/]; run `usagemeter rollup --rebuild`")
        raise typer.Exit(1)
    out.print("the rollups equal the raw events")


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
        fail(f"--format: expected csv, jsonl or parquet, got {output_format!r}", code=2)
    if output_format == "parquet" and output is None:
        fail("--format parquet needs --output FILE", code=2)
    try:
        containment = json.loads(metadata) if metadata is not None else None
    except json.JSONDecodeError as failure:
        fail(f"--metadata: not JSON: {failure.msg}", code=2)
    except RecursionError:
        fail(f"--metadata: nested too deeply (more than {filters.METADATA_MAX_DEPTH} levels)", code=2)
    try:
        query = filters.query_from(
            filters.UsageFilter, scope=scope, tenant_id=tenant, user_id=user, start=since, end=until,
            action_prefix=action_prefix, module=module, by_user=by_user, metadata=containment,
        )  # fmt: skip
    except filters.ReportError as failure:
        _bad_parameter(failure)
    identity = db.Identity.user(as_user) if as_user else db.Identity.service()
    fmt: exporting.ExportFormat = output_format  # type: ignore[assignment]  # checked above
    with (
        reported_errors(),
        app_database(database_url) as url,
        db.connect_app(url) as conn,
        _opened(output) if output else nullcontext(sys.stdout.buffer) as sink,
        _row_counter(output is not None and sys.stderr.isatty()) as progress,
    ):
        written = exporting.export_events(conn, identity, query, fmt, sink, progress=progress)
        _note_archived(conn, identity, since, until, what="they are not in this export (see the retention archives)")
    if output is not None:
        err.print(f"exported {written:,} events to {output}")


def _opened(path: Path) -> IO[bytes]:
    """The output file, open for writing; a path that cannot be written is bad input (exit 2)."""
    try:
        return path.open("wb")
    except OSError as failure:
        fail(f"--output: cannot write {str(path)!r}: {failure.strerror}", code=2)


@contextmanager
def _row_counter(visible: bool) -> Iterator[Callable[[int], None]]:
    """A live count of exported rows on a terminal; silent otherwise."""
    if not visible:
        yield lambda rows: None
        return
    with Progress(*Progress.get_default_columns()[:1], TextColumn("{task.completed:,} events"), console=err) as bar:
        task = bar.add_task("exporting", total=None)
        yield lambda rows: bar.update(task, completed=rows)
