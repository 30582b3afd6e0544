-- Queries of the read flow that are fixed text: rollup checks and rebuilds (summaries compose theirs in report_sql.py).
-- One query per `-- name --` marker, with a comment saying what it is for. Parameters are %(name)s
-- placeholders bound by psycopg; no SQL is ever built from values.

-- rollup_differences --
-- Groups where a rollup plus the unfolded deltas and the raw events disagree (none when the triggers did
-- their job), outside the months whose raw events retention took out.
with raw as (
  select date_trunc('hour', created_at, 'UTC') as bucket, tenant_id, user_id, action, model,
         sum(event_count)::bigint as events, sum(tokens_input)::bigint as tokens_input,
         sum(tokens_output)::bigint as tokens_output, sum(tokens_total)::bigint as tokens_total, sum(cost) as cost
  from public.usage_events group by 1, 2, 3, 4, 5
  having (sum(event_count), sum(tokens_input), sum(tokens_output), sum(tokens_total), sum(cost)) <> (0, 0, 0, 0, 0)
), raw_days as (
  select date_trunc('day', bucket, 'UTC') as bucket, tenant_id, user_id, action, model,
         sum(events)::bigint as events, sum(tokens_input)::bigint as tokens_input,
         sum(tokens_output)::bigint as tokens_output, sum(tokens_total)::bigint as tokens_total, sum(cost) as cost
  from raw group by 1, 2, 3, 4, 5
), raw_tenant_days as (
  select bucket, tenant_id, action, model, sum(events)::bigint as events, sum(tokens_input)::bigint as tokens_input,
         sum(tokens_output)::bigint as tokens_output, sum(tokens_total)::bigint as tokens_total, sum(cost) as cost
  from raw_days where tenant_id is not null group by 1, 2, 3, 4
), deltas as (
  select bucket, tenant_id, user_id, action, model, events, tokens_input, tokens_output, tokens_total, cost
  from public.usage_rollup_deltas
), hours as (
  select bucket, tenant_id, user_id, action, model, sum(events)::bigint as events,
         sum(tokens_input)::bigint as tokens_input, sum(tokens_output)::bigint as tokens_output,
         sum(tokens_total)::bigint as tokens_total, sum(cost) as cost
  from (select bucket, tenant_id, user_id, action, model, events, tokens_input, tokens_output, tokens_total, cost
        from public.usage_rollup_hourly
        union all table deltas) as folded_and_not
  group by 1, 2, 3, 4, 5
  having (sum(events), sum(tokens_input), sum(tokens_output), sum(tokens_total), sum(cost)) <> (0, 0, 0, 0, 0)
), days as (
  select day, tenant_id, user_id, action, model, sum(events)::bigint as events,
         sum(tokens_input)::bigint as tokens_input, sum(tokens_output)::bigint as tokens_output,
         sum(tokens_total)::bigint as tokens_total, sum(cost) as cost
  from (select day, tenant_id, user_id, action, model, events, tokens_input, tokens_output, tokens_total, cost
        from public.usage_rollup_daily
        union all
        select date_trunc('day', bucket, 'UTC'), tenant_id, user_id, action, model, events, tokens_input,
               tokens_output, tokens_total, cost
        from deltas) as folded_and_not
  group by 1, 2, 3, 4, 5
  having (sum(events), sum(tokens_input), sum(tokens_output), sum(tokens_total), sum(cost)) <> (0, 0, 0, 0, 0)
), tenant_days as (
  select day, tenant_id, action, model, sum(events)::bigint as events,
         sum(tokens_input)::bigint as tokens_input, sum(tokens_output)::bigint as tokens_output,
         sum(tokens_total)::bigint as tokens_total, sum(cost) as cost
  from (select day, tenant_id, action, model, events, tokens_input, tokens_output, tokens_total, cost
        from public.usage_rollup_tenant_daily
        union all
        select date_trunc('day', bucket, 'UTC'), tenant_id, action, model, events, tokens_input, tokens_output,
               tokens_total, cost
        from deltas where tenant_id is not null) as folded_and_not
  group by 1, 2, 3, 4
  having (sum(events), sum(tokens_input), sum(tokens_output), sum(tokens_total), sum(cost)) <> (0, 0, 0, 0, 0)
)
select count(*) from (
  select 'hour', bucket, tenant_id, user_id, action, model
  from ((table raw except table hours) union all (table hours except table raw)) as mismatched
  union
  select 'day', bucket, tenant_id, user_id, action, model
  from ((table raw_days except table days) union all (table days except table raw_days)) as mismatched_days
  union
  select 'tenant day', bucket, tenant_id, null, action, model
  from ((table raw_tenant_days except table tenant_days) union all (table tenant_days except table raw_tenant_days))
    as mismatched_tenant_days
) as differing_groups (kind, bucket, tenant_id, user_id, action, model)
-- Months retention took out keep their rollups and have no raw events to compare them with.
where not exists (select from public.usage_archived_months_v1() as a
                  where differing_groups.bucket >= a.month_start and differing_groups.bucket < a.month_end)

