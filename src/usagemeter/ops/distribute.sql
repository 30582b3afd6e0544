-- usagemeter db distribute: turns a migrated database on a Citus coordinator into the distributed layout.
-- Not a migration: it runs only where Citus is, after `usagemeter db migrate`, as the database owner
-- (a superuser on the coordinator), in one transaction. Its parameters are bound by psycopg; see
-- docs/distributed.md for the design and its trade-offs.
--
-- Owner key: usage_events and usagemeter_private.usage_event_keys get `owner_id uuid not null`,
-- coalesce(tenant_id, user_id) (a tenant's events: the tenant; Personal events: the user), checked by
-- a CHECK constraint and written by clients explicitly: Citus refuses a NULL, generated or
-- trigger-filled distribution column. Both are distributed by it, co-located.

-- distribute.py sets, before this script, for its transaction: writes go to the shards at once
-- (sequential mode); the triggers kept on usage_events are distributed with it (each fires on the shard
-- holding the row); replica mode (TRANSACTION_SETTINGS there).

do $$
begin
  if exists (select from pg_catalog.pg_dist_partition where logicalrelid = 'public.usage_events'::regclass) then
    raise exception 'usage_events is distributed already' using errcode = '55000';
  end if;
end
$$;

-- The owner key, filled in for existing rows and required from now on.
alter table public.usage_events add column owner_id uuid;
update public.usage_events set owner_id = coalesce(tenant_id, user_id);
alter table public.usage_events alter column owner_id set not null;
-- An INSERT that does not name owner_id (a Supabase client sending the seed's columns) gets this default,
-- which the coordinator evaluates before routing: the statement is refused saying what to send, where
-- Citus would say "cannot perform an INSERT without a partition column value". (A default cannot read
-- the row's other columns, and no trigger runs before routing, so the key cannot be filled in.)
create function usagemeter_private.owner_id_required_v1() returns uuid
language plpgsql volatile set search_path = '' as $fn$
begin
  raise exception 'usagemeter: usage_events.owner_id is required on a distributed ledger'
    using errcode = '23502', column = 'owner_id', table = 'usage_events',
          detail = 'The ledger is distributed by owner_id, which the coordinator must see in the INSERT itself.',
          hint = 'Send owner_id = coalesce(tenant_id, user_id): the tenant''s id, or the user''s on a Personal event.';
end
$fn$;
comment on function usagemeter_private.owner_id_required_v1() is
  'Default of usage_events.owner_id on a distributed ledger: refuses an INSERT that does not name the owner key, saying what to send.';
revoke all on function usagemeter_private.owner_id_required_v1() from public;
grant execute on function usagemeter_private.owner_id_required_v1() to anon, authenticated, service_role;
alter table public.usage_events alter column owner_id set default usagemeter_private.owner_id_required_v1();
alter table public.usage_events add constraint usage_events_owner_id_matches
  check (owner_id = coalesce(tenant_id, user_id));
comment on column public.usage_events.owner_id is
  'Distribution key on a Citus cluster: tenant_id, or user_id on Personal events. Clients send it explicitly (Citus routes on it before any trigger could fill it in); the CHECK keeps it equal to coalesce(tenant_id, user_id).';

alter table usagemeter_private.usage_event_keys add column owner_id uuid;
update usagemeter_private.usage_event_keys set owner_id = coalesce(tenant_id, user_id);
alter table usagemeter_private.usage_event_keys alter column owner_id set not null;
comment on column usagemeter_private.usage_event_keys.owner_id is
  'The event''s owner key (see usage_events.owner_id): keys are unique per owner, on the shard holding the owner''s events.';

-- Writers may send it (the columns they may write are granted one by one).
grant insert (owner_id) on public.usage_events to authenticated, service_role;

-- Unique keys must hold the distribution column. An id is unique per owner (it was unique across the
-- whole ledger); an idempotency key stays unique per (tenant, user), which owner_id adds nothing to.
alter table public.usage_events drop constraint usage_events_pkey;
alter table public.usage_events add constraint usage_events_pkey primary key (owner_id, id, created_at);
alter table usagemeter_private.usage_event_keys drop constraint usage_event_keys_pkey;
alter table usagemeter_private.usage_event_keys add constraint usage_event_keys_pkey primary key (owner_id, id);
drop index usagemeter_private.usage_event_keys_idempotency_key_idx;
create unique index usage_event_keys_idempotency_key_idx on usagemeter_private.usage_event_keys
  (owner_id, tenant_id, user_id, idempotency_key) nulls not distinct where idempotency_key is not null;
create index usage_events_owner_created_idx on public.usage_events (owner_id, created_at desc);

-- The keys trigger, written for shards: Citus plans a distributed statement that reads a transition
-- table on the coordinator, where the table is not; a loop of single-row statements routes each to
-- the owner's shard (the one the trigger runs on). Same rules as the single-node version.
create or replace function usagemeter_private.keep_usage_event_keys_v1() returns trigger
language plpgsql security definer set search_path = '' as $fn$
declare
  r record;
begin
  if tg_op = 'TRUNCATE' then
    truncate usagemeter_private.usage_event_keys;
    return null;
  end if;
  if tg_op in ('UPDATE', 'DELETE') then
    for r in select owner_id, id from removed_rows loop
      delete from usagemeter_private.usage_event_keys as k where k.owner_id = r.owner_id and k.id = r.id;
    end loop;
  end if;
  if tg_op = 'DELETE' then
    for r in select owner_id, id from removed_rows where correction_kind is null loop
      delete from public.usage_events as e where e.owner_id = r.owner_id and e.corrects_event_id = r.id;
    end loop;
  end if;
  if tg_op in ('INSERT', 'UPDATE') then
    for r in select owner_id, id, created_at, tenant_id, user_id, idempotency_key from added_rows loop
      insert into usagemeter_private.usage_event_keys (owner_id, id, created_at, tenant_id, user_id, idempotency_key)
      values (r.owner_id, r.id, r.created_at, r.tenant_id, r.user_id, r.idempotency_key);
    end loop;
  end if;
  return null;
end
$fn$;

-- The rollups' delta triggers and the budgets' triggers stay (distribute_rollups.sql and
-- distribute_budgets.sql rewrite their functions for shards); the fold-on-user-deletion trigger and the
-- tenant-deletion trigger go (foreign keys with on delete cascade take the tenant's part).
drop trigger usage_rollup_zz_forget_emptied_users_after_update on public.usage_events;
drop trigger usage_rollup_zz_forget_emptied_users_after_delete on public.usage_events;
drop trigger usage_rollups_forget_deleted_tenants on public.tenants;

-- Policies: Citus cannot create a policy holding a subquery on a distributed (or reference) table, nor
-- on the local tables it adds to its metadata because they refer to a reference table (the budget
-- counters and alerts), so each policy of those tables is made again with its (select f()) initPlans as plain
-- calls. Same predicates; the helpers now run per evaluation instead of once per statement.
create temporary table usagemeter_distributed_policies on commit drop as
  select schemaname, tablename, policyname, permissive, cmd, roles,
         regexp_replace(qual, '\( SELECT ([a-z_0-9.]+\(\)) AS [a-z_0-9]+\)', '\1', 'g') as qual,
         regexp_replace(with_check, '\( SELECT ([a-z_0-9.]+\(\)) AS [a-z_0-9]+\)', '\1', 'g') as with_check
  from pg_catalog.pg_policies
  where (schemaname, tablename) in (('public', 'usage_events'), ('public', 'tenants'), ('public', 'tenant_members'),
                                    ('public', 'usage_prices'), ('public', 'usage_budgets'),
                                    ('public', 'usage_closed_periods'), ('public', 'usage_budget_counters'),
                                    ('public', 'usage_budget_alerts'));
do $$
declare
  p record;
begin
  for p in select * from pg_temp.usagemeter_distributed_policies loop
    execute format('drop policy %I on %I.%I', p.policyname, p.schemaname, p.tablename);
  end loop;
end
$$;

-- The ledger's foreign keys wait until it is distributed (Citus would otherwise pull the local ledger
-- into its metadata as a local table when the tables it refers to become reference tables).
alter table public.usage_events drop constraint usage_events_tenant_id_fkey;
alter table public.usage_events drop constraint usage_events_user_id_fkey;
alter table public.usage_events drop constraint usage_events_personal_user_id_fkey;
-- The same for the budget counters and alerts (distributed with the ledger by distribute_budgets.sql).
alter table public.usage_budget_counters drop constraint usage_budget_counters_budget_id_fkey;
alter table public.usage_budget_alerts drop constraint usage_budget_alerts_budget_id_fkey;

-- Reference tables (a copy on every node): what policies and row triggers read on the shards.
select create_reference_table('auth.users');
select create_reference_table('public.tenants');
select create_reference_table('public.tenant_members');
select create_reference_table('public.usage_prices');
select create_reference_table('public.usage_budgets');
select create_reference_table('public.usage_closed_periods');

-- The ledger and its key guard, co-located by owner: one owner's rows, partitions and keys on one shard.
select create_distributed_table('public.usage_events', 'owner_id');
select create_distributed_table('usagemeter_private.usage_event_keys', 'owner_id', colocate_with => 'public.usage_events');
-- (In a DO block: Citus forwards this ALTER to the workers as the text of the whole statement it came
-- in, which must then be a single statement.)
do $$
begin
  alter table public.usage_events add constraint usage_events_tenant_id_fkey
    foreign key (tenant_id) references public.tenants (id) on delete cascade;
  alter table public.usage_events add constraint usage_events_user_id_fkey
    foreign key (user_id) references auth.users (id) on delete set null;
  alter table public.usage_events add constraint usage_events_personal_user_id_fkey
    foreign key (personal_user_id) references auth.users (id) on delete cascade;
end
$$;

do $$
declare
  p record;
begin
  for p in select * from pg_temp.usagemeter_distributed_policies loop
    execute format('create policy %I on %I.%I as %s for %s to %s%s%s', p.policyname, p.schemaname, p.tablename,
                   p.permissive, p.cmd, array_to_string(p.roles, ', '),
                   case when p.qual is not null then format(' using (%s)', p.qual) else '' end,
                   case when p.with_check is not null then format(' with check (%s)', p.with_check) else '' end);
  end loop;
end
$$;

-- The policy helpers read reference tables from inside a query on a shard, which Citus refuses unless
-- told; the setting is scoped to these functions (they only read, and a reference table's copy on the
-- node is complete and current: its writes commit on every node together).
alter function usagemeter_private.tenant_ids_of_current_user_v1() set citus.allow_nested_distributed_execution = on;
alter function usagemeter_private.managed_tenant_ids_of_current_user_v1()
  set citus.allow_nested_distributed_execution = on;
alter function usagemeter_private.owned_tenant_ids_of_current_user_v1()
  set citus.allow_nested_distributed_execution = on;
alter function usagemeter_private.visible_budget_ids_v1() set citus.allow_nested_distributed_execution = on;

-- Request claims reach the workers: PostgREST's set_config(..., true) is not propagated, SET LOCAL is
-- (with citus.propagate_set_commands = 'local', set on the database below). usagemeter's acting_as
-- calls this where it exists.
create function usagemeter_private.set_request_claims_v1(claims text) returns text
language plpgsql set search_path = '' as $fn$
begin
  execute pg_catalog.format('set local request.jwt.claims = %L', claims);
  return claims;
end
$fn$;
comment on function usagemeter_private.set_request_claims_v1(text) is
  'On a Citus coordinator: sets request.jwt.claims for the transaction with SET LOCAL, which Citus propagates to the workers (set_config is not). Called by usagemeter''s acting_as.';
revoke all on function usagemeter_private.set_request_claims_v1(text) from public;
grant execute on function usagemeter_private.set_request_claims_v1(text) to authenticator;
-- The app login names the function (before it switches role); no request role may use the schema.
grant usage on schema usagemeter_private to authenticator;

-- PostgREST's pre-request hook (db-pre-request = 'usagemeter_request.propagate_claims_v1'): PostgREST sets
-- the claims with set_config(..., true), which Citus does not send to the workers; this sets the same
-- value again with SET LOCAL, which it does. It changes nothing else: a caller can only re-set the
-- claims it already has. Its own schema, so the request roles that call it see nothing of usagemeter_private.
create schema usagemeter_request;
comment on schema usagemeter_request is
  'Functions PostgREST calls per request on a distributed usagemeter (not exposed as an API schema).';
revoke all on schema usagemeter_request from public;
grant usage on schema usagemeter_request to anon, authenticated, service_role, authenticator;
create function usagemeter_request.propagate_claims_v1() returns void
language plpgsql set search_path = '' as $fn$
begin
  execute pg_catalog.format('set local request.jwt.claims = %L',
                            coalesce(pg_catalog.current_setting('request.jwt.claims', true), ''));
end
$fn$;
comment on function usagemeter_request.propagate_claims_v1() is
  'PostgREST db-pre-request on a Citus coordinator: re-sets request.jwt.claims with SET LOCAL so the workers see the request''s claims.';
revoke all on function usagemeter_request.propagate_claims_v1() from public;
grant execute on function usagemeter_request.propagate_claims_v1() to anon, authenticated, service_role, authenticator;
-- PostgREST reads its settings from the authenticator's role settings in this database (db-config):
-- the hook is set there unless the installation has a pre-request of its own, which must then call
-- this one (docs/distributed.md).
do $$
begin
  if not exists (
    select from pg_catalog.pg_db_role_setting as s
    where s.setrole = 'authenticator'::regrole
      and s.setdatabase in (0, (select oid from pg_catalog.pg_database where datname = current_database()))
      and exists (select from unnest(s.setconfig) as c where c like 'pgrst.db_pre_request=%')
  ) then
    execute pg_catalog.format('alter role authenticator in database %I set pgrst.db_pre_request = %L',
                              current_database(), 'usagemeter_request.propagate_claims_v1');
  end if;
end
$$;
