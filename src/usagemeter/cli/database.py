"""`usagemeter db ...` and `usagemeter gen-types`: migrations, the embedded server, generated types."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import psycopg
import typer
from rich.table import Table

from usagemeter import db
from usagemeter.cli.common import (
    DatabaseUrlOption,
    database,
    embedded_server,
    err,
    out,
    prepare_embedded,
    reported_errors,
    safe_url,
)
from usagemeter.ops import distribute, embedded, migrate, typegen

db_app = typer.Typer(help="Migrate, inspect, start and stop the database.", no_args_is_help=True)


def _print_status(conn: psycopg.Connection[tuple[object, ...]], target: str) -> int:
    """Print the migration table; returns how many are pending or changed."""
    major, full = migrate.server_version(conn)
    out.print(f"Migrations on {target} (PostgreSQL {full})", highlight=False, soft_wrap=True)
    table = Table()
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


@db_app.command("distribute")
def db_distribute(database_url: DatabaseUrlOption = None) -> None:
    """On a Citus coordinator, after `db migrate`: distribute the ledger by owner (docs/distributed.md)."""
    with reported_errors(), database(database_url) as url, db.connect(url, autocommit=True) as conn:
        distribute.distribute(conn)
        out.print("Distributed: usage_events and its keys by owner_id; tenants, members, users, prices as reference.")


@db_app.command("status")
def db_status(database_url: DatabaseUrlOption = None) -> None:
    """List applied, pending and changed migrations; exit 1 when any is pending or changed."""
    with reported_errors(), database(database_url) as url, db.connect(url, autocommit=True) as conn:
        if _print_status(conn, safe_url(url)):
            raise typer.Exit(1)


@db_app.command("up")
def db_up() -> None:
    """Start the embedded PostgreSQL (if not running), migrate it, print its URL and leave it running.

    The URL carries the superuser's generated password (kept 0600 in the data directory): the
    server takes no login without one.
    """
    server = embedded_server()
    with reported_errors():
        url = server.start()
        prepare_embedded(server)
    err.print(
        f"embedded PostgreSQL running in {server.data_dir}, password logins only; the URL below is the "
        f"superuser's (for migrations), the app login's password is in {server.data_dir}/"
        f"{embedded.APP_PASSWORD_FILE}; stop it with `usagemeter db down`",
        highlight=False,
    )
    out.print(url, highlight=False, soft_wrap=True)


@db_app.command("down")
def db_down() -> None:
    """Stop the embedded PostgreSQL started by `usagemeter db up`."""
    server = embedded_server()
    with reported_errors():
        was_running = server.is_running()
        server.stop()
    err.print("embedded PostgreSQL stopped" if was_running else "embedded PostgreSQL was not running")


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
