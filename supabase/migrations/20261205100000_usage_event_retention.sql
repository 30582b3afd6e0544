-- Retention: months of usage_events past a limit are archived (Parquet, checked) and dropped.
--
-- `usagemeter retention --keep-months N [--archive DIR]` does the work from Python (the archive is
-- a file on the machine running it); the database keeps the record and the steps that must be
-- atomic. A month goes through: archive written and verified against its partition (recorded
-- here), then detached (in one transaction that checks the partition still holds exactly what was
-- verified), its ids and keys released from usage_event_keys a batch at a time, then dropped.
-- Each step can be run again after a crash. Rollups are never touched: summaries and statements of a dropped month
-- still answer, from them; usage_archived_months_v1() tells readers which months have no raw
-- events any more.

create table usagemeter_private.usage_event_archives (
  month_start timestamptz primary key,
  partition_name text not null,
  events bigint not null,
  tokens_input bigint not null,
  tokens_output bigint not null,
  cost numeric not null,
  archive_path text,
  verified_at timestamptz,
  detached_at timestamptz,
  keys_freed_at timestamptz,
  dropped_at timestamptz,
  constraint usage_event_archives_month_start check (month_start = date_trunc('month', month_start, 'UTC'))
);
comment on table usagemeter_private.usage_event_archives is
  'Months of usage_events taken out by retention: what the partition held (rows and sums), where its archive is, and when it was verified, detached and dropped.';
comment on column usagemeter_private.usage_event_archives.events is 'Rows the partition held (events and correction entries).';
comment on column usagemeter_private.usage_event_archives.archive_path is
  'The Parquet file the rows were written to and checked against; NULL when they were dropped without an archive.';
revoke all on table usagemeter_private.usage_event_archives from public, anon, authenticated, service_role;
alter table usagemeter_private.usage_event_archives enable row level security;

-- Every monthly table of usage_events, attached or detached (a detached one is mid-retention).
create function usagemeter_private.usage_event_months_v1()
returns table (month_start timestamptz, partition_name text, attached boolean)
language sql stable security definer
set search_path = ''
as $$
  select pg_catalog.to_timestamp(pg_catalog.substr(c.relname, 14), 'YYYY_MM')::timestamp at time zone 'UTC',
         c.relname::text,
         exists (select from pg_catalog.pg_inherits as i
                 where i.inhrelid = c.oid and i.inhparent = 'public.usage_events'::pg_catalog.regclass)
  from pg_catalog.pg_class as c
  where c.relnamespace = 'usagemeter_private'::pg_catalog.regnamespace
    and c.relkind = 'r'
    and c.relname ~ '^usage_events_[0-9]{4}_[0-9]{2}$'
  order by 1
$$;
comment on function usagemeter_private.usage_event_months_v1() is
  'The monthly tables of usage_events (usage_events_YYYY_MM), with whether each is attached.';
revoke all on function usagemeter_private.usage_event_months_v1() from public;

-- What a month's table holds: rows and sums, the figures an archive is checked against.
create function usagemeter_private.usage_event_month_totals_v1(month_start timestamptz)
returns table (events bigint, tokens_input bigint, tokens_output bigint, cost numeric)
language plpgsql stable security definer
set search_path = ''
as $$
begin
  return query execute pg_catalog.format(
    'select count(*), coalesce(sum(tokens_input), 0)::bigint, coalesce(sum(tokens_output), 0)::bigint,'
    ' coalesce(sum(cost), 0) from usagemeter_private.%I',
    usagemeter_private.usage_event_partition_name_v1(month_start));
end
$$;
comment on function usagemeter_private.usage_event_month_totals_v1(timestamptz) is
  'Rows and token and cost sums of a month''s table of usage_events.';
revoke all on function usagemeter_private.usage_event_month_totals_v1(timestamptz) from public;

