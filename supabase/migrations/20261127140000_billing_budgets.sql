-- Billing, part two: budgets the database enforces as usage is written, for every client.
--
-- A budget limits the events, tokens or cost of a scope (a tenant, one user within a tenant, or
-- one Personal user), optionally narrowed to an action pattern (agency:*), per calendar day, week
-- or month in an IANA time zone, or in total (prepaid credit, counted from the budget's creation).
--
-- Enforcement: statement triggers on usage_events add each statement's change to one counter row
-- per (budget, window), in the statement's transaction. The counter row is locked from that
-- update to the commit, so writers that share a budget take turns on it and each sees what the
-- one before committed: a hard budget's sum never passes its limit, however many connections race.
-- Writers that share no budget touch no common row and never wait for each other. A statement is
-- all or nothing: when its change would pass a hard limit, the whole statement is refused
-- (SQLSTATE UMQ01, the budget in DETAIL as JSON) and nothing of it is stored.
--
-- Thresholds (fractions of the limit; 0.8 and 1.0 by default) fire once per budget and window:
-- a row in usage_budget_alerts (the outbox) and a NOTIFY on channel usagemeter_budget_alerts, both
-- committed with the write that crossed them.

do $guard$
begin
  if to_regclass('public.usage_budgets') is not null or to_regclass('public.usage_budget_counters') is not null
     or to_regclass('public.usage_budget_alerts') is not null then
    raise exception 'usagemeter: a budget table already exists and was not created by usagemeter'
      using hint = 'Rename or drop it, then run the migrations again; nothing was changed.';
  end if;
end
$guard$;

create table public.usage_budgets (
  id uuid primary key default gen_random_uuid(),
  tenant_id uuid references public.tenants (id) on delete cascade,
  user_id uuid references auth.users (id) on delete cascade,
  metric text not null,
  usage_limit numeric(20, 6) not null,
  currency text,
  period text not null,
  time_zone text not null default 'UTC',
  action_pattern text,
  action_like text generated always as (replace(replace(action_pattern, '_', '\_'), '*', '%')) stored,
  mode text not null,
  thresholds numeric[] not null default '{0.8,1.0}',
  created_at timestamptz not null default now(),
  constraint usage_budgets_scope_present check (tenant_id is not null or user_id is not null),
  constraint usage_budgets_metric_valid check (metric in ('events', 'tokens', 'cost')),
  constraint usage_budgets_limit_positive check (usage_limit > 0),
  constraint usage_budgets_currency_for_cost check (
    (metric = 'cost') = (currency is not null) and (currency is null or currency ~ '^[A-Z]{3}$')
  ),
  constraint usage_budgets_whole_limit check (metric = 'cost' or usage_limit = trunc(usage_limit)),
  constraint usage_budgets_period_valid check (period in ('day', 'week', 'month', 'total')),
  constraint usage_budgets_mode_valid check (mode in ('hard', 'soft')),
  constraint usage_budgets_time_zone_length check (char_length(time_zone) between 1 and 64),
  constraint usage_budgets_action_pattern_format check (
    action_pattern is null
    or (char_length(action_pattern) <= 200 and action_pattern ~ '^[a-z0-9_*-]+(:[a-z0-9_*-]+){0,2}$')
  ),
  constraint usage_budgets_thresholds_valid check (
    cardinality(thresholds) between 1 and 10 and 0 < all (thresholds) and 10 >= all (thresholds)
    and array_position(thresholds, null) is null
  )
);

create index usage_budgets_tenant_idx on public.usage_budgets (tenant_id) where tenant_id is not null;
create index usage_budgets_personal_user_idx on public.usage_budgets (user_id) where tenant_id is null;

comment on table public.usage_budgets is
  'Limits on the events, tokens or cost of a tenant, a user within a tenant, or a Personal user, per day, week or month '
  'in a time zone, or in total; hard budgets refuse the write that would pass them, soft ones only alert.';
comment on column public.usage_budgets.id is 'Budget id.';
comment on column public.usage_budgets.tenant_id is 'Tenant whose usage is limited; NULL for a Personal user''s budget.';
comment on column public.usage_budgets.user_id is 'With tenant_id: the one member limited within the tenant; without: the Personal user.';
comment on column public.usage_budgets.metric is 'events, tokens (tokens_total) or cost.';
comment on column public.usage_budgets.usage_limit is 'The limit, in events, tokens or currency units.';
comment on column public.usage_budgets.currency is 'Currency of a cost limit (the price list''s); NULL for other metrics.';
comment on column public.usage_budgets.period is 'Window: a calendar day, week (from Monday) or month in time_zone, or total (from created_at on).';
comment on column public.usage_budgets.time_zone is 'IANA time zone of the calendar windows.';
comment on column public.usage_budgets.action_pattern is 'Only actions matching this pattern count (* matches any characters, e.g. agency:*); NULL for all.';
comment on column public.usage_budgets.action_like is 'action_pattern as a LIKE pattern, computed by the database.';
comment on column public.usage_budgets.mode is 'hard: a write that would pass the limit is refused; soft: it is stored and alerts fire.';
comment on column public.usage_budgets.thresholds is 'Fractions of the limit at which an alert fires once per window (default 0.8 and 1.0).';
comment on column public.usage_budgets.created_at is 'When the budget was set; a total budget counts usage from then on.';

create table public.usage_budget_counters (
  budget_id uuid not null references public.usage_budgets (id) on delete cascade,
  window_start timestamptz not null,
  window_end timestamptz not null,
  used numeric(20, 6) not null,
  constraint usage_budget_counters_pkey primary key (budget_id, window_start)
);
comment on table public.usage_budget_counters is
  'What each budget has used per window, kept by the triggers on usage_events in the writing transaction; exact at every commit.';
comment on column public.usage_budget_counters.budget_id is 'The budget.';
comment on column public.usage_budget_counters.window_start is 'Start of the window (the budget''s created_at for a total budget).';
comment on column public.usage_budget_counters.window_end is 'End of the window (exclusive; infinity for a total budget).';
comment on column public.usage_budget_counters.used is 'Usage in the window so far, in the budget''s metric.';

create table public.usage_budget_alerts (
  id bigint generated always as identity primary key,
  budget_id uuid not null references public.usage_budgets (id) on delete cascade,
  window_start timestamptz not null,
  threshold numeric not null,
  used numeric(20, 6) not null,
  usage_limit numeric(20, 6) not null,
  fired_at timestamptz not null default now(),
  constraint usage_budget_alerts_once unique (budget_id, window_start, threshold)
);
comment on table public.usage_budget_alerts is
  'Threshold alerts, one per budget, window and threshold, committed with the write that crossed the threshold: an outbox '
  'a late listener catches up on (ids increase). Each row was also sent as NOTIFY usagemeter_budget_alerts.';
comment on column public.usage_budget_alerts.id is 'Alert id, increasing: a consumer remembers the last it handled.';
comment on column public.usage_budget_alerts.budget_id is 'The budget.';
comment on column public.usage_budget_alerts.window_start is 'The window it fired in.';
comment on column public.usage_budget_alerts.threshold is 'The fraction of the limit crossed.';
comment on column public.usage_budget_alerts.used is 'Usage in the window right after the crossing write.';
comment on column public.usage_budget_alerts.usage_limit is 'The limit when it fired.';
comment on column public.usage_budget_alerts.fired_at is 'When the crossing write ran.';

-- Members read their tenants' budgets, counters and alerts; Personal users their own; only the service role writes.
revoke all on table public.usage_budgets, public.usage_budget_counters, public.usage_budget_alerts
  from public, anon, authenticated, service_role;
grant select on table public.usage_budgets, public.usage_budget_counters, public.usage_budget_alerts to authenticated;
grant select, insert, delete on table public.usage_budgets to service_role;
grant update (usage_limit, mode, thresholds) on table public.usage_budgets to service_role;
grant select on table public.usage_budget_counters, public.usage_budget_alerts to service_role;
alter table public.usage_budgets enable row level security;
alter table public.usage_budget_counters enable row level security;
alter table public.usage_budget_alerts enable row level security;

create function usagemeter_private.visible_budget_ids_v1() returns uuid[]
language plpgsql stable security definer
set search_path = ''
as $$
begin
  return (
    select coalesce(array_agg(b.id), '{}'::uuid[])
    from public.usage_budgets as b
    where b.tenant_id = any (usagemeter_private.tenant_ids_of_current_user_v1())
       or (b.tenant_id is null and b.user_id = (select auth.uid()))
  );
end
$$;
comment on function usagemeter_private.visible_budget_ids_v1() is
  'Budgets the caller may read: those of their tenants and their own Personal ones (policies call it once per statement).';
revoke all on function usagemeter_private.visible_budget_ids_v1() from public;
grant execute on function usagemeter_private.visible_budget_ids_v1() to authenticated, service_role;

create policy "Members read their tenants' budgets; users read their personal budgets"
  on public.usage_budgets for select to authenticated
  using (
    tenant_id = any ((select usagemeter_private.tenant_ids_of_current_user_v1())::uuid[])
    or (tenant_id is null and user_id = (select auth.uid()))
  );
create policy "Readers of a budget read its counters"
  on public.usage_budget_counters for select to authenticated
  using (budget_id = any ((select usagemeter_private.visible_budget_ids_v1())::uuid[]));
create policy "Readers of a budget read its alerts"
  on public.usage_budget_alerts for select to authenticated
  using (budget_id = any ((select usagemeter_private.visible_budget_ids_v1())::uuid[]));

-- Windows ----------------------------------------------------------------------------------------

-- The window of a budget that `at` falls in: calendar windows start at local midnight in the
-- budget's zone (DST included); a total window runs from the budget's creation on, and a moment
-- before it is in no window (NULLs).
create function usagemeter_private.budget_window_v1(
  period text, time_zone text, created_at timestamptz, at timestamptz, out window_start timestamptz,
  out window_end timestamptz
)
language plpgsql stable
set search_path = ''
as $$
begin
  if period = 'total' then
    if at >= created_at then
      window_start := created_at;
      window_end := 'infinity';
    end if;
    return;
  end if;
  window_start := date_trunc(period, at, time_zone);
  window_end := ((window_start at time zone time_zone) + ('1 ' || period)::interval) at time zone time_zone;
end
$$;
comment on function usagemeter_private.budget_window_v1(text, text, timestamptz, timestamptz) is
  'The [start, end) of the budget window containing a moment: a calendar day, week or month in a zone, or total from the budget''s creation.';
revoke all on function usagemeter_private.budget_window_v1(text, text, timestamptz, timestamptz) from public;
grant execute on function usagemeter_private.budget_window_v1(text, text, timestamptz, timestamptz)
  to authenticated, service_role;

-- Usage already stored in a window, as a budget counts it: read when its counter is created.
create function usagemeter_private.budget_usage_v1(budget public.usage_budgets, window_start timestamptz,
                                                   window_end timestamptz)
returns numeric
language plpgsql stable security definer
set search_path = ''
as $$
declare
  total numeric;
begin
  select coalesce(sum(case budget.metric when 'events' then e.event_count::numeric
                                         when 'tokens' then e.tokens_total::numeric else e.cost end), 0)
    into total
  from public.usage_events as e
  where e.created_at >= window_start and e.created_at < window_end
    and (budget.action_like is null or e.action like budget.action_like)
    and case when budget.tenant_id is null
             then e.tenant_id is null and e.user_id = budget.user_id
             else e.tenant_id = budget.tenant_id and (budget.user_id is null or e.user_id = budget.user_id) end;
  return total;
end
$$;
comment on function usagemeter_private.budget_usage_v1(public.usage_budgets, timestamptz, timestamptz) is
  'Sum of a budget''s metric over the stored events of its scope and pattern in a window.';
revoke all on function usagemeter_private.budget_usage_v1(public.usage_budgets, timestamptz, timestamptz) from public;

-- Whether tokens of a model have a price for a tenant at a moment (a cost budget cannot count tokens that have none).
create function usagemeter_private.has_token_price_v1(tenant_id uuid, model text, at timestamptz) returns boolean
language sql stable security definer
set search_path = ''
as $$
  select model is not null and exists (
    select from public.usage_prices as p
    where p.model = has_token_price_v1.model and p.action is null and p.effective_from <= at
      and (p.tenant_id is null or p.tenant_id = has_token_price_v1.tenant_id)
  )
$$;
comment on function usagemeter_private.has_token_price_v1(uuid, text, timestamptz) is
  'Whether a model''s tokens have a price in effect for a tenant (NULL: general prices only) at a moment.';
revoke all on function usagemeter_private.has_token_price_v1(uuid, text, timestamptz) from public;

-- Enforcement ------------------------------------------------------------------------------------

create type usagemeter_private.usage_change as (
  tenant_id uuid,
  user_id uuid,
  action text,
  model text,
  created_at timestamptz,
  event_count int,
  tokens_total bigint,
  cost numeric,
  is_event boolean
);
comment on type usagemeter_private.usage_change is 'One changed usage_events row as budgets count it (negated for removed rows).';

-- Adds a statement's changes to the counters of every budget they fall under, in (budget,
-- window) order so two statements never wait on each other's counters in opposite orders.
create function usagemeter_private.count_usage_against_budgets_v1(changes usagemeter_private.usage_change[])
returns void
language plpgsql security definer
set search_path = ''
as $$
declare
  change record;
  budget public.usage_budgets;
  new_used numeric;
  old_used numeric;
  threshold numeric;
  alert_id bigint;
