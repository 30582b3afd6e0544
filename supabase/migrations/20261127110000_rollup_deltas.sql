-- Rollups without hot rows or deadlocks: writers append deltas, a fold moves them into the rollups.
--
-- Until now every statement on usage_events upserted its delta into the three rollup tables in
-- place. Every writer of a tenant's action and hour then queued on the same rollup rows (one
-- tenant took 0.28x the inserts per second of 32 tenants), and two transactions that wrote two
-- tenants in opposite order deadlocked on them. Now:
--
-- - A statement on usage_events INSERTs its aggregated delta (per UTC hour, tenant, user and
--   action) into usage_rollup_deltas and touches no existing row: writers never wait on one
--   another for the rollups, so they cannot deadlock on them.
-- - The fold, usagemeter_private.fold_usage_rollups_v1(), moves the deltas into the three rollup tables in
--   one transaction: DELETE ... RETURNING of the deltas, their sums upserted into the rollups,
--   rows whose counts fell to zero deleted. Only one fold runs at a time (a transaction-level
--   advisory lock, tried, never waited for), and it waits for no row lock either (see its comment),
--   so it is never part of a lock cycle. A statement whose deltas pass a multiple of 1000 delta
--   ids runs it; `usagemeter rollup --fold` runs it on demand.
-- - Readers add the deltas to the rollups in one snapshot, so summaries are exact at every
--   commit, before and after any fold.
-- - Deleting a tenant deletes its rollup and delta rows (a statement trigger on tenants), so
--   nothing of a deleted tenant remains.
-- - Every rollup table gets a primary key, so a table in a publication (Supabase Realtime)
--   still accepts the UPDATEs and DELETEs of the fold.

-- Primary keys: the grouping columns are nullable (personal rows, system events), so a key of
-- their own would not do; the unique (tenant_id, user_id, action, bucket/day) indexes stay.
alter table public.usage_rollup_hourly add column id bigint generated always as identity;
alter table public.usage_rollup_hourly add constraint usage_rollup_hourly_pkey primary key (id);
comment on column public.usage_rollup_hourly.id is 'Row id: the primary key (replica identity for publications).';
alter table public.usage_rollup_daily add column id bigint generated always as identity;
alter table public.usage_rollup_daily add constraint usage_rollup_daily_pkey primary key (id);
comment on column public.usage_rollup_daily.id is 'Row id: the primary key (replica identity for publications).';
alter table public.usage_rollup_tenant_daily add column id bigint generated always as identity;
alter table public.usage_rollup_tenant_daily add constraint usage_rollup_tenant_daily_pkey primary key (id);
comment on column public.usage_rollup_tenant_daily.id is 'Row id: the primary key (replica identity for publications).';

comment on table public.usage_rollup_hourly is
  'usage_events aggregated per UTC hour, tenant, user and action, up to the last fold; plus usage_rollup_deltas it is exact.';
comment on table public.usage_rollup_daily is
  'usage_events aggregated per UTC day, tenant, user and action, up to the last fold; plus usage_rollup_deltas it is exact.';
comment on table public.usage_rollup_tenant_daily is
  'Tenant usage per UTC day and action, all users together, up to the last fold; plus usage_rollup_deltas it is exact.';

create table public.usage_rollup_deltas (
  id bigint generated always as identity primary key,
  bucket timestamptz not null,
  tenant_id uuid,
  user_id uuid,
  action text not null,
  module_id text not null,
  events bigint not null,
  tokens_input bigint not null,
  tokens_output bigint not null,
  tokens_total bigint not null,
  constraint usage_rollup_deltas_bucket_is_hour check (bucket = date_trunc('hour', bucket, 'UTC'))
)
-- A queue: rows come and go by the thousand, and readers scan what is left, so autovacuum should
-- clean it after a few thousand changes rather than after a fifth of a table that is nearly empty.
with (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 2000,
      autovacuum_analyze_scale_factor = 0, autovacuum_analyze_threshold = 2000);

create index usage_rollup_deltas_tenant_bucket_idx on public.usage_rollup_deltas (tenant_id, bucket);
create index usage_rollup_deltas_personal_user_bucket_idx
  on public.usage_rollup_deltas (user_id, bucket) where tenant_id is null;

comment on table public.usage_rollup_deltas is
  'Changes to usage_events not yet folded into the rollups: one row per statement, UTC hour, tenant, user and action. Insert-only for writers; usagemeter_private.fold_usage_rollups_v1() moves them into the rollups.';
