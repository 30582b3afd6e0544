"""Apply supabase/migrations the way the Supabase CLI does, so either tool can take over from the other.

Each run: in one transaction, check everything that would make us refuse (applied files changed
since, tables a pending file creates that exist already) BEFORE changing anything, then create or
complete the history table and apply the platform shim (creates only what Supabase would already
have). Then apply each pending file in its own transaction together with its history row. Every
transaction takes a transaction-level advisory lock first, so concurrent migrators queue, and
nothing depends on the session (it works through a transaction-mode pooler). A failure rolls back
that one migration; what was applied before it stays applied and recorded, so re-running resumes.
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
from usagemeter.ops import partitions

queries = sql.load_queries("usagemeter.ops")

MIGRATION_FILE_NAME = re.compile(r"^(?P<version>\d{14})_(?P<name>[A-Za-z0-9_-]+)\.sql$")
# How the Supabase CLI cuts a file into recorded statements: at each top-level `;`, each piece trimmed
# of surrounding whitespace and its `;`, empty pieces dropped. What may lie between two pieces:
_BETWEEN_STATEMENTS = re.compile(r"\s*;[\s;]*")
_BEFORE_FIRST_OR_AFTER_LAST = re.compile(r"[\s;]*")
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


def matches_record(statements: Sequence[str] | None, file_text: str) -> bool:
    """Whether a history row's statements are exactly this file's text, as usagemeter or the Supabase CLI records it.

    usagemeter records the whole file as one statement; the Supabase CLI records the file cut at
    each top-level `;`, each piece trimmed (its own parser; cutting is version-dependent, so any cut
    is accepted as long as the pieces are the file's text, in order). Anything inside a statement
    counts: a string literal, an identifier, a comment. Only the whitespace and `;` the CLI trims
    between its pieces are not compared. Line endings compare as `\n`, as the files are read.
    A row without statements (written before the CLI kept them) cannot be checked: it matches.
    """
    if statements is None:
        return True
    recorded = [statement.replace("\r\n", "\n") for statement in statements]
    if recorded == [file_text]:
        return True
    if any(statement != statement.strip() or statement.endswith(";") for statement in recorded):
        return False  # not cut by the CLI (which trims every piece), so it had to be the exact text
    leading = _BEFORE_FIRST_OR_AFTER_LAST.match(file_text)
    position = leading.end() if leading else 0
    for index, statement in enumerate(recorded):
        if not statement or not file_text.startswith(statement, position):
            return False
        position += len(statement)
        gap = (_BETWEEN_STATEMENTS if index < len(recorded) - 1 else _BEFORE_FIRST_OR_AFTER_LAST).match(
            file_text, position
        )
        if gap is None:
            return False
        position = gap.end()
    return position == len(file_text)


def server_version(conn: psycopg.Connection[Any]) -> tuple[int, str]:
    """The server's major version and its full version string, for status output."""
    row = conn.execute(queries["server_version"]).fetchone()
    return (int(row[0]), str(row[1])) if row is not None else (0, "?")


def _applied(conn: psycopg.Connection[Any]) -> dict[str, list[str] | None]:
    """Recorded versions and their statements; read-only, and readable whatever the history table's age."""
    exists = conn.execute(queries["migration_history_exists"]).fetchone()
    if exists is None or not exists[0]:
        return {}
    rows = conn.execute(queries["applied_migrations"]).fetchall()
    return {str(version): statements for version, statements in rows}


def states(conn: psycopg.Connection[Any], migrations: Iterable[Migration]) -> list[MigrationState]:
    """Which of our migrations the database has applied, which are pending, and which were changed since."""
    applied = _applied(conn)
    result: list[MigrationState] = []
    for migration in migrations:
        if migration.version not in applied:
            result.append(MigrationState(migration, "pending"))
            continue
        unchanged = matches_record(applied[migration.version], migration.text)
        result.append(MigrationState(migration, "applied" if unchanged else "changed"))
    return result


def apply_platform_shim(conn: psycopg.Connection[Any]) -> None:
    """Create the Supabase roles and auth objects where absent; a no-op on Supabase itself."""
    with conn.transaction():
        conn.execute(sql.read_sql_file("usagemeter.ops", "platform.sql"))


def migrate(conn: psycopg.Connection[Any], migrations: Sequence[Migration] | None = None) -> list[Migration]:
    """Bring the database up to date; returns the migrations applied by this call (empty when none were due).

    Then creates the monthly partitions of usage_events due ahead (a new month may have begun).

    `conn` must be in autocommit mode: each migration gets a transaction of its own. Refusals
    (`MigrationChanged`, foreign tables) are raised before anything in the database is changed.
    """
    if not conn.autocommit:
        raise errors.MigrationError(
            "migrate() needs an autocommit connection: each migration runs in its own transaction"
        )
    migrations = list(migrations if migrations is not None else discover_migrations())
    prepare_threshold = conn.prepare_threshold
    conn.prepare_threshold = None  # no server-side prepared statements: they break transaction-mode poolers
    try:
        with conn.transaction():
            conn.execute(queries["lock_migrations"])
            pending = _pending_after_preflight(conn, migrations)
            conn.execute(queries["create_migration_history"])
            apply_platform_shim(conn)
        applied = [migration for migration in pending if _apply_one(conn, migration)]
        if partitions.supported(conn):
            partitions.create_ahead(conn)
        return applied
    finally:
        conn.prepare_threshold = prepare_threshold


def _pending_after_preflight(conn: psycopg.Connection[Any], migrations: Sequence[Migration]) -> list[Migration]:
    """The pending migrations, after every check that would refuse the run; reads only, changes nothing."""
    current = states(conn, migrations)
    changed = [s.migration.file_name for s in current if s.status == "changed"]
    if changed:
        raise errors.MigrationChanged(
            f"applied migration(s) changed since they were applied: {', '.join(changed)}; "
            "restore the original file(s) and add a new migration for the change. Nothing was changed."
        )
    pending = [s.migration for s in current if s.status == "pending"]
    _refuse_foreign_tables(conn, pending, migrations)
    _refuse_foreign_private_schema(conn, pending)
    return pending


def _refuse_foreign_tables(
    conn: psycopg.Connection[Any], pending: Sequence[Migration], migrations: Sequence[Migration]
) -> None:
    """Refuse when a table a pending migration creates exists already (someone else's).

    A table an applied migration created is ours: a later one may replace it (usage_events became
    partitioned that way).
    """
    ours = {table for m in migrations if m not in pending for table in m.created_tables}
    clashes: list[str] = []
    for migration in pending:
        for table in migration.created_tables:
            if table in ours:
                continue
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
# on it; 20261127100000 moves them to usagemeter_private, revokes that grant and drops `private`.
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


def _apply_one(conn: psycopg.Connection[Any], migration: Migration) -> bool:
    """Apply and record one migration in one transaction; False when another migrator recorded it meanwhile."""
    try:
        with conn.transaction():
            conn.execute(queries["lock_migrations"])
            recorded = conn.execute(queries["migration_recorded"], {"version": migration.version}).fetchone()
            if recorded is not None and recorded[0]:
                return False
            conn.execute(migration.text)  # trusted: a file shipped with usagemeter
            conn.execute(
                queries["record_migration"],
                {"version": migration.version, "name": migration.name, "statements": [migration.text]},
            )
            return True
    except psycopg.Error as failure:
        diag = failure.diag
        detail = "; ".join(part for part in (diag.message_primary, diag.message_detail, diag.message_hint) if part)
        raise errors.MigrationError(
            f"{migration.file_name} failed and was rolled back: {detail or failure}"
        ) from failure