begin
  for change in
    select b.id as budget_id, w.window_start, w.window_end,
           sum(case b.metric when 'events' then c.event_count::numeric
                             when 'tokens' then c.tokens_total::numeric else c.cost end) as delta,
           min(case when b.metric = 'cost' and c.is_event and c.tokens_total > 0
                    then case when usagemeter_private.has_token_price_v1(c.tenant_id, c.model, c.created_at)
                              then null else coalesce(c.model, '') end end) as unpriced_model
    from unnest(changes) as c
    join public.usage_budgets as b
      on case when c.tenant_id is null
              then b.tenant_id is null and b.user_id = c.user_id
              else b.tenant_id = c.tenant_id and (b.user_id is null or b.user_id = c.user_id) end
    cross join lateral usagemeter_private.budget_window_v1(b.period, b.time_zone, b.created_at, c.created_at) as w
    where (b.action_like is null or c.action like b.action_like) and w.window_start is not null
    group by 1, 2, 3
    order by 1, 2
  loop
    select * into budget from public.usage_budgets as b where b.id = change.budget_id;
    continue when not found;  -- deleted since this statement's snapshot was taken
    if change.unpriced_model is not null then
      raise exception 'usagemeter: %', case when change.unpriced_model = ''
          then 'an event with tokens names no model (metadata.model), so cost budget ' || budget.id || ' cannot count it'
          else 'model ' || change.unpriced_model || ' has no token price, so cost budget ' || budget.id || ' cannot count it' end
        using errcode = 'UMQ02',
              hint = 'Load a price for the model (usagemeter prices load), or name the model the price list uses.';
    end if;
    continue when change.delta = 0;
    update public.usage_budget_counters as k set used = k.used + change.delta
      where k.budget_id = change.budget_id and k.window_start = change.window_start
      returning k.used into new_used;
    if not found then
      -- The window's first write: the counter starts from what is stored in the window (this statement's rows included).
      begin
        insert into public.usage_budget_counters as k (budget_id, window_start, window_end, used)
          values (change.budget_id, change.window_start, change.window_end,
                  usagemeter_private.budget_usage_v1(budget, change.window_start, change.window_end))
          on conflict do nothing
          returning k.used into new_used;
      exception when foreign_key_violation then
        continue;  -- the budget was deleted since this statement began: it counts nothing any more
      end;
      if not found then  -- another writer created it first; it has committed, so add to it
        update public.usage_budget_counters as k set used = k.used + change.delta
          where k.budget_id = change.budget_id and k.window_start = change.window_start
          returning k.used into new_used;
        continue when not found;  -- and the budget has been deleted since
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
          insert into public.usage_budget_alerts (budget_id, window_start, threshold, used, usage_limit)
            values (budget.id, change.window_start, threshold, new_used, budget.usage_limit)
            on conflict do nothing
            returning id into alert_id;
          if found then
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
comment on function usagemeter_private.count_usage_against_budgets_v1(usagemeter_private.usage_change[]) is
  'Adds usage changes to the counters of the budgets they fall under; refuses (UMQ01) what would pass a hard limit, '
  'refuses (UMQ02) tokens a cost budget cannot price, and fires each threshold once per window.';
