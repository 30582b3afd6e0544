-- usagemeter db distribute, part three: the rollups on the cluster (run after distribute.sql and
-- distribute_functions.sql, in their transaction). docs/distributed.md, "Rollups".
--
-- usage_rollup_hourly, _daily, _tenant_daily and usage_rollup_deltas get the ledger's owner key, filled in
-- from their rows (coalesce(tenant_id, user_id): a tenant's groups live with its events, a Personal user's
-- with theirs), and are distributed by it, co-located with usage_events: every row of one owner, raw or
-- rolled up, is on one shard, so a one-owner summary is one task on one worker. Deleting a tenant removes
-- its rollup and delta rows by foreign keys to the reference table tenants (on delete cascade), which
-- replace the single-node statement trigger on tenants.

-- Their policies hold (select f()) initPlans, which Citus refuses on a distributed table: dropped here and
-- made again after distribution with plain calls, as distribute.sql does for the ledger.
create temporary table usagemeter_rollup_policies on commit drop as
  select schemaname, tablename, policyname, permissive, cmd, roles,
         regexp_replace(qual, '\( SELECT ([a-z_0-9.]+\(\)) AS [a-z_0-9]+\)', '\1', 'g') as qual,
         regexp_replace(with_check, '\( SELECT ([a-z_0-9.]+\(\)) AS [a-z_0-9]+\)', '\1', 'g') as with_check
  from pg_catalog.pg_policies
  where schemaname = 'public'
    and tablename in ('usage_rollup_hourly', 'usage_rollup_daily', 'usage_rollup_tenant_daily', 'usage_rollup_deltas');
do $$
declare
  p record;
begin
  for p in select * from pg_temp.usagemeter_rollup_policies loop
    execute format('drop policy %I on %I.%I', p.policyname, p.schemaname, p.tablename);
  end loop;
end
$$;

-- The owner key, from the rows already there.
alter table public.usage_rollup_hourly add column owner_id uuid;
update public.usage_rollup_hourly set owner_id = coalesce(tenant_id, user_id);
alter table public.usage_rollup_hourly alter column owner_id set not null;
alter table public.usage_rollup_daily add column owner_id uuid;
update public.usage_rollup_daily set owner_id = coalesce(tenant_id, user_id);
alter table public.usage_rollup_daily alter column owner_id set not null;
alter table public.usage_rollup_tenant_daily add column owner_id uuid;
update public.usage_rollup_tenant_daily set owner_id = tenant_id;
alter table public.usage_rollup_tenant_daily alter column owner_id set not null;
alter table public.usage_rollup_deltas add column owner_id uuid;
update public.usage_rollup_deltas set owner_id = coalesce(tenant_id, user_id);
alter table public.usage_rollup_deltas alter column owner_id set not null;
comment on column public.usage_rollup_hourly.owner_id is
  'Distribution key on a Citus cluster: tenant_id, or user_id on Personal rows (the shard of the owner''s events).';
comment on column public.usage_rollup_daily.owner_id is
  'Distribution key on a Citus cluster: tenant_id, or user_id on Personal rows (the shard of the owner''s events).';
comment on column public.usage_rollup_tenant_daily.owner_id is
  'Distribution key on a Citus cluster: the tenant (the shard of its events).';
comment on column public.usage_rollup_deltas.owner_id is
  'Distribution key on a Citus cluster: tenant_id, or user_id on Personal rows (the shard of the owner''s events).';

-- The fold's mark: the deltas a fold is moving (a fold marks, folds and deletes in three statements across
-- the shards; deltas written meanwhile are not marked, so they wait for the next fold).
alter table public.usage_rollup_deltas add column folding boolean not null default false;
comment on column public.usage_rollup_deltas.folding is
  'On a Citus cluster: marked by the running fold (usagemeter_private.fold_usage_rollups_v1) in its transaction; the deltas it moves.';

-- Unique keys hold the distribution column (owner_id is a function of the other columns: nothing is lost).
alter table public.usage_rollup_hourly drop constraint usage_rollup_hourly_pkey;
alter table public.usage_rollup_hourly add constraint usage_rollup_hourly_pkey primary key (owner_id, id);
alter table public.usage_rollup_daily drop constraint usage_rollup_daily_pkey;
alter table public.usage_rollup_daily add constraint usage_rollup_daily_pkey primary key (owner_id, id);
alter table public.usage_rollup_tenant_daily drop constraint usage_rollup_tenant_daily_pkey;
alter table public.usage_rollup_tenant_daily add constraint usage_rollup_tenant_daily_pkey primary key (owner_id, id);
alter table public.usage_rollup_deltas drop constraint usage_rollup_deltas_pkey;
alter table public.usage_rollup_deltas add constraint usage_rollup_deltas_pkey primary key (owner_id, id);
drop index public.usage_rollup_hourly_key;
create unique index usage_rollup_hourly_key
  on public.usage_rollup_hourly (owner_id, tenant_id, user_id, action, model, bucket) nulls not distinct;
