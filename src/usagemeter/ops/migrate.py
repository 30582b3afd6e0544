"""Apply supabase/migrations the way the Supabase CLI does, so either tool can take over from the other.

Each run: take an advisory lock (concurrent migrators queue), apply the platform shim (creates
only what Supabase would already have), check that applied files are unchanged, then apply each
pending file in its own transaction together with its history row. A failure rolls back that one
migration; what was applied before it stays applied and recorded, so re-running resumes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import psycopg

from usagemeter import errors
from usagemeter.db import sql

queries = sql.load_queries("usagemeter.ops")

MIGRATION_FILE_NAME = re.compile(r"^(?P<version>\d{14})_(?P<name>[A-Za-z0-9_-]+)\.sql$")
_INSIGNIFICANT = re.compile(r"[\s;]+")
_CREATED_TABLE = re.compile(
    r"^\s*create\s+table\s+(?:if\s+not\s+exists\s+)?([a-z_][a-z0-9_]*\.[a-z_][a-z0-9_]*)", re.I | re.M
)

MigrationStatus = Literal["applied", "pending", "changed"]


@dataclass(frozen=True)
class Migration:
    """One migration file: `version` is its 14-digit prefix, `name` the rest without `.sql`."""

    version: str
    name: str
    text: str

    @property
    def file_name(self) -> str:
        return f"{self.version}_{self.name}.sql"

    @property
    def created_tables(self) -> list[str]:
        """Schema-qualified tables this migration creates (for the pre-flight clash check)."""
        return [name.lower() for name in _CREATED_TABLE.findall(self.text)]


@dataclass(frozen=True)
class MigrationState:
    """A migration and whether the database has it (and has it as the file says)."""

    migration: Migration
    status: MigrationStatus


def migrations_dir() -> Path:
    """The migrations: packaged inside the wheel, or supabase/migrations of a source checkout."""
    packaged = resources.files("usagemeter").joinpath("migrations")
    if packaged.is_dir():
        return Path(str(packaged))
    checkout = Path(__file__).resolve().parents[3] / "supabase" / "migrations"
    if checkout.is_dir():
        return checkout
    raise errors.MigrationError("no migrations found: neither usagemeter/migrations nor supabase/migrations exists")


def discover_migrations(directory: Path | None = None) -> list[Migration]:
    """Every .sql file of the directory, in version order; a misnamed file is an error, not skipped."""
    directory = directory or migrations_dir()
    found: list[Migration] = []
    for path in sorted(directory.glob("*.sql")):
        match = MIGRATION_FILE_NAME.match(path.name)
        if match is None:
            raise errors.MigrationFileError(
                f"{path.name}: expected <14-digit UTC timestamp>_<name>.sql, e.g. 20261126090000_create_tenants.sql"
            )
        found.append(Migration(match["version"], match["name"], path.read_text(encoding="utf-8")))
    versions = [m.version for m in found]
    duplicates = sorted({v for v in versions if versions.count(v) > 1})
    if duplicates:
        raise errors.MigrationFileError(f"two migration files share version {', '.join(duplicates)}")
    return found


def same_sql(applied_statements: Sequence[str], file_text: str) -> bool:
    """Whether recorded statements are the file's text, ignoring whitespace and statement splitting.

    The Supabase CLI records a file split into statements, we record it whole; both must compare equal.
    """
    return _INSIGNIFICANT.sub("", "".join(applied_statements)) == _INSIGNIFICANT.sub("", file_text)


def server_version(conn: psycopg.Connection[Any]) -> tuple[int, str]:
    """The server's major version and its full version string, for status output."""
    row = conn.execute(queries["server_version"]).fetchone()
    return (int(row[0]), str(row[1])) if row is not None else (0, "?")


def _applied(conn: psycopg.Connection[Any]) -> dict[str, list[str] | None]:
    exists = conn.execute(queries["migration_history_exists"]).fetchone()
    if exists is None or not exists[0]:
        return {}
    rows = conn.execute(queries["applied_migrations"]).fetchall()
    return {str(version): statements for version, _name, statements in rows}


def states(conn: psycopg.Connection[Any], migrations: Iterable[Migration]) -> list[MigrationState]:
    """Which of our migrations the database has applied, which are pending, and which were changed since."""
    applied = _applied(conn)
    result: list[MigrationState] = []
    for migration in migrations:
        if migration.version not in applied:
            result.append(MigrationState(migration, "pending"))
            continue
        statements = applied[migration.version]
        unchanged = statements is None or same_sql(statements, migration.text)
        result.append(MigrationState(migration, "applied" if unchanged else "changed"))
    return result