revoke all on function usagemeter_private.count_usage_against_budgets_v1(usagemeter_private.usage_change[]) from public;

create function usagemeter_private.enforce_usage_budgets_v1() returns trigger
language plpgsql security definer
set search_path = ''
as $$
declare
  changes usagemeter_private.usage_change[];
begin
  if not exists (select from public.usage_budgets) then
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
    perform usagemeter_private.count_usage_against_budgets_v1(changes);
  end if;
  return null;
end
$$;
comment on function usagemeter_private.enforce_usage_budgets_v1() is
  'Statement trigger on usage_events: counts the statement''s rows against the budgets they fall under (see count_usage_against_budgets_v1).';
revoke all on function usagemeter_private.enforce_usage_budgets_v1() from public;

create trigger usage_budgets_after_insert
  after insert on public.usage_events
  referencing new table as added_rows
  for each statement execute function usagemeter_private.enforce_usage_budgets_v1();
create trigger usage_budgets_after_update
  after update on public.usage_events
  referencing old table as removed_rows new table as added_rows
  for each statement execute function usagemeter_private.enforce_usage_budgets_v1();
create trigger usage_budgets_after_delete
  after delete on public.usage_events
  referencing old table as removed_rows
  for each statement execute function usagemeter_private.enforce_usage_budgets_v1();