comment on column public.usage_rollup_deltas.id is 'Delta id, increasing: the trigger folds when a statement''s ids pass a multiple of 1000.';
comment on column public.usage_rollup_deltas.bucket is 'Start of the UTC hour the events happened in.';
comment on column public.usage_rollup_deltas.tenant_id is 'Tenant of the events; NULL for personal usage. Deleting the tenant deletes its rows.';
comment on column public.usage_rollup_deltas.user_id is 'User of the events (NULL for tenant-level system events).';
comment on column public.usage_rollup_deltas.action is 'Action of the events.';
comment on column public.usage_rollup_deltas.module_id is 'Module of the events: the action''s first segment.';
comment on column public.usage_rollup_deltas.events is 'Change in the number of events (negative for deletions).';
comment on column public.usage_rollup_deltas.tokens_input is 'Change in the sum of tokens_input.';
comment on column public.usage_rollup_deltas.tokens_output is 'Change in the sum of tokens_output.';
comment on column public.usage_rollup_deltas.tokens_total is 'Change in the sum of tokens_total.';

-- Same visibility as usage_events; read-only for everyone but the owner (the triggers write).
revoke all on table public.usage_rollup_deltas from public, anon, authenticated, service_role;
grant select on table public.usage_rollup_deltas to authenticated, service_role;
alter table public.usage_rollup_deltas enable row level security;

create policy "Members read their tenants' rollups; users read their personal rollups"
  on public.usage_rollup_deltas for select to authenticated
  using (
    tenant_id = any ((select usagemeter_private.tenant_ids_of_current_user_v1())::uuid[])
    or (tenant_id is null and user_id = (select auth.uid()))
  );

-- The fold. Lock order, the same in every transaction that runs it: the advisory lock (tried:
-- if another fold holds it, this one returns NULL at once), then KEY SHARE on the tenants whose
-- deltas it folds (SKIP LOCKED: a tenant being deleted is left to its deletion), then delta
-- rows, then rollup rows. Nobody else locks delta rows or rollup rows of a tenant the fold holds
-- (writers only insert deltas; a tenant deletion first waits for the tenant row; a rebuild first
-- takes the advisory lock), so the fold never waits and never deadlocks. Only under READ
-- COMMITTED: a later snapshot would see deltas a concurrent fold has already moved.
create function usagemeter_private.fold_usage_rollups_v1() returns bigint
language plpgsql security definer
set search_path = ''
as $$
declare
  free_tenants uuid[];
  folded bigint;
  emptied_hours bigint[];
  emptied_days bigint[];
  emptied_tenant_days bigint[];