drop index public.usage_rollup_daily_key;
create unique index usage_rollup_daily_key
  on public.usage_rollup_daily (owner_id, tenant_id, user_id, action, model, day) nulls not distinct;
drop index public.usage_rollup_tenant_daily_key;
create unique index usage_rollup_tenant_daily_key
  on public.usage_rollup_tenant_daily (owner_id, tenant_id, day, action, model)
  include (module_id, events, tokens_input, tokens_output, tokens_total, cost) nulls not distinct;
create index usage_rollup_deltas_owner_bucket_idx on public.usage_rollup_deltas (owner_id, bucket);

select create_distributed_table('public.usage_rollup_hourly', 'owner_id', colocate_with => 'public.usage_events');
select create_distributed_table('public.usage_rollup_daily', 'owner_id', colocate_with => 'public.usage_events');
select create_distributed_table('public.usage_rollup_tenant_daily', 'owner_id', colocate_with => 'public.usage_events');
select create_distributed_table('public.usage_rollup_deltas', 'owner_id', colocate_with => 'public.usage_events');

-- A deleted tenant's rollups and deltas go with it (distributed-to-reference keys; one statement per block,
-- as Citus forwards the text of the statement it came in).
do $$
begin
  alter table public.usage_rollup_hourly add constraint usage_rollup_hourly_tenant_id_fkey
    foreign key (tenant_id) references public.tenants (id) on delete cascade;
  alter table public.usage_rollup_daily add constraint usage_rollup_daily_tenant_id_fkey
    foreign key (tenant_id) references public.tenants (id) on delete cascade;
  alter table public.usage_rollup_tenant_daily add constraint usage_rollup_tenant_daily_tenant_id_fkey
    foreign key (tenant_id) references public.tenants (id) on delete cascade;
  alter table public.usage_rollup_deltas add constraint usage_rollup_deltas_tenant_id_fkey
    foreign key (tenant_id) references public.tenants (id) on delete cascade;
end
$$;

do $$
declare
  p record;
begin
  for p in select * from pg_temp.usagemeter_rollup_policies loop
    execute format('create policy %I on %I.%I as %s for %s to %s%s%s', p.policyname, p.schemaname, p.tablename,
                   p.permissive, p.cmd, array_to_string(p.roles, ', '),
                   case when p.qual is not null then format(' using (%s)', p.qual) else '' end,
                   case when p.with_check is not null then format(' with check (%s)', p.with_check) else '' end);
  end loop;
end
$$;

-- The delta trigger, written for shards (it fires on the shard holding the rows): a statement that reads
-- the transition table and writes a distributed table is planned by Citus as a distributed query over a
-- tuplestore it cannot see, so the statement's groups are read from the transition table alone and each
-- written as one INSERT naming its owner_id, routed to this shard. Same deltas as on one node. It does not
-- fold (a fold reads every shard, which a query on a shard may not): `usagemeter maintain` folds.
create or replace function usagemeter_private.add_usage_rollup_deltas_v1() returns trigger
language plpgsql security definer
set search_path = ''
as $fn$
declare
  groups refcursor;
  g record;
begin
  if tg_op = 'INSERT' then
    open groups for
      select owner_id, date_trunc('hour', created_at, 'UTC') as bucket, tenant_id, user_id, action, model,
             sum(event_count) as events, sum(tokens_input) as tokens_input, sum(tokens_output) as tokens_output,
             sum(tokens_total) as tokens_total, sum(cost) as cost
      from added_rows group by 1, 2, 3, 4, 5, 6;
  elsif tg_op = 'DELETE' then
    open groups for
      select owner_id, date_trunc('hour', created_at, 'UTC') as bucket, tenant_id, user_id, action, model,
             -sum(event_count) as events, -sum(tokens_input) as tokens_input, -sum(tokens_output) as tokens_output,
             -sum(tokens_total) as tokens_total, -sum(cost) as cost
      from removed_rows group by 1, 2, 3, 4, 5, 6;
  else
    open groups for
      select owner_id, date_trunc('hour', created_at, 'UTC') as bucket, tenant_id, user_id, action, model,
             sum(event_count) as events, sum(tokens_input) as tokens_input, sum(tokens_output) as tokens_output,
             sum(tokens_total) as tokens_total, sum(cost) as cost
      from (select owner_id, created_at, tenant_id, user_id, action, model, event_count, tokens_input, tokens_output,
                   tokens_total, cost
            from added_rows
            union all
            select owner_id, created_at, tenant_id, user_id, action, model, -event_count, -tokens_input,
                   -tokens_output, -tokens_total, -cost
            from removed_rows) as changes
      group by 1, 2, 3, 4, 5, 6
      having (sum(event_count), sum(tokens_input), sum(tokens_output), sum(cost)) <> (0, 0, 0, 0);
  end if;
  loop
    fetch groups into g;
    exit when not found;
    -- The events of a deleted tenant (the cascade) leave no delta: its rows go by the foreign key.
    continue when tg_op = 'DELETE' and g.tenant_id is not null
                  and not exists (select from public.tenants as t where t.id = g.tenant_id);
    insert into public.usage_rollup_deltas
      (owner_id, bucket, tenant_id, user_id, action, module_id, model, events, tokens_input, tokens_output,
       tokens_total, cost)
    values (g.owner_id, g.bucket, g.tenant_id, g.user_id, g.action, split_part(g.action, ':', 1), g.model, g.events,
            g.tokens_input, g.tokens_output, g.tokens_total, g.cost);
  end loop;
  close groups;
  return null;