-- Records a month's archive as verified (or, with archive_path NULL, the totals of a month dropped
-- without one). Run again, it replaces the record of a month not yet detached.
create function usagemeter_private.record_usage_event_archive_v1(
  month_start timestamptz, events bigint, tokens_input bigint, tokens_output bigint, cost numeric, archive_path text
) returns void
language plpgsql security definer
set search_path = ''
as $$
begin
  insert into usagemeter_private.usage_event_archives as a
    (month_start, partition_name, events, tokens_input, tokens_output, cost, archive_path, verified_at)
  values (month_start, usagemeter_private.usage_event_partition_name_v1(month_start), events, tokens_input,
          tokens_output, cost, archive_path, case when archive_path is not null then pg_catalog.now() end)
  on conflict on constraint usage_event_archives_pkey do update
    set events = excluded.events, tokens_input = excluded.tokens_input, tokens_output = excluded.tokens_output,
        cost = excluded.cost, archive_path = excluded.archive_path, verified_at = excluded.verified_at
    where a.detached_at is null;
end
$$;
comment on function usagemeter_private.record_usage_event_archive_v1(timestamptz, bigint, bigint, bigint, numeric, text) is
  'Records what a month''s table holds and the archive verified against it, before the month is detached.';
revoke all on function usagemeter_private.record_usage_event_archive_v1(timestamptz, bigint, bigint, bigint, numeric, text) from public;

-- Detaches a month whose table still holds what its record says. The table is locked against
-- writes (SHARE: reads go on, and so do writes to other months) while it is summed; a row written
-- into the month since it was archived makes it refuse: nothing changes, run it again. DETACH then
-- holds the parent's ACCESS EXCLUSIVE lock only until the commit that follows at once. The month's
-- ids and keys stay reserved until free_usage_event_month_keys_v1 releases them.
create function usagemeter_private.detach_usage_event_month_v1(month_start timestamptz) returns bigint
language plpgsql security definer
set search_path = ''
as $$
declare
  partition_name text := usagemeter_private.usage_event_partition_name_v1(month_start);
  recorded usagemeter_private.usage_event_archives;
  held record;
begin
  select * into recorded from usagemeter_private.usage_event_archives as a
  where a.month_start = detach_usage_event_month_v1.month_start;
  if not found then
    raise exception 'usagemeter: % has no retention record; archive and verify it first', partition_name
      using errcode = '55000';
  end if;
  set local lock_timeout = '10s';
  execute pg_catalog.format('lock table usagemeter_private.%I in share mode', partition_name);
  select * into held from usagemeter_private.usage_event_month_totals_v1(month_start);
  if (held.events, held.tokens_input, held.tokens_output, held.cost)
     is distinct from (recorded.events, recorded.tokens_input, recorded.tokens_output, recorded.cost) then
    raise exception 'usagemeter: % changed since it was archived (% rows now, % recorded); nothing was detached',
      partition_name, held.events, recorded.events
      using errcode = '55000', hint = 'Run retention again: it archives the month anew.';
  end if;
  execute pg_catalog.format('alter table public.usage_events detach partition usagemeter_private.%I', partition_name);
  update usagemeter_private.usage_event_archives as a set detached_at = pg_catalog.now()
  where a.month_start = detach_usage_event_month_v1.month_start;
  return held.events;
end
$$;
comment on function usagemeter_private.detach_usage_event_month_v1(timestamptz) is
  'Detaches a month of usage_events whose table still holds what its retention record says; returns its rows.';
revoke all on function usagemeter_private.detach_usage_event_month_v1(timestamptz) from public;

-- Releases the ids and keys of a detached month, up to `batch` of them after `after_id` (in id
-- order), so that no transaction holds much: returns how many were released and the last id
-- looked at (NULL when the month is done).
-- Each id is an index probe of the key table's primary key: with tens of thousands of ids per
-- batch the planner would rather scan the whole table, once per batch, hence the two settings.
create function usagemeter_private.free_usage_event_month_keys_v1(month_start timestamptz, after_id uuid, batch int)
returns table (freed bigint, last_id uuid)
language plpgsql security definer
set search_path = ''
set enable_seqscan = off
set enable_bitmapscan = off
as $$
declare
  partition_name text := usagemeter_private.usage_event_partition_name_v1(month_start);
  ids uuid[];
  released bigint;