-- fold_rollups --
-- Move the unfolded deltas into the rollups now; NULL when another fold is running.
select usagemeter_private.fold_usage_rollups_v1()

-- lock_rollups_for_rebuild --
-- First wait for a running fold and keep others out (writers only try this lock, so none waits for it).
select pg_advisory_xact_lock('public.usage_rollup_deltas'::regclass::oid::int, 0)

-- lock_usage_for_rebuild --
-- Then hold writers off while the rollups are rebuilt, so no event lands between the delete and the insert.
lock table public.usage_events in share mode

-- clear_rollups --
-- Forget the rollups and the unfolded deltas (the rebuild refills the rollups in the same transaction),
-- except in months whose raw events retention took out: their rollups are all that is left of them.
delete from public.usage_rollup_deltas as r
  where not exists (select from public.usage_archived_months_v1() as a where r.bucket >= a.month_start and r.bucket < a.month_end);
delete from public.usage_rollup_hourly as r
  where not exists (select from public.usage_archived_months_v1() as a where r.bucket >= a.month_start and r.bucket < a.month_end);
delete from public.usage_rollup_daily as r
  where not exists (select from public.usage_archived_months_v1() as a where r.day >= a.month_start and r.day < a.month_end);
delete from public.usage_rollup_tenant_daily as r
  where not exists (select from public.usage_archived_months_v1() as a where r.day >= a.month_start and r.day < a.month_end)

-- rebuild_hourly_rollup --
-- The hourly rollup recomputed from every raw event (corrections count by event_count: a void -1), outside
-- the months retention took out (clear_rollups kept theirs).
insert into public.usage_rollup_hourly
  (bucket, tenant_id, user_id, action, module_id, model, events, tokens_input, tokens_output, tokens_total, cost)
select date_trunc('hour', created_at, 'UTC'), tenant_id, user_id, action, split_part(action, ':', 1), model,
       sum(event_count), sum(tokens_input), sum(tokens_output), sum(tokens_total), sum(cost)
from public.usage_events as e
where not exists (select from public.usage_archived_months_v1() as a
                  where e.created_at >= a.month_start and e.created_at < a.month_end)
group by 1, 2, 3, 4, 6
having (sum(event_count), sum(tokens_input), sum(tokens_output), sum(cost)) <> (0, 0, 0, 0)

-- rebuild_tenant_daily_rollup --
-- The tenant-wide daily rollup recomputed from the daily one, outside the months retention took out.
insert into public.usage_rollup_tenant_daily
  (day, tenant_id, action, module_id, model, events, tokens_input, tokens_output, tokens_total, cost)
select day, tenant_id, action, module_id, model, sum(events), sum(tokens_input), sum(tokens_output),
       sum(tokens_total), sum(cost)
from public.usage_rollup_daily as r
where tenant_id is not null
  and not exists (select from public.usage_archived_months_v1() as a where r.day >= a.month_start and r.day < a.month_end)
group by 1, 2, 3, 4, 5

-- rebuild_daily_rollup --
-- The daily rollup recomputed from the hourly one, outside the months retention took out.
insert into public.usage_rollup_daily
  (day, tenant_id, user_id, action, module_id, model, events, tokens_input, tokens_output, tokens_total, cost)
select date_trunc('day', bucket, 'UTC'), tenant_id, user_id, action, module_id, model,
       sum(events), sum(tokens_input), sum(tokens_output), sum(tokens_total), sum(cost)