end
$fn$;
comment on function usagemeter_private.add_usage_rollup_deltas_v1() is
  'Statement trigger on usage_events (on a Citus cluster, on the shard): appends the statement''s delta per hour, tenant, user, action and model to usage_rollup_deltas, one routed row per group; usagemeter maintain folds.';
alter function usagemeter_private.add_usage_rollup_deltas_v1() set citus.allow_nested_distributed_execution = on;

-- The fold, on the coordinator across the shards. Lock order as on one node: the advisory lock (tried:
-- NULL when another fold holds it), KEY SHARE on the tenants whose deltas it folds (SKIP LOCKED: a tenant
-- being deleted is left to its deletion), the delta rows it marks, then rollup rows. Each step is one
-- statement Citus runs on every shard at once: the groups of an owner are on the owner's shard, so an
-- INSERT ... SELECT from the deltas into a rollup is co-located (pushed down to the shards, ON CONFLICT on
-- the owner's key there), as is the deletion of the groups the fold left without events.
create or replace function usagemeter_private.fold_usage_rollups_v1() returns bigint
language plpgsql security definer
set search_path = ''
as $fn$
declare
  pending_tenants uuid[];
  free_tenants uuid[];
  folded bigint;
begin
  if current_setting('transaction_isolation') <> 'read committed'
     or not pg_try_advisory_xact_lock('public.usage_rollup_deltas'::regclass::oid::int, 0) then
    return null;
  end if;
  select coalesce(array_agg(distinct d.tenant_id), '{}'::uuid[]) into pending_tenants
  from public.usage_rollup_deltas as d where d.tenant_id is not null;
  select coalesce(array_agg(locked.id), '{}'::uuid[]) into free_tenants
  from (select t.id from public.tenants as t where t.id = any (pending_tenants)
        order by t.id for key share of t skip locked) as locked;

  update public.usage_rollup_deltas as d set folding = true
  where not d.folding and (d.tenant_id is null or d.tenant_id = any (free_tenants));
  get diagnostics folded = row_count;
  if folded = 0 then
    return 0;
  end if;

  insert into public.usage_rollup_hourly as r
    (owner_id, bucket, tenant_id, user_id, action, module_id, model, events, tokens_input, tokens_output,
     tokens_total, cost)
  select d.owner_id, d.bucket, d.tenant_id, d.user_id, d.action, split_part(d.action, ':', 1), d.model,
         sum(d.events), sum(d.tokens_input), sum(d.tokens_output), sum(d.tokens_total), sum(d.cost)
  from public.usage_rollup_deltas as d where d.folding
  group by d.owner_id, d.bucket, d.tenant_id, d.user_id, d.action, d.model
  having (sum(d.events), sum(d.tokens_input), sum(d.tokens_output), sum(d.cost)) <> (0, 0, 0, 0)
  on conflict (owner_id, tenant_id, user_id, action, model, bucket) do update
    set events = r.events + excluded.events, tokens_input = r.tokens_input + excluded.tokens_input,
        tokens_output = r.tokens_output + excluded.tokens_output,
        tokens_total = r.tokens_total + excluded.tokens_total, cost = r.cost + excluded.cost;

  insert into public.usage_rollup_daily as r
    (owner_id, day, tenant_id, user_id, action, module_id, model, events, tokens_input, tokens_output,
     tokens_total, cost)
  select d.owner_id, date_trunc('day', d.bucket, 'UTC'), d.tenant_id, d.user_id, d.action,
         split_part(d.action, ':', 1), d.model, sum(d.events), sum(d.tokens_input), sum(d.tokens_output),
         sum(d.tokens_total), sum(d.cost)
  from public.usage_rollup_deltas as d where d.folding
  group by d.owner_id, date_trunc('day', d.bucket, 'UTC'), d.tenant_id, d.user_id, d.action, d.model
  having (sum(d.events), sum(d.tokens_input), sum(d.tokens_output), sum(d.cost)) <> (0, 0, 0, 0)
  on conflict (owner_id, tenant_id, user_id, action, model, day) do update
    set events = r.events + excluded.events, tokens_input = r.tokens_input + excluded.tokens_input,
        tokens_output = r.tokens_output + excluded.tokens_output,
        tokens_total = r.tokens_total + excluded.tokens_total, cost = r.cost + excluded.cost;

  insert into public.usage_rollup_tenant_daily as r
    (owner_id, day, tenant_id, action, module_id, model, events, tokens_input, tokens_output, tokens_total, cost)
  select d.owner_id, date_trunc('day', d.bucket, 'UTC'), d.tenant_id, d.action, split_part(d.action, ':', 1),
         d.model, sum(d.events), sum(d.tokens_input), sum(d.tokens_output), sum(d.tokens_total), sum(d.cost)
  from public.usage_rollup_deltas as d where d.folding and d.tenant_id is not null
  group by d.owner_id, date_trunc('day', d.bucket, 'UTC'), d.tenant_id, d.action, d.model
  having (sum(d.events), sum(d.tokens_input), sum(d.tokens_output), sum(d.cost)) <> (0, 0, 0, 0)
  on conflict (owner_id, tenant_id, day, action, model) do update
    set events = r.events + excluded.events, tokens_input = r.tokens_input + excluded.tokens_input,
        tokens_output = r.tokens_output + excluded.tokens_output,
        tokens_total = r.tokens_total + excluded.tokens_total, cost = r.cost + excluded.cost;

  -- A group left with no events, tokens or cost has nothing to say: it goes (only groups this fold touched).
  delete from public.usage_rollup_hourly as r using public.usage_rollup_deltas as d
  where d.folding and r.owner_id = d.owner_id and r.tenant_id is not distinct from d.tenant_id
    and r.user_id is not distinct from d.user_id and r.action = d.action and r.model is not distinct from d.model
    and r.bucket = d.bucket and (r.events, r.tokens_input, r.tokens_output, r.cost) = (0, 0, 0, 0);
  delete from public.usage_rollup_daily as r using public.usage_rollup_deltas as d
  where d.folding and r.owner_id = d.owner_id and r.tenant_id is not distinct from d.tenant_id
    and r.user_id is not distinct from d.user_id and r.action = d.action and r.model is not distinct from d.model
    and r.day = date_trunc('day', d.bucket, 'UTC') and (r.events, r.tokens_input, r.tokens_output, r.cost) = (0, 0, 0, 0);
  delete from public.usage_rollup_tenant_daily as r using public.usage_rollup_deltas as d
  where d.folding and r.owner_id = d.owner_id and r.tenant_id = d.tenant_id and r.action = d.action
    and r.model is not distinct from d.model and r.day = date_trunc('day', d.bucket, 'UTC')
    and (r.events, r.tokens_input, r.tokens_output, r.cost) = (0, 0, 0, 0);

  delete from public.usage_rollup_deltas as d where d.folding;
  return folded;
end
$fn$;
comment on function usagemeter_private.fold_usage_rollups_v1() is
  'On a Citus cluster: moves usage_rollup_deltas into the three rollups on every shard in one transaction and deletes rollup rows left without events; returns the deltas folded, or NULL when another fold holds the lock (or outside READ COMMITTED).';

-- Summaries set the report's time zone for their transaction; on the cluster the workers evaluate their
-- buckets, so it is set with SET LOCAL, which Citus sends on (set_config is not). A caller sets only its own
-- transaction's zone, as set_config would.
create function usagemeter_request.set_time_zone_v1(tz text) returns text
language plpgsql set search_path = '' as $fn$
begin
  execute pg_catalog.format('set local timezone = %L', tz);
  return tz;
end
$fn$;
comment on function usagemeter_request.set_time_zone_v1(text) is
  'On a Citus coordinator: sets TimeZone for the transaction with SET LOCAL, which Citus propagates to the workers (summaries'' buckets).';
revoke all on function usagemeter_request.set_time_zone_v1(text) from public;
grant execute on function usagemeter_request.set_time_zone_v1(text) to anon, authenticated, service_role;

-- pg_cron, where present on the coordinator: the deltas are folded every minute without anyone running
-- maintain (writers on the shards do not fold; summaries stay exact either way, but read more deltas).
do $cron$
begin
  if exists (select from pg_catalog.pg_extension where extname = 'pg_cron') then
    perform cron.schedule('usagemeter-rollup-fold', '* * * * *', 'select usagemeter_private.fold_usage_rollups_v1()');
  end if;
end
$cron$;
