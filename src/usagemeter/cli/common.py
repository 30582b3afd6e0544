"""What every usagemeter command shares: consoles, the database option, and turning failures into exit codes."""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Annotated, NoReturn

import psycopg
import typer
from psycopg import conninfo
from rich.console import Console

from usagemeter import db, errors, settings
from usagemeter.ops import embedded, migrate

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


def fail(message: str, code: int = 1) -> NoReturn:
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


def _stop_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit so context managers stop the embedded server cleanly."""

    def handler(signum: int, frame: FrameType | None) -> None:
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def embedded_server() -> embedded.EmbeddedPostgres:
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
    with embedded_server() as server:
        with db.connect(server.url(), autocommit=True) as conn:
            applied = migrate.migrate(conn)
        err.print(
            f"embedded PostgreSQL in {server.data_dir}"
            + (f"; applied {len(applied)} migration(s) on start" if applied else ""),
            highlight=False,
        )
        yield server.url()


@contextmanager
def reported_errors() -> Iterator[None]:
    """Known failures become one clear line and exit code 1, not a traceback."""
    try:
        yield
    except errors.UsagemeterError as failure:
        fail(str(failure))
    except psycopg.OperationalError as failure:
        fail(f"cannot reach the database: {str(failure).strip()}")
