-- Hourly and daily (UTC) rollups of usage_events, kept exact by statement-level triggers: per
-- tenant, user and action, and per tenant and action for tenant-wide questions.
--
-- Summaries over millions of events read these aggregates instead of raw rows. Every INSERT,
-- UPDATE or DELETE of usage_events adds its delta to the rollup in the same transaction (one
-- aggregated upsert per statement, from the statement's transition tables, not one per row), so
-- the rollup always equals the aggregation of the raw rows it covers: late events, corrections
-- by the service role and cascaded tenant deletions included, visible the moment they commit.
-- Writers never wait for a rollup job; two writers contend only when they touch the same
-- (hour, tenant, user, action) at once, and then only until the first commits.
-- Upserts are applied in key order, so concurrent writers cannot deadlock on them.

create table public.usage_rollup_hourly (
  bucket timestamptz not null,
  tenant_id uuid,  -- no foreign key: deleting a tenant cascades to usage_events, whose trigger zeroes these rows
  user_id uuid,
  action text not null,
  module_id text not null,
  events bigint not null,
  tokens_input bigint not null,
  tokens_output bigint not null,
  tokens_total bigint not null,
  constraint usage_rollup_hourly_bucket_is_hour check (bucket = date_trunc('hour', bucket, 'UTC'))
);

create unique index usage_rollup_hourly_key
  on public.usage_rollup_hourly (tenant_id, user_id, action, bucket) nulls not distinct;
create index usage_rollup_hourly_tenant_bucket_idx
  on public.usage_rollup_hourly (tenant_id, bucket)
  include (user_id, action, module_id, events, tokens_input, tokens_output, tokens_total);
create index usage_rollup_hourly_personal_user_bucket_idx
  on public.usage_rollup_hourly (user_id, bucket)
  include (action, module_id, events, tokens_input, tokens_output, tokens_total)
  where tenant_id is null;

comment on table public.usage_rollup_hourly is
  'usage_events aggregated per UTC hour, tenant, user and action; maintained by triggers on usage_events, always exact.';
comment on column public.usage_rollup_hourly.bucket is 'Start of the UTC hour the events happened in (created_at truncated to the hour).';
comment on column public.usage_rollup_hourly.tenant_id is 'Tenant of the events; NULL for personal usage.';
comment on column public.usage_rollup_hourly.user_id is 'User of the events (NULL for tenant-level system events).';
comment on column public.usage_rollup_hourly.action is 'Action of the events.';
comment on column public.usage_rollup_hourly.module_id is 'Module of the events: the action''s first segment.';
comment on column public.usage_rollup_hourly.events is 'Number of events.';
comment on column public.usage_rollup_hourly.tokens_input is 'Sum of tokens_input.';
comment on column public.usage_rollup_hourly.tokens_output is 'Sum of tokens_output.';
comment on column public.usage_rollup_hourly.tokens_total is 'Sum of tokens_total.';

create table public.usage_rollup_daily (
  day timestamptz not null,
  tenant_id uuid,
  user_id uuid,
  action text not null,
  module_id text not null,
  events bigint not null,
  tokens_input bigint not null,
  tokens_output bigint not null,
  tokens_total bigint not null,
  constraint usage_rollup_daily_day_is_utc_midnight check (day = date_trunc('day', day, 'UTC'))
);

create unique index usage_rollup_daily_key
  on public.usage_rollup_daily (tenant_id, user_id, action, day) nulls not distinct;
create index usage_rollup_daily_tenant_day_idx
  on public.usage_rollup_daily (tenant_id, day)
  include (user_id, action, module_id, events, tokens_input, tokens_output, tokens_total);
create index usage_rollup_daily_personal_user_day_idx
  on public.usage_rollup_daily (user_id, day)
  include (action, module_id, events, tokens_input, tokens_output, tokens_total)
  where tenant_id is null;

comment on table public.usage_rollup_daily is
  'usage_events aggregated per UTC day, tenant, user and action; maintained with the hourly rollup, always exact.';
comment on column public.usage_rollup_daily.day is 'Start (UTC midnight) of the UTC day the events happened in.';
comment on column public.usage_rollup_daily.tenant_id is 'Tenant of the events; NULL for personal usage.';
comment on column public.usage_rollup_daily.user_id is 'User of the events (NULL for tenant-level system events).';
comment on column public.usage_rollup_daily.action is 'Action of the events.';
comment on column public.usage_rollup_daily.module_id is 'Module of the events: the action''s first segment.';
comment on column public.usage_rollup_daily.events is 'Number of events.';
comment on column public.usage_rollup_daily.tokens_input is 'Sum of tokens_input.';
comment on column public.usage_rollup_daily.tokens_output is 'Sum of tokens_output.';
comment on column public.usage_rollup_daily.tokens_total is 'Sum of tokens_total.';

create table public.usage_rollup_tenant_daily (
  day timestamptz not null,
  tenant_id uuid not null,
  action text not null,
  module_id text not null,
  events bigint not null,
  tokens_input bigint not null,
  tokens_output bigint not null,
  tokens_total bigint not null,
  constraint usage_rollup_tenant_daily_day_is_utc_midnight check (day = date_trunc('day', day, 'UTC')),
  constraint usage_rollup_tenant_daily_key unique (tenant_id, day, action)
);

comment on table public.usage_rollup_tenant_daily is
  'Tenant usage per UTC day and action, all users together: the smallest rollup for tenant dashboards and billing.';
comment on column public.usage_rollup_tenant_daily.day is 'Start (UTC midnight) of the UTC day the events happened in.';
comment on column public.usage_rollup_tenant_daily.tenant_id is 'Tenant of the events (personal usage is not in this table).';
comment on column public.usage_rollup_tenant_daily.action is 'Action of the events.';
comment on column public.usage_rollup_tenant_daily.module_id is 'Module of the events: the action''s first segment.';
comment on column public.usage_rollup_tenant_daily.events is 'Number of events.';
comment on column public.usage_rollup_tenant_daily.tokens_input is 'Sum of tokens_input.';
comment on column public.usage_rollup_tenant_daily.tokens_output is 'Sum of tokens_output.';
comment on column public.usage_rollup_tenant_daily.tokens_total is 'Sum of tokens_total.';

-- Same visibility as usage_events; read-only for everyone but the owner (the triggers write).
revoke all on table public.usage_rollup_hourly from public, anon, authenticated, service_role;
grant select on table public.usage_rollup_hourly to authenticated, service_role;
alter table public.usage_rollup_hourly enable row level security;

create policy "Members read their tenants' rollups; users read their personal rollups"
  on public.usage_rollup_hourly for select to authenticated
  using (
    tenant_id = any ((select private.tenant_ids_of_current_user_v1())::uuid[])
    or (tenant_id is null and user_id = (select auth.uid()))
  );

revoke all on table public.usage_rollup_tenant_daily from public, anon, authenticated, service_role;
grant select on table public.usage_rollup_tenant_daily to authenticated, service_role;
alter table public.usage_rollup_tenant_daily enable row level security;

create policy "Members read their tenants' rollups"
  on public.usage_rollup_tenant_daily for select to authenticated
  using (tenant_id = any ((select private.tenant_ids_of_current_user_v1())::uuid[]));

revoke all on table public.usage_rollup_daily from public, anon, authenticated, service_role;
grant select on table public.usage_rollup_daily to authenticated, service_role;
alter table public.usage_rollup_daily enable row level security;

create policy "Members read their tenants' rollups; users read their personal rollups"
  on public.usage_rollup_daily for select to authenticated
  using (
    tenant_id = any ((select private.tenant_ids_of_current_user_v1())::uuid[])
    or (tenant_id is null and user_id = (select auth.uid()))
  );

-- The delta of one statement, per hour, tenant, user and action: added rows count +1, removed
-- rows -1. One branch per statement kind (a trigger has only the transition tables of its kind);
-- each branch is static SQL, planned once per session.
create function private.apply_usage_rollup_delta_v1() returns trigger
language plpgsql security definer
set search_path = ''
as $$
begin
  if tg_op = 'INSERT' then
    with changes as (select *, 1 as sign from added_rows),
    hourly as (
      select date_trunc('hour', created_at, 'UTC') as bucket, tenant_id, user_id, action,
             sum(sign) as events, sum(sign * tokens_input) as tokens_input,
             sum(sign * tokens_output) as tokens_output, sum(sign * tokens_total) as tokens_total
      from changes group by 1, 2, 3, 4
    ),
    upserted_hours as (
      insert into public.usage_rollup_hourly as r
        (bucket, tenant_id, user_id, action, module_id, events, tokens_input, tokens_output, tokens_total)
      select bucket, tenant_id, user_id, action, split_part(action, ':', 1), events, tokens_input, tokens_output,
             tokens_total
      from hourly order by tenant_id, user_id, action, bucket  -- one lock order: writers cannot deadlock
      on conflict (tenant_id, user_id, action, bucket) do update
        set events = r.events + excluded.events, tokens_input = r.tokens_input + excluded.tokens_input,
            tokens_output = r.tokens_output + excluded.tokens_output,
            tokens_total = r.tokens_total + excluded.tokens_total
    ),
    upserted_days as (
      insert into public.usage_rollup_daily as r
        (day, tenant_id, user_id, action, module_id, events, tokens_input, tokens_output, tokens_total)
      select date_trunc('day', bucket, 'UTC'), tenant_id, user_id, action, split_part(action, ':', 1), sum(events),
             sum(tokens_input), sum(tokens_output), sum(tokens_total)
      from hourly group by 1, 2, 3, 4 order by 2, 3, 4, 1
      on conflict (tenant_id, user_id, action, day) do update
        set events = r.events + excluded.events, tokens_input = r.tokens_input + excluded.tokens_input,
            tokens_output = r.tokens_output + excluded.tokens_output,
            tokens_total = r.tokens_total + excluded.tokens_total
    )
    insert into public.usage_rollup_tenant_daily as r
      (day, tenant_id, action, module_id, events, tokens_input, tokens_output, tokens_total)
    select date_trunc('day', bucket, 'UTC'), tenant_id, action, split_part(action, ':', 1), sum(events),
           sum(tokens_input), sum(tokens_output), sum(tokens_total)
    from hourly where tenant_id is not null group by 1, 2, 3 order by 2, 1, 3
    on conflict (tenant_id, day, action) do update
      set events = r.events + excluded.events, tokens_input = r.tokens_input + excluded.tokens_input,
          tokens_output = r.tokens_output + excluded.tokens_output,
          tokens_total = r.tokens_total + excluded.tokens_total;
  elsif tg_op = 'DELETE' then
    with changes as (select *, -1 as sign from removed_rows),
    hourly as (
      select date_trunc('hour', created_at, 'UTC') as bucket, tenant_id, user_id, action,
             sum(sign) as events, sum(sign * tokens_input) as tokens_input,
             sum(sign * tokens_output) as tokens_output, sum(sign * tokens_total) as tokens_total
      from changes group by 1, 2, 3, 4
    ),
    upserted_hours as (
      insert into public.usage_rollup_hourly as r
        (bucket, tenant_id, user_id, action, module_id, events, tokens_input, tokens_output, tokens_total)
      select bucket, tenant_id, user_id, action, split_part(action, ':', 1), events, tokens_input, tokens_output,
             tokens_total
      from hourly order by tenant_id, user_id, action, bucket  -- one lock order: writers cannot deadlock
      on conflict (tenant_id, user_id, action, bucket) do update
        set events = r.events + excluded.events, tokens_input = r.tokens_input + excluded.tokens_input,
            tokens_output = r.tokens_output + excluded.tokens_output,
            tokens_total = r.tokens_total + excluded.tokens_total
    ),
    upserted_days as (
      insert into public.usage_rollup_daily as r
        (day, tenant_id, user_id, action, module_id, events, tokens_input, tokens_output, tokens_total)
      select date_trunc('day', bucket, 'UTC'), tenant_id, user_id, action, split_part(action, ':', 1), sum(events),
             sum(tokens_input), sum(tokens_output), sum(tokens_total)
      from hourly group by 1, 2, 3, 4 order by 2, 3, 4, 1
      on conflict (tenant_id, user_id, action, day) do update
        set events = r.events + excluded.events, tokens_input = r.tokens_input + excluded.tokens_input,
            tokens_output = r.tokens_output + excluded.tokens_output,
            tokens_total = r.tokens_total + excluded.tokens_total
    )
    insert into public.usage_rollup_tenant_daily as r
      (day, tenant_id, action, module_id, events, tokens_input, tokens_output, tokens_total)
    select date_trunc('day', bucket, 'UTC'), tenant_id, action, split_part(action, ':', 1), sum(events),
           sum(tokens_input), sum(tokens_output), sum(tokens_total)
    from hourly where tenant_id is not null group by 1, 2, 3 order by 2, 1, 3
    on conflict (tenant_id, day, action) do update
      set events = r.events + excluded.events, tokens_input = r.tokens_input + excluded.tokens_input,
          tokens_output = r.tokens_output + excluded.tokens_output,
          tokens_total = r.tokens_total + excluded.tokens_total;
  else
    with changes as (select *, 1 as sign from added_rows union all select *, -1 as sign from removed_rows),
    hourly as (
      select date_trunc('hour', created_at, 'UTC') as bucket, tenant_id, user_id, action,
             sum(sign) as events, sum(sign * tokens_input) as tokens_input,
             sum(sign * tokens_output) as tokens_output, sum(sign * tokens_total) as tokens_total
      from changes group by 1, 2, 3, 4
    ),
    upserted_hours as (
      insert into public.usage_rollup_hourly as r
        (bucket, tenant_id, user_id, action, module_id, events, tokens_input, tokens_output, tokens_total)
      select bucket, tenant_id, user_id, action, split_part(action, ':', 1), events, tokens_input, tokens_output,
             tokens_total
      from hourly order by tenant_id, user_id, action, bucket  -- one lock order: writers cannot deadlock
      on conflict (tenant_id, user_id, action, bucket) do update
        set events = r.events + excluded.events, tokens_input = r.tokens_input + excluded.tokens_input,
            tokens_output = r.tokens_output + excluded.tokens_output,
            tokens_total = r.tokens_total + excluded.tokens_total
    ),
    upserted_days as (
      insert into public.usage_rollup_daily as r
        (day, tenant_id, user_id, action, module_id, events, tokens_input, tokens_output, tokens_total)
      select date_trunc('day', bucket, 'UTC'), tenant_id, user_id, action, split_part(action, ':', 1), sum(events),
             sum(tokens_input), sum(tokens_output), sum(tokens_total)
      from hourly group by 1, 2, 3, 4 order by 2, 3, 4, 1
      on conflict (tenant_id, user_id, action, day) do update
        set events = r.events + excluded.events, tokens_input = r.tokens_input + excluded.tokens_input,
            tokens_output = r.tokens_output + excluded.tokens_output,
            tokens_total = r.tokens_total + excluded.tokens_total
    )
    insert into public.usage_rollup_tenant_daily as r
      (day, tenant_id, action, module_id, events, tokens_input, tokens_output, tokens_total)
    select date_trunc('day', bucket, 'UTC'), tenant_id, action, split_part(action, ':', 1), sum(events),
           sum(tokens_input), sum(tokens_output), sum(tokens_total)
    from hourly where tenant_id is not null group by 1, 2, 3 order by 2, 1, 3
    on conflict (tenant_id, day, action) do update
      set events = r.events + excluded.events, tokens_input = r.tokens_input + excluded.tokens_input,
          tokens_output = r.tokens_output + excluded.tokens_output,
          tokens_total = r.tokens_total + excluded.tokens_total;
  end if;
  -- Corrections can bring a group to zero; such rows stay (summaries skip groups without events).
  return null;
end
$$;
comment on function private.apply_usage_rollup_delta_v1() is
  'Statement trigger on usage_events: adds the statement''s aggregated delta to the three rollups.';
revoke all on function private.apply_usage_rollup_delta_v1() from public;

create trigger usage_rollup_after_insert
  after insert on public.usage_events
  referencing new table as added_rows
  for each statement execute function private.apply_usage_rollup_delta_v1();
create trigger usage_rollup_after_update
  after update on public.usage_events
  referencing old table as removed_rows new table as added_rows
  for each statement execute function private.apply_usage_rollup_delta_v1();
create trigger usage_rollup_after_delete
  after delete on public.usage_events
  referencing old table as removed_rows
  for each statement execute function private.apply_usage_rollup_delta_v1();

-- Events recorded before this migration.
insert into public.usage_rollup_hourly
  (bucket, tenant_id, user_id, action, module_id, events, tokens_input, tokens_output, tokens_total)
select date_trunc('hour', created_at, 'UTC'), tenant_id, user_id, action, split_part(action, ':', 1),
       count(*), sum(tokens_input), sum(tokens_output), sum(tokens_total)
from public.usage_events
group by 1, 2, 3, 4;

insert into public.usage_rollup_daily
  (day, tenant_id, user_id, action, module_id, events, tokens_input, tokens_output, tokens_total)
select date_trunc('day', bucket, 'UTC'), tenant_id, user_id, action, module_id,
       sum(events), sum(tokens_input), sum(tokens_output), sum(tokens_total)
from public.usage_rollup_hourly
group by 1, 2, 3, 4, 5;

insert into public.usage_rollup_tenant_daily
  (day, tenant_id, action, module_id, events, tokens_input, tokens_output, tokens_total)
select day, tenant_id, action, module_id, sum(events), sum(tokens_input), sum(tokens_output), sum(tokens_total)
from public.usage_rollup_daily
where tenant_id is not null
group by 1, 2, 3, 4;
