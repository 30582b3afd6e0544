-- Supabase platform shim: what a Supabase database already provides and our migrations rely on.
--
-- Applied by `usagemeter db migrate` before the migrations, in one transaction. Every object is
-- created ONLY WHERE ABSENT, so on a real Supabase database (or a second run) this changes nothing:
-- existing roles keep their attributes, existing auth functions keep their definitions.
-- It is deliberately not a file in supabase/migrations/: on Supabase these objects belong to the platform.

-- Roles (cluster-wide). Concurrent creation from two databases of one cluster is tolerated.
do $shim$
declare
  wanted record;
begin
  for wanted in
    select * from (values
      ('anon', 'nologin noinherit'),
      ('authenticated', 'nologin noinherit'),
      ('service_role', 'nologin noinherit bypassrls'),
      ('authenticator', 'login noinherit')
    ) as r(name, options)
  loop
    if not exists (select 1 from pg_catalog.pg_roles where rolname = wanted.name) then
      begin
        execute format('create role %I %s', wanted.name, wanted.options);
        if wanted.name = 'anon' then
          execute 'alter role anon set statement_timeout = ''3s''';
        elsif wanted.name = 'authenticated' then
          execute 'alter role authenticated set statement_timeout = ''8s''';
        elsif wanted.name = 'authenticator' then
          execute 'grant anon, authenticated, service_role to authenticator';
        end if;
      exception when duplicate_object or unique_violation then
        null;  -- another migrator created it first
      end;
    end if;
  end loop;
end
$shim$;

-- The login the API layer and usagemeter's pools connect as: LOGIN, as on Supabase. Shims of earlier
-- usagemeter versions created it NOLOGIN; on Supabase it can always log in, so this changes nothing there.
do $shim$
begin
  if exists (select 1 from pg_catalog.pg_roles where rolname = 'authenticator' and not rolcanlogin) then
    alter role authenticator login;
  end if;
end
$shim$;

-- The auth schema and the one table our foreign keys point at.
do $shim$
begin
  if to_regnamespace('auth') is null then
    create schema auth;
    grant usage on schema auth to anon, authenticated, service_role;
  end if;

  if to_regclass('auth.users') is null then
    create table auth.users (
      id uuid primary key,
      email text,
      created_at timestamptz not null default now()
    );
    comment on table auth.users is
      'usagemeter shim of Supabase auth.users: only the columns usagemeter reads (id, email).';
  end if;
end
$shim$;

-- auth.uid(), auth.role(), auth.email(), auth.jwt(): the same definitions Supabase ships,
-- reading the per-transaction settings its API layer (PostgREST) sets for each request.
do $shim$
begin
  if to_regprocedure('auth.uid()') is null then
    create function auth.uid() returns uuid
    language sql stable
    as $fn$
      select coalesce(
        nullif(current_setting('request.jwt.claim.sub', true), ''),
        (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')
      )::uuid
    $fn$;
    comment on function auth.uid() is 'The caller''s user id: the sub claim of the request JWT.';
    grant execute on function auth.uid() to anon, authenticated, service_role;
  end if;

  if to_regprocedure('auth.role()') is null then
    create function auth.role() returns text
    language sql stable
    as $fn$
      select coalesce(
        nullif(current_setting('request.jwt.claim.role', true), ''),
        (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'role')
      )::text
    $fn$;
    comment on function auth.role() is 'The role claim of the request JWT.';
    grant execute on function auth.role() to anon, authenticated, service_role;
  end if;

  if to_regprocedure('auth.email()') is null then
    create function auth.email() returns text
    language sql stable
    as $fn$
      select coalesce(
        nullif(current_setting('request.jwt.claim.email', true), ''),
        (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'email')
      )::text
    $fn$;
    comment on function auth.email() is 'The email claim of the request JWT.';
    grant execute on function auth.email() to anon, authenticated, service_role;
  end if;

  if to_regprocedure('auth.jwt()') is null then
    create function auth.jwt() returns jsonb
    language sql stable
    as $fn$
      select coalesce(
        nullif(current_setting('request.jwt.claim', true), ''),
        nullif(current_setting('request.jwt.claims', true), '')
      )::jsonb
    $fn$;
    comment on function auth.jwt() is 'All claims of the request JWT as jsonb.';
    grant execute on function auth.jwt() to anon, authenticated, service_role;
  end if;
end
$shim$;
