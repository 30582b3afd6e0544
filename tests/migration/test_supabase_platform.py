"""The platform tier: our migrations on a database built from Supabase's own SQL, as `postgres` (not superuser).

Runs only with USAGEMETER_TEST_PLATFORM=supabase (`.ci/run` does, once), together with the RLS test
modules, whose `owner` connection then logs in as `authenticator` (see tests/conftest.py).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import errors as pgerrors
from psycopg import rows
from psycopg import sql as pgsql

from tests import factories, supabase_platform
from tests.migration.test_supabase_compat import assert_privileges_are_exactly_the_intended_ones
from usagemeter import db
from usagemeter.db import Identity, acting_as
from usagemeter.ops import migrate

pytestmark = pytest.mark.skipif(
    not supabase_platform.platform_mode(),
    reason=f"the Supabase platform tier runs with {supabase_platform.PLATFORM_MODE_ENV}=supabase (.ci/run runs it)",
)

# What belongs to Supabase and must be exactly as its SQL left it after our migrations.
SUPABASE_OBJECTS = """
select 'role', concat_ws(':', rolname, rolsuper, rolinherit, rolcanlogin, rolbypassrls, rolcreaterole,
  array_to_string(rolconfig, ',')) from pg_roles
union all
select 'member', roleid::regrole::text || '>' || member::regrole::text from pg_auth_members
union all
select 'function', p.oid::regprocedure::text || ':' || md5(pg_get_functiondef(p.oid)) || ':'
  || coalesce(p.proacl::text, '') || ':' || p.proowner::regrole::text
  from pg_proc p join pg_namespace n on n.oid = p.pronamespace
  where n.nspname in ('auth', 'extensions', 'storage', 'realtime', 'graphql_public')
union all
select 'relation', c.oid::regclass::text || ':' || c.relowner::regrole::text || ':' || coalesce(c.relacl::text, '')
  || ':' || c.relrowsecurity
  from pg_class c join pg_namespace n on n.oid = c.relnamespace
  where n.nspname in ('auth', 'extensions', 'storage', 'realtime')
union all
select 'column', attrelid::regclass::text || '.' || attname || ':' || format_type(atttypid, atttypmod)
  from pg_attribute where attrelid = 'auth.users'::regclass and attnum > 0 and not attisdropped
union all
select 'schema', nspname || ':' || nspowner::regrole::text || ':' || coalesce(nspacl::text, '') from pg_namespace
  where nspname not in ('public', 'private', 'usagemeter_private', 'supabase_migrations')
union all
select 'default acl', defaclrole::regrole::text || ':' || coalesce(defaclnamespace::regnamespace::text, '')
  || ':' || defaclobjtype::text || ':' || defaclacl::text from pg_default_acl
union all
select 'event trigger', concat_ws(':', evtname, evtenabled) from pg_event_trigger
order by 1, 2
"""


@pytest.fixture
def unmigrated_supabase_database(server_url: str) -> Iterator[str]:
    """A fresh copy of the Supabase-built database before any of our migrations."""
    name = f"um_sp_{uuid.uuid4().hex[:12]}"
    with db.connect(server_url, autocommit=True) as conn:
        conn.execute(
            pgsql.SQL("create database {} template {}").format(
                pgsql.Identifier(name), pgsql.Identifier(supabase_platform.PRISTINE_DATABASE)
            )
        )
    try:
        yield db.with_database(server_url, name)
    finally:
        with db.connect(server_url, autocommit=True) as conn:
            conn.execute(pgsql.SQL("drop database {} with (force)").format(pgsql.Identifier(name)))


def test_migrations_apply_as_postgres_and_leave_every_supabase_object_as_it_was(
    unmigrated_supabase_database: str,
) -> None:
    with db.connect(unmigrated_supabase_database, autocommit=True) as conn:
        who = conn.execute("select current_user, rolsuper from pg_roles where rolname = current_user").fetchone()
        assert who == ("postgres", False), "Supabase's postgres is not a superuser"
        before = conn.execute(SUPABASE_OBJECTS).fetchall()
        applied = migrate.migrate(conn)
        assert [m.version for m in applied] == [m.version for m in migrate.discover_migrations()]
        after = conn.execute(SUPABASE_OBJECTS).fetchall()
        assert sorted(set(after) - set(before)) == [], "created or changed Supabase objects"
        assert sorted(set(before) - set(after)) == [], "removed or changed Supabase objects"
        history = conn.execute("select version, name from supabase_migrations.schema_migrations order by 1").fetchall()
        assert history == [(m.version, m.name) for m in applied]
        assert migrate.migrate(conn) == []


def test_grants_are_exactly_the_intended_ones_despite_supabase_default_privileges(
    owner: psycopg.Connection[Any],
) -> None:
    assert owner.execute("select count(*) from pg_default_acl").fetchone() != (0,), "Supabase's default grants"
    assert_privileges_are_exactly_the_intended_ones(owner)


def test_requests_come_from_authenticator_which_has_nothing_without_a_role(owner: psycopg.Connection[Any]) -> None:
    alice = factories.add_user(owner)
    tenant = factories.add_tenant(owner)
    factories.add_member(owner, tenant, alice)
    factories.add_event(owner, tenant_id=tenant, user_id=alice)
    with acting_as(owner, Identity.user(alice)):
        seen = owner.execute("select session_user, current_user, auth.uid(), count(*) from public.usage_events")
        assert seen.fetchone() == ("authenticator", "authenticated", alice, 1)
    with owner.transaction(force_rollback=True):
        owner.execute("set local role none")  # authenticator itself: NOINHERIT, so it can do nothing
        with pytest.raises(pgerrors.InsufficientPrivilege):
            owner.execute("select count(*) from public.usage_events")
    with pytest.raises(pgerrors.InsufficientPrivilege), owner.transaction():
        owner.execute("select set_config('role', 'postgres', true)")  # switching is limited to the API roles


def test_supabase_database_linter_finds_nothing_in_our_schemas(repo_root: Path, owner: psycopg.Connection[Any]) -> None:
    """Supabase's own advisor queries (lints.sql): no warning or error about public or private."""
    setup, _, lints = (supabase_platform.platform_sql_dir(repo_root) / "lints.sql").read_text().partition(";")
    with owner.transaction(force_rollback=True), owner.cursor(row_factory=rows.dict_row) as cursor:
        cursor.execute(setup)
        found = cursor.execute(lints).fetchall()
    assert found, "the linter ran (it reports INFO lints, e.g. unused indexes on a fresh database)"
    ours = [
        f"{lint['name']}: {lint['detail']}"
        for lint in found
        if lint["level"] in ("WARN", "ERROR")
        and (lint["metadata"] or {}).get("schema") in ("public", "private", "usagemeter_private")
    ]
    assert ours == []
