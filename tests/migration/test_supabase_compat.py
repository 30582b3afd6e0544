"""Migrations drop into a Supabase-shaped database unchanged, and into a bare cluster with the shim."""

from __future__ import annotations

import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.servers import server_binaries
from usagemeter import db
from usagemeter.db import Identity, acting_as
from usagemeter.ops import embedded, migrate

# What a Supabase project already holds before our migrations: its own auth.users (more columns),
# its own auth functions, the "grant all to anon/authenticated" default privileges, and a
# migration history with another app's row and a column newer CLIs add.
SUPABASE_SHAPE = """
do $$ begin
  if not exists (select from pg_roles where rolname = 'anon') then create role anon nologin noinherit; end if;
  if not exists (select from pg_roles where rolname = 'authenticated') then
    create role authenticated nologin noinherit;
  end if;
  if not exists (select from pg_roles where rolname = 'service_role') then
    create role service_role nologin noinherit bypassrls;
  end if;
exception when duplicate_object or unique_violation then null;
end $$;
create schema auth;
grant usage on schema auth to anon, authenticated, service_role;
create table auth.users (
  instance_id uuid, id uuid primary key, aud varchar(255), role varchar(255), email varchar(255),
  encrypted_password varchar(255), raw_app_meta_data jsonb, raw_user_meta_data jsonb,
  created_at timestamptz, updated_at timestamptz, phone text, is_anonymous boolean not null default false
);
create function auth.uid() returns uuid language sql stable as $$
  select
  coalesce(
    nullif(current_setting('request.jwt.claim.sub', true), ''),
    (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')
  )::uuid
$$;
create function auth.role() returns text language sql stable as $$
  select coalesce(nullif(current_setting('request.jwt.claim.role', true), ''),
    (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'role'))::text
$$;
create function auth.email() returns text language sql stable as $$
  select coalesce(nullif(current_setting('request.jwt.claim.email', true), ''),
    (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'email'))::text
$$;
create function auth.jwt() returns jsonb language sql stable as $$
  select coalesce(nullif(current_setting('request.jwt.claim', true), ''),
    nullif(current_setting('request.jwt.claims', true), ''))::jsonb
$$;
alter default privileges in schema public grant all on tables to anon, authenticated, service_role;
alter default privileges in schema public grant all on functions to anon, authenticated, service_role;
alter default privileges in schema public grant all on sequences to anon, authenticated, service_role;
create schema supabase_migrations;
create table supabase_migrations.schema_migrations (
  version text not null primary key, statements text[], name text, created_by text, idempotency_key text
);
insert into supabase_migrations.schema_migrations (version, statements, name)
  values ('20240101000000', array['create table public.app_things (id int)'], 'app_init');
create table public.app_things (id int);
"""

AUTH_STATE = """
select p.oid::regprocedure::text, md5(pg_get_functiondef(p.oid))
from pg_proc p where p.pronamespace = 'auth'::regnamespace
union all
select 'auth.users.' || attname, format_type(atttypid, atttypmod)
from pg_attribute where attrelid = 'auth.users'::regclass and attnum > 0
order by 1
"""

PRIVILEGE_MATRIX = """
select r.role, t.tbl, p.priv,
  case when p.priv in ('SELECT', 'INSERT', 'UPDATE', 'REFERENCES')
    then has_any_column_privilege(r.role, t.tbl, p.priv)  -- column grants count too
    else has_table_privilege(r.role, t.tbl, p.priv) end
from unnest(array['anon', 'authenticated', 'service_role']) as r(role)
cross join unnest(array['public.usage_events', 'public.tenants', 'public.tenant_members',
  'public.usage_rollup_hourly', 'public.usage_rollup_daily', 'public.usage_rollup_tenant_daily',
  'public.usage_rollup_deltas']) as t(tbl)
cross join unnest(array['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'REFERENCES', 'TRIGGER']) as p(priv)
order by 1, 2, 3
"""

ALLOWED: dict[tuple[str, str], set[str]] = {
    ("authenticated", "public.usage_events"): {"SELECT", "INSERT"},
    ("authenticated", "public.tenants"): {"SELECT", "UPDATE"},
    ("authenticated", "public.tenant_members"): {"SELECT", "INSERT", "UPDATE", "DELETE"},
    ("service_role", "public.usage_events"): {"SELECT", "INSERT", "UPDATE", "DELETE"},
    ("service_role", "public.tenants"): {"SELECT", "INSERT", "UPDATE", "DELETE"},
    ("service_role", "public.tenant_members"): {"SELECT", "INSERT", "UPDATE", "DELETE"},
    **{
        (role, f"public.usage_rollup_{level}"): {"SELECT"}
        for role in ("authenticated", "service_role")
        for level in ("hourly", "daily", "tenant_daily", "deltas")
    },
}


