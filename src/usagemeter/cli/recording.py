"""`usagemeter record`: one event from flags, or many from JSON Lines."""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import Progress

from usagemeter.cli.common import DatabaseUrlOption, app_database, err, fail, reported_errors
from usagemeter.recording import importing
from usagemeter.recording import recorder as recorder_module


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
    model: str | None,
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
        "model": model,
    }
    return json.dumps({k: v for k, v in fields.items() if v is not None})


@contextmanager
def _input_lines(file: str) -> Iterator[Iterator[bytes]]:
    """The input as byte lines: a line that is not UTF-8 is that line's error, not the whole run's."""
    if file == "-":
        yield iter(sys.stdin.buffer)
        return
    try:
        handle = Path(file).open("rb")  # noqa: SIM115 - closed below, after the lines are consumed
    except OSError as failure:
        fail(f"cannot read --file {file}: {failure.strerror}", code=2)
    with handle:
        yield iter(handle)


def record(
    action: Annotated[str | None, typer.Option("--action", help="<module>:<domain>:<verb>")] = None,
    user: Annotated[uuid.UUID | None, typer.Option("--user", help="User id (auth.users.id)")] = None,
    tenant: Annotated[uuid.UUID | None, typer.Option("--tenant", help="Tenant id; omit for personal usage")] = None,
    module: Annotated[str | None, typer.Option("--module", help="Module id; default: the action's module")] = None,
    tokens_in: Annotated[int, typer.Option("--tokens-in", help="Input tokens")] = 0,
    tokens_out: Annotated[int, typer.Option("--tokens-out", help="Output tokens")] = 0,
    metadata: Annotated[str | None, typer.Option("--metadata", help="JSON object")] = None,
    model: Annotated[
        str | None, typer.Option("--model", help="Model (stored as metadata.model, what tokens are priced by)")
    ] = None,
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
        fail("give either --action (one event from flags) or --file (JSON Lines), not both or neither", code=2)
    refused = 0

    def report(outcome: importing.LineOutcome) -> None:
        nonlocal refused
        refused += outcome.error is not None
        print(outcome.as_json(), flush=True)

    with reported_errors(), app_database(database_url) as url, recorder_module.Recorder(url) as root:
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
                model=model,
            )
            write(writer_face, [line], report)
        else:
            with _input_lines(file) as lines, _progress(file) as advance:
                write(writer_face, _counting(lines, advance), report)
    if refused:
        raise typer.Exit(1)


@contextmanager
def _progress(file: str) -> Iterator[Callable[[bytes], None]]:
    """A progress bar on stderr for files read from a terminal session; a no-op otherwise."""
    if file == "-" or not sys.stderr.isatty():
        yield lambda line: None
        return
    total = Path(file).stat().st_size
    with Progress(console=err, transient=True) as progress:
        task = progress.add_task(f"recording {Path(file).name}", total=total)
        yield lambda line: progress.advance(task, len(line))
        progress.update(task, completed=total)


def _counting(lines: Iterator[bytes], advance: Callable[[bytes], None]) -> Iterator[bytes]:
    for line in lines:
        advance(line)
        yield line