begin
  if current_setting('transaction_isolation') <> 'read committed'
     or not pg_try_advisory_xact_lock('public.usage_rollup_deltas'::regclass::oid::int, 0) then
    return null;
  end if;
  select coalesce(array_agg(locked.id), '{}'::uuid[]) into free_tenants
  from (
    select t.id from public.tenants as t
    where t.id in (select d.tenant_id from public.usage_rollup_deltas as d where d.tenant_id is not null)
    order by t.id
    for key share of t skip locked
  ) as locked;

  with moved as (
    delete from public.usage_rollup_deltas as d
    where d.tenant_id is null or d.tenant_id = any (free_tenants)
    returning d.bucket, d.tenant_id, d.user_id, d.action, d.events, d.tokens_input, d.tokens_output, d.tokens_total
  ),
  hourly as (
    select bucket, tenant_id, user_id, action, sum(events) as events, sum(tokens_input) as tokens_input,
           sum(tokens_output) as tokens_output, sum(tokens_total) as tokens_total
    from moved group by 1, 2, 3, 4
  ),
  upserted_hours as (
    insert into public.usage_rollup_hourly as r
      (bucket, tenant_id, user_id, action, module_id, events, tokens_input, tokens_output, tokens_total)
    select bucket, tenant_id, user_id, action, split_part(action, ':', 1), events, tokens_input, tokens_output,
           tokens_total
    from hourly where (events, tokens_input, tokens_output) <> (0, 0, 0)
    order by tenant_id, user_id, action, bucket
    on conflict (tenant_id, user_id, action, bucket) do update
      set events = r.events + excluded.events, tokens_input = r.tokens_input + excluded.tokens_input,
          tokens_output = r.tokens_output + excluded.tokens_output,
          tokens_total = r.tokens_total + excluded.tokens_total
    returning r.id, r.events
  ),
  daily as (
    select date_trunc('day', bucket, 'UTC') as day, tenant_id, user_id, action, sum(events) as events,
           sum(tokens_input) as tokens_input, sum(tokens_output) as tokens_output, sum(tokens_total) as tokens_total
    from hourly group by 1, 2, 3, 4
  ),
  upserted_days as (
    insert into public.usage_rollup_daily as r
      (day, tenant_id, user_id, action, module_id, events, tokens_input, tokens_output, tokens_total)
    select day, tenant_id, user_id, action, split_part(action, ':', 1), events, tokens_input, tokens_output,
           tokens_total
    from daily where (events, tokens_input, tokens_output) <> (0, 0, 0)
    order by tenant_id, user_id, action, day
    on conflict (tenant_id, user_id, action, day) do update
      set events = r.events + excluded.events, tokens_input = r.tokens_input + excluded.tokens_input,
          tokens_output = r.tokens_output + excluded.tokens_output,
          tokens_total = r.tokens_total + excluded.tokens_total
    returning r.id, r.events
  ),
  tenant_daily as (
    select day, tenant_id, action, sum(events) as events, sum(tokens_input) as tokens_input,
           sum(tokens_output) as tokens_output, sum(tokens_total) as tokens_total
    from daily where tenant_id is not null group by 1, 2, 3
  ),
  upserted_tenant_days as (
    insert into public.usage_rollup_tenant_daily as r
      (day, tenant_id, action, module_id, events, tokens_input, tokens_output, tokens_total)
    select day, tenant_id, action, split_part(action, ':', 1), events, tokens_input, tokens_output, tokens_total
    from tenant_daily where (events, tokens_input, tokens_output) <> (0, 0, 0)
    order by tenant_id, day, action
    on conflict (tenant_id, day, action) do update
      set events = r.events + excluded.events, tokens_input = r.tokens_input + excluded.tokens_input,
          tokens_output = r.tokens_output + excluded.tokens_output,
          tokens_total = r.tokens_total + excluded.tokens_total
    returning r.id, r.events
  )
  select (select count(*) from moved),
         (select array_agg(id) from upserted_hours where events = 0),
         (select array_agg(id) from upserted_days where events = 0),
         (select array_agg(id) from upserted_tenant_days where events = 0)
    into folded, emptied_hours, emptied_days, emptied_tenant_days;

  -- A group without events has no tokens either: its row says nothing and goes.
  delete from public.usage_rollup_hourly where id = any (emptied_hours);
  delete from public.usage_rollup_daily where id = any (emptied_days);
  delete from public.usage_rollup_tenant_daily where id = any (emptied_tenant_days);
  return folded;
end
$$;
comment on function usagemeter_private.fold_usage_rollups_v1() is
  'Moves usage_rollup_deltas into the three rollups in one transaction and deletes rollup rows left without events; returns the deltas folded, or NULL when another fold holds the lock (or outside READ COMMITTED).';
revoke all on function usagemeter_private.fold_usage_rollups_v1() from public;
grant execute on function usagemeter_private.fold_usage_rollups_v1() to service_role;

-- The delta of one statement, per hour, tenant, user and action: added rows count +1, removed
-- rows -1; groups that net to nothing are not written. One branch per statement kind (a trigger
-- has only the transition tables of its kind); each branch is static SQL, planned once per session.
create function usagemeter_private.add_usage_rollup_deltas_v1() returns trigger
language plpgsql security definer
set search_path = ''
as $$
declare
  first_id bigint;
  last_id bigint;