-- Setting a budget ----------------------------------------------------------------------------

-- A new budget starts from the usage already stored in its current window. Writers of usage are
-- held off (SHARE lock) until the budget commits, so no write can land between the count and the
-- budget becoming visible to writers' triggers: every event is counted exactly once.
create function usagemeter_private.start_budget_v1() returns trigger
language plpgsql security definer
set search_path = ''
as $$
declare
  window_bounds record;
begin
  if not exists (select from pg_catalog.pg_timezone_names where name = new.time_zone) then
    raise exception 'usagemeter: unknown time zone %', new.time_zone
      using errcode = '22023', hint = 'Use an IANA zone name such as UTC or Europe/Paris.';
  end if;
  if new.metric = 'cost' and exists (select from public.usage_prices as p where p.currency <> new.currency) then
    raise exception 'usagemeter: a cost budget in % cannot count costs priced in %', new.currency,
      (select min(p.currency) from public.usage_prices as p)
      using errcode = '22023', hint = 'Give the price list''s currency (usagemeter prices list).';
  end if;
  lock table public.usage_events in share mode;
  select * into window_bounds
    from usagemeter_private.budget_window_v1(new.period, new.time_zone, new.created_at, now());
  if window_bounds.window_start is not null then
    insert into public.usage_budget_counters (budget_id, window_start, window_end, used)
      values (new.id, window_bounds.window_start, window_bounds.window_end,
              usagemeter_private.budget_usage_v1(new, window_bounds.window_start, window_bounds.window_end));
  end if;
  return null;