begin
  if not exists (select from usagemeter_private.usage_event_archives as a
                 where a.month_start = free_usage_event_month_keys_v1.month_start and a.detached_at is not null) then
    raise exception 'usagemeter: % is not detached by retention; its keys stay', partition_name
      using errcode = '55000';
  end if;
  execute pg_catalog.format(
    'select array_agg(s.id order by s.id) from (select e.id from usagemeter_private.%I as e'
    ' where e.id > coalesce($1, ''00000000-0000-0000-0000-000000000000''::uuid) order by e.id limit $2) as s',
    partition_name)
  into ids
  using after_id, batch;
  delete from usagemeter_private.usage_event_keys as k where k.id = any (ids);
  get diagnostics released = row_count;
  return query select released, ids[pg_catalog.array_length(ids, 1)];
end
$$;
comment on function usagemeter_private.free_usage_event_month_keys_v1(timestamptz, uuid, int) is
  'Releases the ids and idempotency keys of a month retention detached, a batch at a time.';
revoke all on function usagemeter_private.free_usage_event_month_keys_v1(timestamptz, uuid, int) from public;

create function usagemeter_private.usage_event_month_keys_freed_v1(month_start timestamptz) returns void
language sql security definer
set search_path = ''
as $$
  update usagemeter_private.usage_event_archives as a set keys_freed_at = coalesce(a.keys_freed_at, pg_catalog.now())
  where a.month_start = usage_event_month_keys_freed_v1.month_start and a.detached_at is not null
$$;
comment on function usagemeter_private.usage_event_month_keys_freed_v1(timestamptz) is
  'Records that every id and key of a detached month was released (its table may be dropped).';
revoke all on function usagemeter_private.usage_event_month_keys_freed_v1(timestamptz) from public;

create function usagemeter_private.drop_usage_event_month_v1(month_start timestamptz) returns void
language plpgsql security definer
set search_path = ''
as $$
declare
  partition_name text := usagemeter_private.usage_event_partition_name_v1(month_start);
begin
  if not exists (select from usagemeter_private.usage_event_archives as a
                 where a.month_start = drop_usage_event_month_v1.month_start and a.keys_freed_at is not null) then
    raise exception 'usagemeter: % is not detached by retention with its keys released; it is not dropped',
      partition_name
      using errcode = '55000';
  end if;
  execute pg_catalog.format('drop table if exists usagemeter_private.%I', partition_name);
  update usagemeter_private.usage_event_archives as a set dropped_at = coalesce(a.dropped_at, pg_catalog.now())
  where a.month_start = drop_usage_event_month_v1.month_start;
end
$$;
comment on function usagemeter_private.drop_usage_event_month_v1(timestamptz) is
  'Drops the table of a month that retention detached.';
revoke all on function usagemeter_private.drop_usage_event_month_v1(timestamptz) from public;

-- For readers: the months whose raw events are archived (summaries and statements still answer
-- from the rollups; listings and exports of them come back empty).
create function public.usage_archived_months_v1()
returns table (month_start timestamptz, month_end timestamptz, archived boolean)
language sql stable security definer
set search_path = ''
as $$
  select a.month_start, a.month_start + interval '1 month', a.archive_path is not null
  from usagemeter_private.usage_event_archives as a
  where a.detached_at is not null
  order by 1
$$;
comment on function public.usage_archived_months_v1() is
  'The UTC months whose raw usage events retention has taken out (archived = a verified Parquet archive was kept); their summaries and statements still answer from the rollups.';
revoke all on function public.usage_archived_months_v1() from public, anon;
grant execute on function public.usage_archived_months_v1() to authenticated, service_role;
