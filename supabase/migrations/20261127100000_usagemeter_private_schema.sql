-- usagemeter's internal functions move to a schema of its own, usagemeter_private, and usagemeter
-- stops granting anything on the schema `private`.
--
-- Why: the first migration used `create schema if not exists private` and granted USAGE on it to
-- authenticated and service_role. On a database whose project already had a `private` schema, that
-- grant made every function there with the default PUBLIC execute right callable by every signed-in
-- user. A schema usagemeter creates itself cannot hold anyone else's objects.
--
-- How: ALTER FUNCTION ... SET SCHEMA keeps each function's oid, so the RLS policies and triggers
-- that call it follow it unchanged (same names, same expressions; pg_policies now shows
-- usagemeter_private.*). Moved: the three policy helpers, and every function in `private` that a
-- trigger or policy on a usagemeter table calls. Then the USAGE granted on `private` is revoked, and
-- `private` is dropped if nothing is left in it. authenticated needs no USAGE on usagemeter_private:
-- a policy calls its function by oid, and only EXECUTE on the function is checked.

do $guard$
begin
  if to_regnamespace('usagemeter_private') is not null then
    raise exception 'usagemeter: schema usagemeter_private already exists and was not created by usagemeter'
      using hint = 'Rename or drop it, then run the migrations again; nothing was changed.';
  end if;
end
$guard$;

create schema usagemeter_private;
comment on schema usagemeter_private is
  'usagemeter internals, created by usagemeter and holding nothing else: security-definer helpers its RLS '
  'policies call and its trigger functions. The API does not expose it; no role but its owner has USAGE on it.';
revoke all on schema usagemeter_private from public;

do $move$
declare
  ours regprocedure;
begin
  if to_regnamespace('private') is null then
    return;
  end if;
  for ours in
    select p.oid::regprocedure
    from pg_catalog.pg_proc as p
    where p.pronamespace = 'private'::regnamespace
      and (
        p.proname in (
          'tenant_ids_of_current_user_v1', 'managed_tenant_ids_of_current_user_v1',
          'owned_tenant_ids_of_current_user_v1', 'apply_usage_rollup_delta_v1'
        )
        -- functions our tables' triggers run, or our tables' policies call
        or p.oid in (
          select t.tgfoid from pg_catalog.pg_trigger as t
          join pg_catalog.pg_class as c on c.oid = t.tgrelid
          where c.relnamespace = 'public'::regnamespace
            and (c.relname in ('tenants', 'tenant_members', 'usage_events') or c.relname like 'usage\_rollup%')
          union
          select d.refobjid from pg_catalog.pg_depend as d
          join pg_catalog.pg_policy as pol on d.classid = 'pg_catalog.pg_policy'::regclass and d.objid = pol.oid
          join pg_catalog.pg_class as c on c.oid = pol.polrelid
          where d.refclassid = 'pg_catalog.pg_proc'::regclass
            and c.relnamespace = 'public'::regnamespace
            and (c.relname in ('tenants', 'tenant_members', 'usage_events') or c.relname like 'usage\_rollup%')
        )
      )
    order by 1::text
  loop
    execute format('alter function %s set schema usagemeter_private', ours);
  end loop;

  revoke usage on schema private from authenticated, service_role;

  begin
    drop schema private;  -- restrict: only when nothing is left in it
  exception when dependent_objects_still_exist or insufficient_privilege then
    raise notice 'usagemeter: schema private holds objects that are not usagemeter''s (or is not ours to drop), so it stays; '
      'usagemeter revoked the USAGE on it that it had granted to authenticated and service_role. '
      'Grant it again yourself if your project relies on it.';
  end;
end
$move$;