def assert_privileges_are_exactly_the_intended_ones(conn: psycopg.Connection[Any]) -> None:
    for role, table, privilege, granted in conn.execute(PRIVILEGE_MATRIX).fetchall():
        expected = privilege in ALLOWED.get((role, table), set())
        assert granted is expected, f"{role} {privilege} on {table}: granted={granted}, expected {expected}"


def test_supabase_shaped_database_keeps_its_auth_and_history_and_gets_safe_grants(
    empty_database: str,
) -> None:
    with db.connect(empty_database, autocommit=True) as conn:
        conn.execute(SUPABASE_SHAPE)
        auth_before = conn.execute(AUTH_STATE).fetchall()
        applied = migrate.migrate(conn)
        assert len(applied) == len(migrate.discover_migrations())
        assert conn.execute(AUTH_STATE).fetchall() == auth_before, "the shim must not touch Supabase's auth objects"
        history = conn.execute(
            "select version, name, created_by from supabase_migrations.schema_migrations order by version"
        ).fetchall()
        assert history[0] == ("20240101000000", "app_init", None)
        assert [row[0] for row in history[1:]] == [m.version for m in applied]
        assert_privileges_are_exactly_the_intended_ones(conn)
        private_fn_executable_by_anon = conn.execute(
            "select bool_or(has_function_privilege('anon', p.oid, 'execute')) from pg_proc p"
            " where p.pronamespace = 'usagemeter_private'::regnamespace"
        ).fetchone()
        assert private_fn_executable_by_anon == (False,)
        assert migrate.migrate(conn) == []


def test_grants_on_plain_postgres_are_exactly_the_intended_ones(owner: psycopg.Connection[Any]) -> None:
    assert_privileges_are_exactly_the_intended_ones(owner)


@pytest.mark.parametrize("bin_dir", server_binaries())
def test_bare_cluster_gets_roles_auth_and_schema(bin_dir: Path | None) -> None:
    # Outside pytest's basetemp: a concurrent pytest run resets its permissions, which the server user needs.
    data_dir = Path(tempfile.mkdtemp(prefix="um_bare_")) / "pgdata"
    try:
        with (
            embedded.EmbeddedPostgres(data_dir, bin_dir=bin_dir) as server,
            db.connect(server.url(), autocommit=True) as conn,
        ):
            assert conn.execute("select count(*) from pg_roles where rolname = 'service_role'").fetchone() == (0,)
            assert len(migrate.migrate(conn)) == len(migrate.discover_migrations())
            roles = conn.execute(
                "select rolname, rolcanlogin, rolinherit, rolbypassrls from pg_roles"
                " where rolname in ('anon', 'authenticated', 'service_role', 'authenticator') order by 1"
            ).fetchall()
            assert roles == [
                ("anon", False, False, False),
                ("authenticated", False, False, False),
                ("authenticator", True, False, False),
                ("service_role", False, False, True),
            ]
            granted = conn.execute(
                "select array_agg(r.rolname order by r.rolname) from pg_auth_members m"
                " join pg_roles r on r.oid = m.roleid join pg_roles a on a.oid = m.member"
                " where a.rolname = 'authenticator'"
            ).fetchone()
            assert granted == (["anon", "authenticated", "service_role"],)
            user = uuid.uuid4()
            conn.execute("insert into auth.users (id) values (%s)", (user,))
            with acting_as(conn, Identity.user(user, email="a@example.test")):
                who = conn.execute("select auth.uid(), auth.role(), auth.email(), auth.jwt() ->> 'aud'").fetchone()
            assert who == (user, "authenticated", "a@example.test", "authenticated")
            assert migrate.migrate(conn) == []
    finally:
        shutil.rmtree(data_dir.parent, ignore_errors=True)


def test_an_authenticator_left_nologin_by_an_earlier_shim_can_log_in_after_migrating(tmp_path: Path) -> None:
    data_dir = tmp_path / "earlier"
    try:
        with (
            embedded.EmbeddedPostgres(data_dir) as server,
            db.connect(server.url(), autocommit=True) as conn,
        ):
            conn.execute("create role authenticator nologin noinherit")
            migrate.migrate(conn)
            row = conn.execute("select rolcanlogin, rolinherit from pg_roles where rolname = 'authenticator'")
            assert row.fetchone() == (True, False)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
