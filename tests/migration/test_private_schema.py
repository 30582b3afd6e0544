"""usagemeter's helpers live in usagemeter_private; nothing is granted on a `private` schema of the project's."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from psycopg import errors as pgerrors

from tests import factories
from usagemeter import db, errors
from usagemeter.db import Identity, acting_as
from usagemeter.ops import migrate

# A project's own schema named private, with a function that keeps the default PUBLIC execute right.
PROJECT_PRIVATE_SCHEMA = """
create schema private;
create function private.project_secret() returns text language sql as $$ select 'project secret' $$;
"""

BEFORE_THE_FIX = "20261127100000"


def apply_as_the_supabase_cli(conn: psycopg.Connection[Any], migrations: list[migrate.Migration]) -> None:
    """Apply files the way `supabase db push` does: run each, record it; no usagemeter pre-flight checks."""
    migrate.apply_platform_shim(conn)
    conn.execute(migrate.queries["create_migration_history"])
    for migration in migrations:
        with conn.transaction():
            conn.execute(migration.text)
            conn.execute(
                migrate.queries["record_migration"],
                {"version": migration.version, "name": migration.name, "statements": [migration.text]},
            )


def signed_in_user_can_call_the_project_secret(conn: psycopg.Connection[Any]) -> bool:
    user = factories.add_user(conn)
    try:
        with acting_as(conn, Identity.user(user)):
            conn.execute("select private.project_secret()")
    except pgerrors.InsufficientPrivilege:
        return False
    return True


def test_a_fresh_install_over_a_foreign_private_schema_is_refused_before_any_change(empty_database: str) -> None:
    with db.connect(empty_database, autocommit=True) as conn:
        conn.execute(PROJECT_PRIVATE_SCHEMA)
        with pytest.raises(errors.MigrationError, match="schema private exists already") as raised:
            migrate.migrate(conn)
        assert "rename it back" in str(raised.value)
        assert "Nothing was changed" in str(raised.value)
        assert conn.execute("select to_regclass('public.tenants')").fetchone() == (None,)
        assert conn.execute("select to_regclass('supabase_migrations.schema_migrations')").fetchone() == (None,)
        assert conn.execute("select to_regnamespace('auth')").fetchone() == (None,)  # not even the shim ran
        granted = "select has_schema_privilege('authenticated', 'private', 'usage')"
        assert conn.execute(granted).fetchone() == (False,)


def test_a_database_migrated_over_a_foreign_private_schema_stops_granting_it(empty_database: str) -> None:
    shipped = migrate.discover_migrations()
    earlier = [m for m in shipped if m.version < BEFORE_THE_FIX]
    with db.connect(empty_database, autocommit=True) as conn:
        conn.execute(PROJECT_PRIVATE_SCHEMA)
        apply_as_the_supabase_cli(conn, earlier)
        assert signed_in_user_can_call_the_project_secret(conn), "the grant this migration revokes"

        applied = migrate.migrate(conn)

        assert [m.version for m in applied] == [m.version for m in shipped if m.version >= BEFORE_THE_FIX]
        assert not signed_in_user_can_call_the_project_secret(conn)
        left_in_private = conn.execute(
            "select array_agg(proname order by proname) from pg_proc where pronamespace = 'private'::regnamespace"
        ).fetchone()
        assert left_in_private == (["project_secret"],), "only the project's own function stays in private"
        # The policies still work, through the moved helpers.
        tenant, alice = factories.add_tenant(conn), factories.add_user(conn)
        factories.add_member(conn, tenant, alice)
        factories.add_event(conn, tenant_id=tenant, user_id=alice)
        factories.add_event(conn, tenant_id=factories.add_tenant(conn), user_id=factories.add_user(conn))
        with acting_as(conn, Identity.user(alice)):
            seen = conn.execute("select tenant_id from public.usage_events").fetchall()
            tenants = conn.execute("select id from public.tenants").fetchall()
        assert seen == [(tenant,)]
        assert tenants == [(tenant,)]


def test_helpers_live_in_a_schema_of_their_own_that_no_api_role_may_use(owner: psycopg.Connection[Any]) -> None:
    assert owner.execute("select to_regnamespace('private')").fetchone() == (None,)
    policy_functions = owner.execute(
        "select distinct p.pronamespace::regnamespace::text from pg_depend d"
        " join pg_policy pol on d.classid = 'pg_policy'::regclass and d.objid = pol.oid"
        " join pg_proc p on d.refclassid = 'pg_proc'::regclass and d.refobjid = p.oid"
        " where p.pronamespace <> 'auth'::regnamespace"
    ).fetchall()
    assert policy_functions == [("usagemeter_private",)]
    usage = owner.execute(
        "select r, has_schema_privilege(r, 'usagemeter_private', 'usage')"
        " from unnest(array['anon', 'authenticated', 'service_role']) as r order by r"
    ).fetchall()
    assert usage == [("anon", False), ("authenticated", False), ("service_role", False)]
    callable_by_anon = owner.execute(
        "select coalesce(bool_or(has_function_privilege('anon', p.oid, 'execute')), false) from pg_proc p"
        " where p.pronamespace = 'usagemeter_private'::regnamespace"
    ).fetchone()
    assert callable_by_anon == (False,)
