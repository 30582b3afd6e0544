"""The migration runner on real databases: empty, already migrated, Supabase-shaped, changed, racing."""

from __future__ import annotations

import re
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import conninfo

from tests.transaction_pooler import transaction_pooler
from usagemeter import db, errors
from usagemeter.ops import embedded, migrate

# A compact fingerprint of everything the migrations define: a second run must not move it.
FINGERPRINT = """
select 'rel', c.relname || ':' || c.relkind::text || ':' || coalesce(c.relacl::text, '') || ':' || c.relrowsecurity
  from pg_class c join pg_namespace n on n.oid = c.relnamespace
  where n.nspname in ('public', 'usagemeter_private', 'auth', 'supabase_migrations')
union all
select 'con', conname || ':' || pg_get_constraintdef(oid) from pg_constraint
  where connamespace in ('public'::regnamespace, 'auth'::regnamespace)
union all
select 'pol', polname || ':' || pg_get_expr(polqual, polrelid, true) || ':'
  || coalesce(pg_get_expr(polwithcheck, polrelid, true), '') from pg_policy
union all
select 'fn', p.oid::regprocedure::text || ':' || md5(pg_get_functiondef(p.oid)) || ':' || coalesce(p.proacl::text, '')
  from pg_proc p where p.pronamespace in ('usagemeter_private'::regnamespace, 'auth'::regnamespace)
union all
select 'hist', version || ':' || name from supabase_migrations.schema_migrations
order by 1, 2
"""


def fingerprint(conn: psycopg.Connection[Any]) -> list[tuple[str, str]]:
    return [(kind, text) for kind, text in conn.execute(FINGERPRINT).fetchall()]


def test_migrating_an_empty_database_applies_and_records_every_migration(empty_database: str) -> None:
    with db.connect(empty_database, autocommit=True) as conn:
        applied = migrate.migrate(conn)
        history = conn.execute(
            "select version, name, statements from supabase_migrations.schema_migrations order by version"
        ).fetchall()
    shipped = migrate.discover_migrations()
    assert [m.version for m in applied] == [m.version for m in shipped]
    assert [(v, n) for v, n, _ in history] == [(m.version, m.name) for m in shipped]
    assert all(statements == [m.text] for (_, _, statements), m in zip(history, shipped, strict=True))


def test_second_run_is_a_no_op(database_url: str) -> None:
    with db.connect(database_url, autocommit=True) as conn:
        before = fingerprint(conn)
        assert migrate.migrate(conn) == []
        assert fingerprint(conn) == before
        assert {s.status for s in migrate.states(conn, migrate.discover_migrations())} == {"applied"}


def test_concurrent_migrators_are_serialised(empty_database: str) -> None:
    results: list[list[migrate.Migration] | BaseException] = []
    barrier = threading.Barrier(3)

    def run() -> None:
        try:
            with db.connect(empty_database, autocommit=True) as conn:
                barrier.wait()
                results.append(migrate.migrate(conn))
        except BaseException as failure:
            results.append(failure)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert all(isinstance(r, list) for r in results), results
    applied_versions = sorted(m.version for r in results if isinstance(r, list) for m in r)
    assert applied_versions == [m.version for m in migrate.discover_migrations()], "each applied exactly once"
    with db.connect(empty_database) as conn:
        row = conn.execute("select count(*) from supabase_migrations.schema_migrations").fetchone()
    assert row == (len(migrate.discover_migrations()),)


def test_a_changed_applied_file_is_refused_and_nothing_is_applied(database_url: str) -> None:
    shipped = migrate.discover_migrations()
    edited = migrate.Migration(
        shipped[1].version, shipped[1].name, shipped[1].text + "\ncreate table public.sneaky (x int);"
    )
    extra = migrate.Migration("29991231000000", "later", "create table public.later (x int);")
    with db.connect(database_url, autocommit=True) as conn:
        with pytest.raises(errors.MigrationChanged, match=f"{shipped[1].file_name}.*Nothing was changed"):
            migrate.migrate(conn, [shipped[0], edited, extra])
        assert conn.execute("select to_regclass('public.later'), to_regclass('public.sneaky')").fetchone() == (
            None,
            None,
        )
        assert [s.status for s in migrate.states(conn, [shipped[0], edited])] == ["applied", "changed"]


def test_a_foreign_usage_events_table_is_refused_before_any_change(empty_database: str) -> None:
    with db.connect(empty_database, autocommit=True) as conn:
        conn.execute("create table public.usage_events (id bigint primary key, what text)")
        conn.execute("insert into public.usage_events values (1, 'kept')")
        with pytest.raises(errors.MigrationError, match=r"public\.usage_events \(id bigint, what text\)") as raised:
            migrate.migrate(conn)
        assert "Nothing was changed" in str(raised.value)
        assert conn.execute("select * from public.usage_events").fetchall() == [(1, "kept")]
        assert conn.execute("select to_regclass('public.tenants')").fetchone() == (None,)
        assert conn.execute("select to_regnamespace('supabase_migrations')").fetchone() == (None,)