begin
  if tg_op = 'INSERT' then
    with added as (
      insert into public.usage_rollup_deltas
        (bucket, tenant_id, user_id, action, module_id, events, tokens_input, tokens_output, tokens_total)
      select date_trunc('hour', created_at, 'UTC'), tenant_id, user_id, action, split_part(action, ':', 1),
             count(*), sum(tokens_input), sum(tokens_output), sum(tokens_total)
      from added_rows group by 1, 2, 3, 4
      returning id
    )
    select min(id), max(id) into first_id, last_id from added;
  elsif tg_op = 'DELETE' then
    with added as (
      insert into public.usage_rollup_deltas
        (bucket, tenant_id, user_id, action, module_id, events, tokens_input, tokens_output, tokens_total)
      select date_trunc('hour', created_at, 'UTC'), tenant_id, user_id, action, split_part(action, ':', 1),
             -count(*), -sum(tokens_input), -sum(tokens_output), -sum(tokens_total)
      from removed_rows as e
      -- The events of a deleted tenant (the cascade) leave no delta: the tenant's rows are deleted.
      where e.tenant_id is null or exists (select from public.tenants as t where t.id = e.tenant_id)
      group by 1, 2, 3, 4
      returning id
    )
    select min(id), max(id) into first_id, last_id from added;
  else
    with changes as (
      select created_at, tenant_id, user_id, action, 1 as sign, tokens_input, tokens_output, tokens_total
      from added_rows
      union all
      select created_at, tenant_id, user_id, action, -1, tokens_input, tokens_output, tokens_total
      from removed_rows
    ),
    grouped as (
      select date_trunc('hour', created_at, 'UTC') as bucket, tenant_id, user_id, action, sum(sign) as events,
             sum(sign * tokens_input) as tokens_input, sum(sign * tokens_output) as tokens_output,
             sum(sign * tokens_total) as tokens_total
      from changes group by 1, 2, 3, 4
    ),
    added as (
      insert into public.usage_rollup_deltas
        (bucket, tenant_id, user_id, action, module_id, events, tokens_input, tokens_output, tokens_total)
      select bucket, tenant_id, user_id, action, split_part(action, ':', 1), events, tokens_input, tokens_output,
             tokens_total
      from grouped where (events, tokens_input, tokens_output) <> (0, 0, 0)
      returning id
    )
    select min(id), max(id) into first_id, last_id from added;
  end if;
  -- Fold now and then: when this statement's delta ids pass a multiple of 1000.
  if last_id / 1000 > (first_id - 1) / 1000 then
    perform usagemeter_private.fold_usage_rollups_v1();
  end if;
  return null;
end
$$;
comment on function usagemeter_private.add_usage_rollup_deltas_v1() is
  'Statement trigger on usage_events: appends the statement''s aggregated delta to usage_rollup_deltas (insert only), and folds every 1000 delta ids.';
revoke all on function usagemeter_private.add_usage_rollup_deltas_v1() from public;

drop trigger usage_rollup_after_insert on public.usage_events;
drop trigger usage_rollup_after_update on public.usage_events;
drop trigger usage_rollup_after_delete on public.usage_events;
drop function usagemeter_private.apply_usage_rollup_delta_v1();

create trigger usage_rollup_after_insert
  after insert on public.usage_events
  referencing new table as added_rows
  for each statement execute function usagemeter_private.add_usage_rollup_deltas_v1();
create trigger usage_rollup_after_update
  after update on public.usage_events
  referencing old table as removed_rows new table as added_rows
  for each statement execute function usagemeter_private.add_usage_rollup_deltas_v1();
create trigger usage_rollup_after_delete
  after delete on public.usage_events
  referencing old table as removed_rows
  for each statement execute function usagemeter_private.add_usage_rollup_deltas_v1();

-- Deleting a tenant cascades to its events, whose trigger appends no delta for a tenant that is
-- gone; this statement trigger deletes every rollup and delta row of the tenant, so none remains.
-- Its transaction holds the tenant's row lock, which a fold needs (KEY SHARE) before it touches
-- the tenant's rows, so the two never wait on each other's rollup rows.
create function usagemeter_private.forget_usage_rollups_of_deleted_tenants_v1() returns trigger
language plpgsql security definer
set search_path = ''
as $$
begin
  delete from public.usage_rollup_deltas where tenant_id in (select id from removed_tenants);
  delete from public.usage_rollup_hourly where tenant_id in (select id from removed_tenants);
  delete from public.usage_rollup_daily where tenant_id in (select id from removed_tenants);
  delete from public.usage_rollup_tenant_daily where tenant_id in (select id from removed_tenants);
  return null;
end
$$;
comment on function usagemeter_private.forget_usage_rollups_of_deleted_tenants_v1() is
  'Statement trigger on tenants: deletes the rollup and delta rows of the deleted tenants.';
revoke all on function usagemeter_private.forget_usage_rollups_of_deleted_tenants_v1() from public;

create trigger usage_rollups_forget_deleted_tenants
  after delete on public.tenants
  referencing old table as removed_tenants
  for each statement execute function usagemeter_private.forget_usage_rollups_of_deleted_tenants_v1();

-- Rows left by the old triggers: groups corrected or cascaded down to zero (deleted tenants' among them).
delete from public.usage_rollup_hourly where events = 0;
delete from public.usage_rollup_daily where events = 0;
delete from public.usage_rollup_tenant_daily where events = 0;