end
$$;
comment on function usagemeter_private.start_budget_v1() is
  'AFTER INSERT row trigger on usage_budgets: checks the zone and currency, and starts the current window''s counter from stored usage.';
revoke all on function usagemeter_private.start_budget_v1() from public;

create trigger usage_budgets_start
  after insert on public.usage_budgets
  for each row execute function usagemeter_private.start_budget_v1();

-- Status and checks, as the caller sees them ------------------------------------------------------

create view public.usage_budget_status with (security_invoker = true) as
select b.id, b.tenant_id, b.user_id, b.metric, b.usage_limit, b.currency, b.period, b.time_zone, b.action_pattern,
       b.mode, b.thresholds, w.window_start, w.window_end, coalesce(k.used, 0::numeric) as used,
       greatest(b.usage_limit - coalesce(k.used, 0::numeric), 0::numeric) as remaining
from public.usage_budgets as b
cross join lateral usagemeter_private.budget_window_v1(b.period, b.time_zone, b.created_at, now()) as w
left join public.usage_budget_counters as k on k.budget_id = b.id and k.window_start = w.window_start;
comment on view public.usage_budget_status is
  'Each budget the caller may read, with its current window and what it has used and has left (RLS of the tables applies).';
revoke all on table public.usage_budget_status from public, anon, authenticated, service_role;
grant select on table public.usage_budget_status to authenticated, service_role;

-- "May I spend this much more now?": every budget that would count the spend, with what is left.
-- Security invoker: a caller sees (and is told about) only the budgets RLS lets them read.
create function public.check_usage_quota_v1(
  tenant_id uuid, user_id uuid, action text, events bigint default 1, tokens bigint default 0,
  cost numeric default 0
)
returns table (budget_id uuid, metric text, mode text, usage_limit numeric, used numeric, requested numeric,
               remaining numeric, window_start timestamptz, window_end timestamptz, allowed boolean)
language sql stable
set search_path = ''
as $$
  select s.id, s.metric, s.mode, s.usage_limit, s.used, spend.amount, s.remaining, s.window_start, s.window_end,
         s.mode = 'soft' or s.used + spend.amount <= s.usage_limit
  from public.usage_budget_status as s
  cross join lateral (
    select case s.metric when 'events' then check_usage_quota_v1.events::numeric
                         when 'tokens' then check_usage_quota_v1.tokens::numeric
                         else check_usage_quota_v1.cost end as amount
  ) as spend
  where case when check_usage_quota_v1.tenant_id is null
             then s.tenant_id is null and s.user_id = check_usage_quota_v1.user_id
             else s.tenant_id = check_usage_quota_v1.tenant_id
                  and (s.user_id is null or s.user_id = check_usage_quota_v1.user_id) end
    and (s.action_pattern is null
         or check_usage_quota_v1.action like replace(replace(s.action_pattern, '_', '\_'), '*', '%'))
    and s.window_start is not null
  order by s.id
$$;
comment on function public.check_usage_quota_v1(uuid, uuid, text, bigint, bigint, numeric) is
  'The budgets a spend would count against, with used, remaining and whether it is allowed now; advisory: only the write itself is enforced.';
revoke all on function public.check_usage_quota_v1(uuid, uuid, text, bigint, bigint, numeric) from public, anon;
grant execute on function public.check_usage_quota_v1(uuid, uuid, text, bigint, bigint, numeric)
  to authenticated, service_role;