def test_a_failing_migration_rolls_back_alone_and_a_rerun_resumes(empty_database: str) -> None:
    shipped = migrate.discover_migrations()
    broken = migrate.Migration("29991231000000", "broken", "create table public.half (x int);\nselect 1/0;")
    with db.connect(empty_database, autocommit=True) as conn:
        with pytest.raises(
            errors.MigrationError, match=r"29991231000000_broken\.sql failed and was rolled back: division by zero"
        ):
            migrate.migrate(conn, [*shipped, broken])
        assert conn.execute("select to_regclass('public.half')").fetchone() == (None,)
        statuses = [s.status for s in migrate.states(conn, [*shipped, broken])]
        assert statuses == ["applied"] * len(shipped) + ["pending"]
        fixed = migrate.Migration(broken.version, broken.name, "create table public.half (x int);")
        assert migrate.migrate(conn, [*shipped, fixed]) == [fixed]


# -- a history table from a Supabase CLI before mid-2023 ------------------------------------------

OLD_CLI_HISTORIES = {
    "version only": "create schema supabase_migrations;"
    " create table supabase_migrations.schema_migrations (version text not null primary key);"
    " insert into supabase_migrations.schema_migrations (version) values ('20230101000000')",
    "version and statements": "create schema supabase_migrations;"
    " create table supabase_migrations.schema_migrations (version text not null primary key, statements text[]);"
    " insert into supabase_migrations.schema_migrations (version, statements)"
    " values ('20230101000000', array['create table public.app_things (id int)'])",
}


@pytest.mark.parametrize("history", list(OLD_CLI_HISTORIES), ids=list(OLD_CLI_HISTORIES))
def test_an_old_cli_history_table_is_completed_and_its_rows_kept(empty_database: str, history: str) -> None:
    with db.connect(empty_database, autocommit=True) as conn:
        conn.execute(OLD_CLI_HISTORIES[history])
        kept = conn.execute("select to_jsonb(h) from supabase_migrations.schema_migrations as h").fetchall()
        assert [m.status for m in migrate.states(conn, migrate.discover_migrations())] == ["pending"] * len(
            migrate.discover_migrations()
        )
        applied = migrate.migrate(conn)
        assert [m.version for m in applied] == [m.version for m in migrate.discover_migrations()]
        columns = conn.execute(
            "select attname from pg_attribute where attrelid = 'supabase_migrations.schema_migrations'::regclass"
            " and attnum > 0 and not attisdropped order by attnum"
        ).fetchall()
        assert [c[0] for c in columns] == ["version", "statements", "name"]
        old_row = conn.execute(
            "select version, statements, name from supabase_migrations.schema_migrations"
            " where version = '20230101000000'"
        ).fetchone()
        assert old_row is not None
        assert (old_row[0], old_row[1]) == (kept[0][0]["version"], kept[0][0].get("statements"))
        assert old_row[2] is None
        assert migrate.migrate(conn) == []


# -- refusals change nothing ------------------------------------------------------------------------

CATALOG_SNAPSHOT = """
select 'role', rolname from pg_roles
union all select 'schema', nspname from pg_namespace
union all select 'relation', oid::regclass::text from pg_class where relnamespace <> 'pg_toast'::regnamespace
union all select 'function', oid::regprocedure::text from pg_proc
union all select 'acl', nspname || ':' || coalesce(nspacl::text, '') from pg_namespace
order by 1, 2
"""


def test_a_refusal_on_a_bare_cluster_creates_no_role_schema_table_or_function() -> None:
    # Outside pytest's basetemp: a concurrent pytest run resets its permissions, which the server user needs.
    data_dir = Path(tempfile.mkdtemp(prefix="um_bare_")) / "pgdata"
    try:
        with (
            embedded.EmbeddedPostgres(data_dir) as server,
            db.connect(server.url(), autocommit=True) as conn,
        ):
            conn.execute("create table public.tenants (id int primary key, plan text)")
            before = conn.execute(CATALOG_SNAPSHOT).fetchall()
            with pytest.raises(
                errors.MigrationError, match=r"public\.tenants \(id integer, plan text\).*Nothing was changed"
            ):
                migrate.migrate(conn)
            after = conn.execute(CATALOG_SNAPSHOT).fetchall()
            assert sorted(set(after) - set(before)) == []
            assert sorted(set(before) - set(after)) == []
    finally:
        shutil.rmtree(data_dir.parent, ignore_errors=True)


