-- usagemeter db distribute, part four: budgets on the cluster (run after distribute_rollups.sql, in the same
-- transaction). Budgets stay a reference table (every node reads them); what each budget has used and the
-- alerts it fired are distributed by the owner key, co-located with the ledger: the counter of a tenant's
-- budget (or a Personal user's) lives on the shard holding that owner's events, so it is updated on that
-- shard in the writing transaction, under the same row lock as on one node, and hard limits stay exact
-- under concurrency. Same rules, errors (UMQ01, UMQ02) and thresholds as migration 20261127140000.

-- The owner key, from each row's budget.
alter table public.usage_budget_counters add column owner_id uuid;
update public.usage_budget_counters as k set owner_id = coalesce(b.tenant_id, b.user_id)
  from public.usage_budgets as b where b.id = k.budget_id;
alter table public.usage_budget_counters alter column owner_id set not null;
alter table public.usage_budget_alerts add column owner_id uuid;
update public.usage_budget_alerts as a set owner_id = coalesce(b.tenant_id, b.user_id)
  from public.usage_budgets as b where b.id = a.budget_id;
alter table public.usage_budget_alerts alter column owner_id set not null;

-- Unique keys must hold the distribution column.
alter table public.usage_budget_counters drop constraint usage_budget_counters_pkey;
alter table public.usage_budget_counters add constraint usage_budget_counters_pkey
  primary key (owner_id, budget_id, window_start);
alter table public.usage_budget_alerts drop constraint usage_budget_alerts_pkey;
alter table public.usage_budget_alerts add constraint usage_budget_alerts_pkey primary key (owner_id, id);
alter table public.usage_budget_alerts drop constraint usage_budget_alerts_once;
alter table public.usage_budget_alerts add constraint usage_budget_alerts_once
  unique (owner_id, budget_id, window_start, threshold);

select create_distributed_table('public.usage_budget_counters', 'owner_id', colocate_with => 'public.usage_events');
select create_distributed_table('public.usage_budget_alerts', 'owner_id', colocate_with => 'public.usage_events');
do $$
begin
  alter table public.usage_budget_counters add constraint usage_budget_counters_budget_id_fkey
    foreign key (budget_id) references public.usage_budgets (id) on delete cascade;
  alter table public.usage_budget_alerts add constraint usage_budget_alerts_budget_id_fkey
    foreign key (budget_id) references public.usage_budgets (id) on delete cascade;
end
$$;

-- The shard of `target` co-located with `shard` (a shard of the ledger, where a trigger fires): the same hash
-- range, so the same owners, on this node. Triggers on a shard write their owner's counters there directly:
-- a statement Citus routed again from a shard would not see this transaction's rows when it opens a
-- connection of its own.
create function usagemeter_private.colocated_shard_v1(shard regclass, target regclass) returns regclass
language sql stable
set search_path = ''
as $$
  select pg_catalog.format('%I.%I', n.nspname, c.relname || '_' || t.shardid)::regclass
  from pg_catalog.pg_dist_shard as s
  join pg_catalog.pg_dist_shard as t on t.logicalrelid = target and t.shardminvalue = s.shardminvalue
  join pg_catalog.pg_class as c on c.oid = target
  join pg_catalog.pg_namespace as n on n.oid = c.relnamespace
  where s.shardid = (pg_catalog.regexp_match(
          (select c.relname from pg_catalog.pg_class as c where c.oid = shard), '_([0-9]+)$'))[1]::bigint
$$;
comment on function usagemeter_private.colocated_shard_v1(regclass, regclass) is
  'On a worker: the shard of target co-located with a shard of the ledger (same hash range, same node).';
revoke all on function usagemeter_private.colocated_shard_v1(regclass, regclass) from public;

-- What a budget has used in a window, read from the ledger's shard holding its owner's events (the
-- statement's own rows included).
create function usagemeter_private.budget_usage_on_shard_v1(
  events_shard regclass, budget public.usage_budgets, window_start timestamptz, window_end timestamptz
) returns numeric
language plpgsql stable security definer
set search_path = ''
as $$
declare
  total numeric;
begin
  execute pg_catalog.format(
    'select coalesce(sum(case $1 when ''events'' then e.event_count::numeric'
    '                            when ''tokens'' then e.tokens_total::numeric else e.cost end), 0)'
    ' from %s as e'
    ' where e.owner_id = $2 and e.created_at >= $3 and e.created_at < $4'
    '   and ($5::text is null or e.action like $5)'
    '   and case when $6::uuid is null then e.tenant_id is null and e.user_id = $7'
    '            else e.tenant_id = $6 and ($7::uuid is null or e.user_id = $7) end', events_shard)
  into total
  using budget.metric, coalesce(budget.tenant_id, budget.user_id), window_start, window_end, budget.action_like,
        budget.tenant_id, budget.user_id;
  return total;
end
$$;
comment on function usagemeter_private.budget_usage_on_shard_v1(regclass, public.usage_budgets, timestamptz, timestamptz) is
  'Sum of a budget''s metric over its owner''s stored events in a window, read on the ledger''s shard.';
revoke all on function usagemeter_private.budget_usage_on_shard_v1(regclass, public.usage_budgets, timestamptz, timestamptz)
  from public;

-- count_usage_against_budgets_v1 on a shard: the same steps, with the counters and alerts of the shard
-- co-located with the ledger's shard the trigger fires on. An alert is also sent as NOTIFY from the worker,
-- which listeners on the coordinator do not hear: on a cluster, read alerts from usage_budget_alerts
-- (ids increase per node; order them by fired_at, id).
create function usagemeter_private.count_usage_on_shard_v1(events_shard regclass,
                                                           changes usagemeter_private.usage_change[])
returns void
language plpgsql security definer
set search_path = ''
as $$
declare
  counters regclass := usagemeter_private.colocated_shard_v1(events_shard, 'public.usage_budget_counters');
  alerts regclass := usagemeter_private.colocated_shard_v1(events_shard, 'public.usage_budget_alerts');
  change record;
  budget public.usage_budgets;
  owner uuid;
  new_used numeric;
  old_used numeric;
  threshold numeric;
  alert_id bigint;
begin
  for change in
    with grouped as (
      select c.tenant_id, c.user_id, c.action, c.model, c.created_at, c.is_event,
             sum(c.event_count) as event_count, sum(c.tokens_total) as tokens_total, sum(c.cost) as cost,
             bool_or(c.tokens_total > 0) as has_tokens
      from unnest(changes) as c
      group by 1, 2, 3, 4, 5, 6
    )
    select b.id as budget_id, w.window_start, w.window_end,
           sum(case b.metric when 'events' then g.event_count::numeric
                             when 'tokens' then g.tokens_total::numeric else g.cost end) as delta,
           min(case when b.metric = 'cost' and g.is_event and g.has_tokens
                    then case when usagemeter_private.has_token_price_v1(g.tenant_id, g.model, g.created_at)
                              then null else coalesce(g.model, '') end end) as unpriced_model
    from grouped as g
    join public.usage_budgets as b
      on case when g.tenant_id is null
              then b.tenant_id is null and b.user_id = g.user_id
              else b.tenant_id = g.tenant_id and (b.user_id is null or b.user_id = g.user_id) end
    cross join lateral usagemeter_private.budget_window_v1(b.period, b.time_zone, b.created_at, g.created_at) as w
    where (b.action_like is null or g.action like b.action_like) and w.window_start is not null
    group by 1, 2, 3
    order by 1, 2
  loop
    select * into budget from public.usage_budgets as b where b.id = change.budget_id;
    continue when not found;
    if change.unpriced_model is not null then
      raise exception 'usagemeter: %', case when change.unpriced_model = ''
          then 'an event with tokens names no model (metadata.model), so cost budget ' || budget.id || ' cannot count it'
          else 'model ' || change.unpriced_model || ' has no token price, so cost budget ' || budget.id || ' cannot count it' end
        using errcode = 'UMQ02',
              hint = 'Load a price for the model (usagemeter prices load), or name the model the price list uses.';
    end if;
    continue when change.delta = 0;
    owner := coalesce(budget.tenant_id, budget.user_id);
    execute pg_catalog.format(
      'update %s as k set used = k.used + $1 where k.owner_id = $2 and k.budget_id = $3 and k.window_start = $4'
      ' returning k.used', counters)
    into new_used using change.delta, owner, change.budget_id, change.window_start;
    if new_used is null then
      -- The window's first write: the counter starts from what is stored in the window (this statement's rows
      -- included), as on one node; a concurrent first writer's insert wins and this one adds to it.
      execute pg_catalog.format(
        'insert into %s as k (owner_id, budget_id, window_start, window_end, used) values ($1, $2, $3, $4, $5)'
        ' on conflict do nothing returning k.used', counters)
      into new_used
      using owner, change.budget_id, change.window_start, change.window_end,
            usagemeter_private.budget_usage_on_shard_v1(events_shard, budget, change.window_start, change.window_end);
      if new_used is null then
        execute pg_catalog.format(
          'update %s as k set used = k.used + $1 where k.owner_id = $2 and k.budget_id = $3 and k.window_start = $4'
          ' returning k.used', counters)
        into new_used using change.delta, owner, change.budget_id, change.window_start;
        continue when new_used is null;
      end if;
    end if;
    old_used := new_used - change.delta;
    if budget.mode = 'hard' and change.delta > 0 and new_used > budget.usage_limit then
      raise exception 'usagemeter: hard budget % would be exceeded: % used + % more > limit % (% per %, window % to %)',
          budget.id, old_used, change.delta, budget.usage_limit, budget.metric, budget.period,
          change.window_start, change.window_end
        using errcode = 'UMQ01',
              detail = json_build_object(
                'budget_id', budget.id, 'tenant_id', budget.tenant_id, 'user_id', budget.user_id,
                'metric', budget.metric, 'limit', budget.usage_limit, 'used', old_used, 'requested', change.delta,
                'currency', budget.currency, 'period', budget.period, 'time_zone', budget.time_zone,
                'window_start', change.window_start, 'window_end', change.window_end)::text,
              hint = 'Nothing of the write was stored. Raise the limit, wait for the next window, or void usage.';
    end if;
    if change.delta > 0 then
      foreach threshold in array budget.thresholds loop
        if old_used < threshold * budget.usage_limit and new_used >= threshold * budget.usage_limit then
          alert_id := null;
          execute pg_catalog.format(
            'insert into %s as a (owner_id, id, budget_id, window_start, threshold, used, usage_limit)'
            ' values ($1, pg_catalog.nextval($7::regclass), $2, $3, $4, $5, $6) on conflict do nothing'
            ' returning a.id', alerts)
          into alert_id
          using owner, budget.id, change.window_start, threshold, new_used, budget.usage_limit,
                pg_catalog.pg_get_serial_sequence('public.usage_budget_alerts', 'id');
          if alert_id is not null then
            perform pg_notify('usagemeter_budget_alerts', json_build_object(
              'id', alert_id, 'budget_id', budget.id, 'tenant_id', budget.tenant_id, 'user_id', budget.user_id,
              'metric', budget.metric, 'threshold', threshold, 'used', new_used, 'limit', budget.usage_limit,
              'window_start', change.window_start)::text);
          end if;
        end if;
      end loop;
    end if;
  end loop;
end
$$;
comment on function usagemeter_private.count_usage_on_shard_v1(regclass, usagemeter_private.usage_change[]) is
  'count_usage_against_budgets_v1 on a shard of the ledger: its co-located counters and alerts.';
revoke all on function usagemeter_private.count_usage_on_shard_v1(regclass, usagemeter_private.usage_change[])
  from public;

-- The statement trigger on the ledger, for a shard: the same changes, counted on this shard.
create or replace function usagemeter_private.enforce_usage_budgets_v1() returns trigger
language plpgsql security definer
set search_path = ''
set citus.allow_nested_distributed_execution = on
as $$
declare
  changes usagemeter_private.usage_change[];
begin
  if not exists (select 1 from public.usage_budgets) then
    return null;  -- no budget anywhere: nothing to count
  end if;
  if tg_op = 'INSERT' then
    select array_agg(row(r.tenant_id, r.user_id, r.action, r.model, r.created_at, r.event_count, r.tokens_total, r.cost,
                         r.correction_kind is null)::usagemeter_private.usage_change)
      into changes from added_rows as r;
  elsif tg_op = 'DELETE' then
    select array_agg(row(r.tenant_id, r.user_id, r.action, r.model, r.created_at, -r.event_count, -r.tokens_total,
                         -r.cost, false)::usagemeter_private.usage_change)
      into changes from removed_rows as r;
  else
    select array_agg(c) into changes from (
      select row(r.tenant_id, r.user_id, r.action, r.model, r.created_at, r.event_count, r.tokens_total, r.cost,
                 r.correction_kind is null)::usagemeter_private.usage_change as c
      from added_rows as r
      union all
      select row(r.tenant_id, r.user_id, r.action, r.model, r.created_at, -r.event_count, -r.tokens_total, -r.cost,
                 false)::usagemeter_private.usage_change
      from removed_rows as r
    ) as both_sides;
  end if;
  if changes is not null then
    perform usagemeter_private.count_usage_on_shard_v1(tg_relid::regclass, changes);
  end if;
  return null;
end
$$;
alter function usagemeter_private.count_usage_on_shard_v1(regclass, usagemeter_private.usage_change[])
  set citus.allow_nested_distributed_execution = on;

-- Setting a budget: usage_budgets is a reference table, so this row trigger fires on every node's copy. Every
-- copy checks the zone and currency. The coordinator's holds the ledger's writers off, as on one node (SHARE on
-- the distributed ledger, taken on every shard), until the budget commits: a write in flight finishes first
-- and is stored before the budget exists, a later one sees the budget. The counter is not made here (its row,
-- on a worker, would be checked against a copy of usage_budgets this transaction has not written yet): the
-- window's first write makes it from the usage stored in the window, its own rows included, under the
-- counter's row lock, as on one node; until then usage_budget_status computes what is used.
create or replace function usagemeter_private.start_budget_v1() returns trigger
language plpgsql security definer
set search_path = ''
set citus.allow_nested_distributed_execution = on
as $$
begin
  if not exists (select 1 from pg_catalog.pg_timezone_names where name = new.time_zone) then
    raise exception 'usagemeter: unknown time zone %', new.time_zone
      using errcode = '22023', hint = 'Use an IANA zone name such as UTC or Europe/Paris.';
  end if;
  if new.metric = 'cost' and exists (select 1 from public.usage_prices as p where p.currency <> new.currency) then
    raise exception 'usagemeter: a cost budget in % cannot count costs priced in %', new.currency,
      (select min(p.currency) from public.usage_prices as p)
      using errcode = '22023', hint = 'Give the price list''s currency (usagemeter prices list).';
  end if;
  if pg_catalog.citus_is_coordinator() then
    lock table public.usage_events in share mode;
  end if;
  return null;
end
$$;

-- The status view: a window without a counter yet (no write since the budget was set, or since the window
-- began) shows the usage stored in it, read from the owner's shard of the ledger as the caller (who reads a
-- budget only where they read its owner's events).
create function usagemeter_private.stored_budget_usage_v1(budget_id uuid, window_start timestamptz,
                                                          window_end timestamptz)
returns numeric
language plpgsql stable
set search_path = ''
as $$
declare
  budget public.usage_budgets;
  total numeric;
begin
  select * into budget from public.usage_budgets as b where b.id = stored_budget_usage_v1.budget_id;
  select coalesce(sum(case budget.metric when 'events' then e.event_count::numeric
                                         when 'tokens' then e.tokens_total::numeric else e.cost end), 0)
    into total
  from public.usage_events as e
  where e.owner_id = coalesce(budget.tenant_id, budget.user_id)
    and e.created_at >= window_start and e.created_at < window_end
    and (budget.action_like is null or e.action like budget.action_like)
    and case when budget.tenant_id is null
             then e.tenant_id is null and e.user_id = budget.user_id
             else e.tenant_id = budget.tenant_id and (budget.user_id is null or e.user_id = budget.user_id) end;
  return total;
end
$$;
comment on function usagemeter_private.stored_budget_usage_v1(uuid, timestamptz, timestamptz) is
  'A budget''s metric over its owner''s stored events in a window, as the caller reads them (status before a counter exists).';
revoke all on function usagemeter_private.stored_budget_usage_v1(uuid, timestamptz, timestamptz) from public;
grant execute on function usagemeter_private.stored_budget_usage_v1(uuid, timestamptz, timestamptz)
  to authenticated, service_role;

-- Citus cannot plan the single-node view's lateral window joined to the distributed counters under a
-- member's policies ("failed to postpone qual containing lateral reference"), so on a cluster the view reads
-- a function that looks each budget's counter up on its owner's shard, as the caller (RLS applies).
create function usagemeter_private.budget_status_v1()
returns table (id uuid, tenant_id uuid, user_id uuid, metric text, usage_limit numeric(20, 6), currency text,
               period text, time_zone text, action_pattern text, mode text, thresholds numeric[],
               window_start timestamptz, window_end timestamptz, used numeric, remaining numeric)
language plpgsql stable
set search_path = ''
as $$
declare
  budget public.usage_budgets;
  window_bounds record;
  counted numeric;
begin
  for budget in select * from public.usage_budgets as b order by b.id loop
    select * into window_bounds
      from usagemeter_private.budget_window_v1(budget.period, budget.time_zone, budget.created_at, now());
    counted := 0;
    if window_bounds.window_start is not null then
      select k.used into counted from public.usage_budget_counters as k
      where k.owner_id = coalesce(budget.tenant_id, budget.user_id) and k.budget_id = budget.id
        and k.window_start = window_bounds.window_start;
      if not found then
        counted := usagemeter_private.stored_budget_usage_v1(budget.id, window_bounds.window_start,
                                                             window_bounds.window_end);
      end if;
    end if;
    return query select budget.id, budget.tenant_id, budget.user_id, budget.metric, budget.usage_limit,
                        budget.currency, budget.period, budget.time_zone, budget.action_pattern, budget.mode,
                        budget.thresholds, window_bounds.window_start, window_bounds.window_end, counted,
                        greatest(budget.usage_limit - counted, 0::numeric);
  end loop;
end
$$;
comment on function usagemeter_private.budget_status_v1() is
  'usage_budget_status on a cluster: each budget the caller reads, its current window, used and remaining.';
revoke all on function usagemeter_private.budget_status_v1() from public;
grant execute on function usagemeter_private.budget_status_v1() to authenticated, service_role;

create or replace view public.usage_budget_status with (security_invoker = true) as
select s.id, s.tenant_id, s.user_id, s.metric, s.usage_limit::numeric(20, 6) as usage_limit, s.currency, s.period,
       s.time_zone, s.action_pattern, s.mode, s.thresholds, s.window_start, s.window_end, s.used, s.remaining
from usagemeter_private.budget_status_v1() as s;
revoke all on table public.usage_budget_status from public, anon, authenticated, service_role;
grant select on table public.usage_budget_status to authenticated, service_role;
-- The view and the counters' policies call usagemeter_private's helpers on the workers too, where the schema
-- Citus made has no grants of its own: USAGE, as on one node (each function keeps its own EXECUTE grants).
grant usage on schema usagemeter_private to authenticated, service_role;
