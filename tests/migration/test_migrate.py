"""The migration runner on real databases: empty, already migrated, Supabase-shaped, changed, racing."""

from __future__ import annotations

import threading
from typing import Any

import psycopg
import pytest

from usagemeter import db, errors
from usagemeter.ops import migrate

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
    assert all(migrate.same_sql(statements, m.text) for (_, _, statements), m in zip(history, shipped, strict=True))


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
    applied_counts = sorted(len(r) for r in results if isinstance(r, list))
    assert applied_counts == [0, 0, len(migrate.discover_migrations())]
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
        with pytest.raises(errors.MigrationChanged, match=f"{shipped[1].file_name}.*Nothing was applied"):
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
        assert conn.execute("select count(*) from supabase_migrations.schema_migrations").fetchone() == (0,)


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