# -- edits to applied files ----------------------------------------------------------------------------


def cli_statements(text: str) -> list[str]:
    """What the Supabase CLI records for a file (parser.SplitAndTrim): cut at each `;` outside quotes,
    dollar quotes and comments, each piece trimmed of whitespace and its `;`, empty pieces dropped."""
    pieces: list[str] = []
    start = i = 0
    while i < len(text):
        if text[i] in "'\"":
            end = i + 1
            while True:
                end = text.index(text[i], end)
                if text[end + 1 : end + 2] != text[i]:
                    break
                end += 2
            i = end + 1
        elif text.startswith("--", i):
            newline = text.find("\n", i)
            i = len(text) if newline < 0 else newline + 1
        elif text.startswith("/*", i):
            i = text.index("*/", i + 2) + 2
        elif (tag := re.match(r"\$\w*\$", text[i:])) is not None:
            i = text.index(tag.group(), i + len(tag.group())) + len(tag.group())
        elif text[i] == ";":
            pieces.append(text[start : i + 1])
            start = i = i + 1
        else:
            i += 1
    pieces.append(text[start:])
    return [trimmed for piece in pieces if (trimmed := piece.rstrip(";").strip())]


ACTION_CHECK = "action ~ '^[a-z0-9_-]+:"


def edited(migration: migrate.Migration, old: str, new: str) -> migrate.Migration:
    assert old in migration.text
    return migrate.Migration(migration.version, migration.name, migration.text.replace(old, new, 1))


@pytest.mark.parametrize("recorded_by", ["usagemeter", "supabase cli"])
def test_edits_to_applied_files_are_told_apart_exactly(database_url: str, recorded_by: str) -> None:
    shipped = migrate.discover_migrations()
    events = next(m for m in shipped if ACTION_CHECK in m.text)
    with db.connect(database_url, autocommit=True) as conn:
        if recorded_by == "supabase cli":
            for migration in shipped:
                assert len(cli_statements(migration.text)) > 1
                conn.execute(
                    "update supabase_migrations.schema_migrations set statements = %s where version = %s",
                    (cli_statements(migration.text), migration.version),
                )
        assert {s.status for s in migrate.states(conn, shipped)} == {"applied"}
        a_space_inside_a_regex_literal = edited(events, ACTION_CHECK, "action ~ '^[a-z0-9_ -]+:")
        a_comment_only = edited(events, "-- usage_events", "-- The usage_events")
        a_new_statement = migrate.Migration(events.version, events.name, events.text + "\ndrop table public.tenants;\n")
        for changed in (a_space_inside_a_regex_literal, a_comment_only, a_new_statement):
            assert [s.status for s in migrate.states(conn, [changed])] == ["changed"]
        with pytest.raises(errors.MigrationChanged, match=events.file_name):
            migrate.migrate(conn, [*shipped[: shipped.index(events)], a_space_inside_a_regex_literal])


# -- through a transaction-mode pooler (Supavisor on port 6543) ------------------------------------------

ADVISORY_LOCKS_HERE = """
select count(*) from pg_locks
where locktype = 'advisory' and database = (select oid from pg_database where datname = current_database())
"""


def test_migrating_through_a_transaction_mode_pooler_keeps_no_session_state(empty_database: str) -> None:
    if conninfo.conninfo_to_dict(empty_database).get("password"):
        pytest.skip("the test pooler speaks trust logins only; CI runs this on the PostgreSQL 15 server, which trusts")
    shipped = migrate.discover_migrations()
    # enough migrations that psycopg would prepare the repeated history queries (its threshold is 5)
    extra = [migrate.Migration(f"2999123100000{i}", f"extra_{i}", "select 1;\n") for i in range(6)]
    server_port = int(conninfo.conninfo_to_dict(empty_database).get("port") or 5432)
    with transaction_pooler(server_port) as pooler_port:
        pooled_url = conninfo.make_conninfo(empty_database, host="127.0.0.1", port=pooler_port, sslmode="disable")
        with db.connect(pooled_url, autocommit=True) as pooled, db.connect(empty_database) as direct:
            backends = {pooled.execute("select pg_backend_pid()").fetchone() for _ in range(3)}
            assert len(backends) == 3, "each transaction runs on another server connection"
            applied = migrate.migrate(pooled, [*shipped, *extra])
            assert [m.version for m in applied] == [m.version for m in [*shipped, *extra]]
            assert direct.execute(ADVISORY_LOCKS_HERE).fetchone() == (0,), "no lock left on a pooled connection"
            assert migrate.migrate(pooled, [*shipped, *extra]) == []