from public.usage_rollup_hourly as r
where not exists (select from public.usage_archived_months_v1() as a
                  where r.bucket >= a.month_start and r.bucket < a.month_end)
group by 1, 2, 3, 4, 5, 6

-- archived_months --
-- The UTC months in [start, end) whose raw events retention took out (their rollups are kept).
select month_start, month_end, archived from public.usage_archived_months_v1()
where month_start < %(end)s and month_end > %(start)s
order by month_start

-- clear_rollups_distributed --
-- As clear_rollups, on a database distributed by owner: the archived months are read once on the coordinator
-- (Citus runs no volatile function as a table on the shards), then every shard deletes what is not in them.
with archived as materialized (select month_start, month_end from public.usage_archived_months_v1())
delete from public.usage_rollup_deltas as r
  where not exists (select from archived as a where r.bucket >= a.month_start and r.bucket < a.month_end);
with archived as materialized (select month_start, month_end from public.usage_archived_months_v1())
delete from public.usage_rollup_hourly as r
  where not exists (select from archived as a where r.bucket >= a.month_start and r.bucket < a.month_end);
with archived as materialized (select month_start, month_end from public.usage_archived_months_v1())
delete from public.usage_rollup_daily as r
  where not exists (select from archived as a where r.day >= a.month_start and r.day < a.month_end);
with archived as materialized (select month_start, month_end from public.usage_archived_months_v1())
delete from public.usage_rollup_tenant_daily as r
  where not exists (select from archived as a where r.day >= a.month_start and r.day < a.month_end)

-- rebuild_hourly_rollup_distributed --
-- As rebuild_hourly_rollup, on a database distributed by owner (docs/distributed.md): each group names its
-- owner_id, so Citus runs the INSERT ... SELECT on every shard at once (the rollup is co-located with the events).
with archived as materialized (select month_start, month_end from public.usage_archived_months_v1())
insert into public.usage_rollup_hourly
  (owner_id, bucket, tenant_id, user_id, action, module_id, model, events, tokens_input, tokens_output,
   tokens_total, cost)
select owner_id, date_trunc('hour', created_at, 'UTC'), tenant_id, user_id, action, split_part(action, ':', 1),
       model, sum(event_count), sum(tokens_input), sum(tokens_output), sum(tokens_total), sum(cost)
from public.usage_events as e
where not exists (select from archived as a where e.created_at >= a.month_start and e.created_at < a.month_end)
group by owner_id, date_trunc('hour', created_at, 'UTC'), tenant_id, user_id, action, model
having (sum(event_count), sum(tokens_input), sum(tokens_output), sum(cost)) <> (0, 0, 0, 0)

-- rebuild_daily_rollup_distributed --
-- As rebuild_daily_rollup, naming owner_id (co-located, on every shard at once).
with archived as materialized (select month_start, month_end from public.usage_archived_months_v1())
insert into public.usage_rollup_daily
  (owner_id, day, tenant_id, user_id, action, module_id, model, events, tokens_input, tokens_output, tokens_total,
   cost)
select owner_id, date_trunc('day', bucket, 'UTC'), tenant_id, user_id, action, module_id, model,
       sum(events), sum(tokens_input), sum(tokens_output), sum(tokens_total), sum(cost)
from public.usage_rollup_hourly as r
where not exists (select from archived as a where r.bucket >= a.month_start and r.bucket < a.month_end)
group by owner_id, date_trunc('day', bucket, 'UTC'), tenant_id, user_id, action, module_id, model

-- rebuild_tenant_daily_rollup_distributed --
-- As rebuild_tenant_daily_rollup, naming owner_id (co-located, on every shard at once).
with archived as materialized (select month_start, month_end from public.usage_archived_months_v1())
insert into public.usage_rollup_tenant_daily
  (owner_id, day, tenant_id, action, module_id, model, events, tokens_input, tokens_output, tokens_total, cost)
select owner_id, day, tenant_id, action, module_id, model, sum(events), sum(tokens_input), sum(tokens_output),
       sum(tokens_total), sum(cost)
from public.usage_rollup_daily as r
where tenant_id is not null
  and not exists (select from archived as a where r.day >= a.month_start and r.day < a.month_end)
group by owner_id, day, tenant_id, action, module_id, model