def apply_platform_shim(conn: psycopg.Connection[Any]) -> None:
    """Create the Supabase roles and auth objects where absent; a no-op on Supabase itself."""
    with conn.transaction():
        conn.execute(sql.read_sql_file("usagemeter.ops", "platform.sql"))


def migrate(conn: psycopg.Connection[Any], migrations: Sequence[Migration] | None = None) -> list[Migration]:
    """Bring the database up to date; returns the migrations applied by this call (empty when none were due).

    `conn` must be in autocommit mode: each migration gets a transaction of its own.
    """
    if not conn.autocommit:
        raise errors.MigrationError(
            "migrate() needs an autocommit connection: each migration runs in its own transaction"
        )
    migrations = list(migrations if migrations is not None else discover_migrations())
    conn.execute(queries["lock_migrations"])
    try:
        apply_platform_shim(conn)
        with conn.transaction():
            conn.execute(queries["create_migration_history"])
        current = states(conn, migrations)
        changed = [s.migration.file_name for s in current if s.status == "changed"]
        if changed:
            raise errors.MigrationChanged(
                f"applied migration(s) changed since they were applied: {', '.join(changed)}; "
                "restore the original file(s) and add a new migration for the change. Nothing was applied."
            )
        pending = [s.migration for s in current if s.status == "pending"]
        _refuse_foreign_tables(conn, pending)
        _refuse_foreign_private_schema(conn, pending)
        applied_now: list[Migration] = []
        for state in current:
            if state.status != "pending":
                continue
            _apply_one(conn, state.migration)
            applied_now.append(state.migration)
        return applied_now
    finally:
        if not conn.closed and not conn.broken:
            conn.execute(queries["unlock_migrations"])


def _refuse_foreign_tables(conn: psycopg.Connection[Any], pending: Sequence[Migration]) -> None:
    """Stop before any change when a table a pending migration creates exists already (someone else's)."""
    clashes: list[str] = []
    for migration in pending:
        for table in migration.created_tables:
            row = conn.execute(queries["table_shape"], {"table": table}).fetchone()
            if row is not None and row[0] is not None:
                clashes.append(f"{table} ({row[0]}), which {migration.file_name} creates")
    if clashes:
        raise errors.MigrationError(
            "these tables exist already and were not created by usagemeter: "
            + "; ".join(clashes)
            + ". Rename or drop them (copy their rows over after migrating), then migrate again. Nothing was changed."
        )


# The first migration puts its helpers in a schema named `private` and grants `authenticated` USAGE
# on it; 20261127120000 moves them to usagemeter_private, revokes that grant and drops `private`.
_GRANTS_ON_PRIVATE = "20261126090000"


def _refuse_foreign_private_schema(conn: psycopg.Connection[Any], pending: Sequence[Migration]) -> None:
    """Stop before any change when a fresh install would grant signed-in users USAGE on someone else's `private`."""
    if not any(m.version == _GRANTS_ON_PRIVATE for m in pending):
        return
    row = conn.execute(queries["schema_exists"], {"schema": "private"}).fetchone()
    if row is not None and row[0]:
        raise errors.MigrationError(
            "schema private exists already and was not created by usagemeter. usagemeter's first migration "
            "grants the authenticated role USAGE on a schema named private (a later one moves usagemeter's "
            "helpers to usagemeter_private and revokes it), which would let every signed-in user call the "
            "functions of your schema that keep the default PUBLIC execute right. Rename your schema for the "
            "install (alter schema private rename to private_app), migrate, then rename it back: usagemeter "
            "leaves nothing in private. Nothing was changed."
        )


def _apply_one(conn: psycopg.Connection[Any], migration: Migration) -> None:
    try:
        with conn.transaction():
            conn.execute(migration.text)  # trusted: a file shipped with usagemeter
            conn.execute(
                queries["record_migration"],
                {"version": migration.version, "name": migration.name, "statements": [migration.text]},
            )
    except psycopg.Error as failure:
        diag = failure.diag
        detail = "; ".join(part for part in (diag.message_primary, diag.message_detail, diag.message_hint) if part)
        raise errors.MigrationError(
            f"{migration.file_name} failed and was rolled back: {detail or failure}"
        ) from failure
