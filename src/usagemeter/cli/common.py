"""What every usagemeter command shares: consoles, the database option, and turning failures into exit codes."""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from types import FrameType
from typing import Annotated, NoReturn

import psycopg
import typer
from psycopg import conninfo
from rich import markup
from rich.console import Console

from usagemeter import db, errors, settings
from usagemeter.ops import embedded, migrate

# No emoji codes: an action such as support:ticket:classify must print as itself, not with a 🎫.
out = Console(emoji=False)
err = Console(stderr=True, emoji=False)

DatabaseUrlOption = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        help="PostgreSQL URL. Default: $USAGEMETER_DATABASE_URL, then $DATABASE_URL, then the embedded PostgreSQL.",
        show_default=False,
    ),
]


def fail(message: str, code: int = 1) -> NoReturn:
    err.print(f"[bold red]error:[/] {markup.escape(message)}", highlight=False)  # messages quote user input
    raise typer.Exit(code)


# Set by the `usagemeter` command line before any command runs; unset when usagemeter is a library.
command_line: ContextVar[bool] = ContextVar("usagemeter_command_line", default=False)


@contextmanager
def _sigterm_exits() -> Iterator[None]:
    """While a CLI command runs: SIGTERM becomes SystemExit, so context managers stop the embedded server cleanly.

    Installed only by the command line (never for library use), on the main thread, and the
    previous handler is put back when the block ends.
    """
    if not command_line.get() or threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        sys.exit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def embedded_server() -> embedded.EmbeddedPostgres:
    return embedded.EmbeddedPostgres(settings.Settings().data_dir / "postgres")


def safe_url(url: str) -> str:
    """The URL without its password, for printing."""
    params = conninfo.conninfo_to_dict(url)
    params.pop("password", None)
    return conninfo.make_conninfo("", **params)


@dataclass(frozen=True)
class Logins:
    """One database's two logins: the owner's for migrations and upkeep, the app's (authenticator) for the rest."""

    admin: str
    app: str


def prepare_embedded(server: embedded.EmbeddedPostgres) -> list[migrate.Migration]:
    """Migrate the embedded server's database and let `authenticator` log in with the server's password."""
    with db.connect(server.url(), autocommit=True) as conn:
        applied = migrate.migrate(conn)
        server.enable_app_login(conn)
    return applied


@contextmanager
def logins(url: str | None) -> Iterator[Logins]:
    """Both logins of the database to use: from `url` (the admin URL), the environment, or the embedded server.

    From an admin URL, the app login is the same server and database as `authenticator`, with
    $USAGEMETER_AUTHENTICATOR_PASSWORD; without `url`, $USAGEMETER_APP_DATABASE_URL wins.
    """
    config = settings.Settings()
    if url:
        yield Logins(admin=url, app=config.app_url_for(url))
        return
    if config.database_url:
        yield Logins(admin=config.database_url, app=config.app_database_url or config.app_url_for(config.database_url))
        return
    with _sigterm_exits(), embedded_server() as server:
        applied = prepare_embedded(server)
        err.print(
            f"embedded PostgreSQL in {server.data_dir}"
            + (f"; applied {len(applied)} migration(s) on start" if applied else ""),
            highlight=False,
        )
        yield Logins(admin=server.url(), app=server.app_url())


@contextmanager
def database(url: str | None) -> Iterator[str]:
    """The admin URL of the database to use: for migrations, status, type generation and rollup upkeep."""
    with logins(url) as found:
        yield found.admin


@contextmanager
def app_database(url: str | None) -> Iterator[str]:
    """The app login's URL of the database to use: recording and reports run as `authenticator`."""
    with logins(url) as found:
        yield found.app


@contextmanager
def reported_errors() -> Iterator[None]:
    """Known failures become one clear line and exit code 1, not a traceback."""
    try:
        yield
    except errors.UsagemeterError as failure:
        fail(str(failure))
    except psycopg.OperationalError as failure:
        fail(f"cannot reach the database: {str(failure).strip()}")
