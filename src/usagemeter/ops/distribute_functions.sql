-- usagemeter db distribute, part two: the ledger's functions that must work differently on the cluster (run
-- after distribute.sql, in its transaction). Same rules, results and errors as the single-node functions
-- (migration 20261205090000).

-- Corrections: what changes is how they find and write an event:
-- - An event is looked up by id over every shard first (ids are unique per owner on the cluster), then
--   locked on its owner's shard (Citus runs FOR UPDATE only in a query routed to one shard). Two owners
--   holding the same id (a deliberate reuse: ids are random UUIDs) is refused as ambiguous.
-- - The entry names owner_id, which the coordinator routes it by.
-- - The mark that lets the rate trigger accept a correction entry is set with SET LOCAL, which Citus
--   propagates to the worker where the trigger runs (set_config is not propagated).

create or replace function usagemeter_private.corrected_event_v1(event_id uuid)
returns table (original public.usage_events, events bigint, tokens_input bigint, tokens_output bigint, cost numeric)
language plpgsql
set search_path = ''
as $$
declare
  owners uuid[];
  found_event public.usage_events;
begin
  select array_agg(distinct e.owner_id) into owners from public.usage_events as e where e.id = event_id;
  if cardinality(owners) > 1 then
    raise exception 'usagemeter: event id % is held by % owners on this distributed ledger', event_id,
      cardinality(owners)
      using errcode = '21000', hint = 'Ids are unique per owner here: correct the event through SQL naming its owner_id.';
  end if;
  select e.* into found_event from public.usage_events as e
  where e.owner_id = owners[1] and e.id = event_id for update;
  if not found then
    raise exception 'usagemeter: no usage event has id %', event_id
      using errcode = 'P0002', hint = 'Give the id of an event (usagemeter list shows them).';
  end if;
  if found_event.correction_kind is not null then
    raise exception 'usagemeter: % is a correction entry of event %; correct the event itself', event_id,
      found_event.corrects_event_id
      using errcode = '22023';
  end if;
  return query
    select found_event, sum(e.event_count)::bigint, sum(e.tokens_input)::bigint, sum(e.tokens_output)::bigint,
           sum(e.cost)
    from public.usage_events as e
    where e.owner_id = found_event.owner_id and (e.id = event_id or e.corrects_event_id = event_id);
end
$$;

-- The mark the rate trigger checks, for the rest of the transaction, on the coordinator and the workers.
create function usagemeter_private.mark_correcting_event_v1(event_id uuid) returns void
language plpgsql set search_path = '' as $fn$
begin
  execute pg_catalog.format('set local usagemeter.correcting_event = %L', coalesce(event_id::text, ''));
end
$fn$;
comment on function usagemeter_private.mark_correcting_event_v1(uuid) is
  'On a Citus coordinator: marks (or, given NULL, unmarks) the event a correction function is writing an entry for, by SET LOCAL so the shard''s rate trigger sees it.';
revoke all on function usagemeter_private.mark_correcting_event_v1(uuid) from public;

create or replace function public.void_usage_event_v1(event_id uuid, reason text) returns uuid
language plpgsql security definer
set search_path = ''
as $$
declare
  current record;
  entry_id uuid := gen_random_uuid();
begin
  if reason is null or btrim(reason) = '' then
    raise exception 'usagemeter: a void needs a reason' using errcode = '22023';
  end if;
  select * into current from usagemeter_private.corrected_event_v1(event_id);
  if current.events = 0 then
    raise exception 'usagemeter: event % is already void', event_id using errcode = '22023';
  end if;
  perform usagemeter_private.mark_correcting_event_v1(event_id);
  insert into public.usage_events
    (id, owner_id, tenant_id, user_id, action, module_id, tokens_input, tokens_output, metadata, created_at, cost,
     corrects_event_id, correction_kind, correction_reason)
  values (entry_id, (current.original).owner_id, (current.original).tenant_id, (current.original).user_id,
          (current.original).action, (current.original).module_id, -current.tokens_input, -current.tokens_output,
          jsonb_strip_nulls(jsonb_build_object('model', (current.original).model)),
          (current.original).created_at, -current.cost, event_id, 'void', reason);
  perform usagemeter_private.mark_correcting_event_v1(null);
  return entry_id;
end
$$;

create or replace function public.amend_usage_event_v1(event_id uuid, tokens_input int, tokens_output int, reason text)
returns uuid
language plpgsql security definer
set search_path = ''
as $$
declare
  current record;
  new_cost numeric;
  entry_id uuid := gen_random_uuid();
begin
  if tokens_input is null or tokens_output is null or tokens_input < 0 or tokens_output < 0 then
    raise exception 'usagemeter: amended token counts must be whole numbers >= 0 (got input %, output %)',
      tokens_input, tokens_output
      using errcode = '22023';
  end if;
  if reason is null or btrim(reason) = '' then
    raise exception 'usagemeter: an amendment needs a reason' using errcode = '22023';
  end if;
  select * into current from usagemeter_private.corrected_event_v1(event_id);
  if current.events = 0 then
    raise exception 'usagemeter: event % is void; it cannot be amended', event_id using errcode = '22023';
  end if;
  perform usagemeter_private.mark_correcting_event_v1(event_id);
  new_cost := usagemeter_private.event_cost_v1(
    (current.original).tenant_id, (current.original).model, (current.original).action,
    (current.original).created_at, tokens_input, tokens_output, (current.original).metadata);
  insert into public.usage_events
    (id, owner_id, tenant_id, user_id, action, module_id, tokens_input, tokens_output, metadata, created_at, cost,
     corrects_event_id, correction_kind, correction_reason)
  values (entry_id, (current.original).owner_id, (current.original).tenant_id, (current.original).user_id,
          (current.original).action, (current.original).module_id, tokens_input - current.tokens_input,
          tokens_output - current.tokens_output, jsonb_strip_nulls(jsonb_build_object('model', (current.original).model)),
          (current.original).created_at, new_cost - current.cost, event_id, 'amend', reason);
  perform usagemeter_private.mark_correcting_event_v1(null);
  return entry_id;
end
$$;

-- Partitions ahead (db migrate, usagemeter maintain, pg_cron): attaching a month's table to the distributed
-- ledger distributes it, co-located, which Citus does over one connection per node when the ledger has
-- foreign keys to reference tables (sequential mode); the default partition's check names a column
-- (Citus cannot plan an EXISTS over a distributed table with an empty target list).
create or replace function usagemeter_private.create_usage_event_partitions_v1(months_ahead int default 3)
returns setof text
language plpgsql security definer
set search_path = ''
set citus.multi_shard_modify_mode = 'sequential'
as $$
declare
  first_month timestamptz := pg_catalog.date_trunc('month', pg_catalog.now(), 'UTC');
  month_start timestamptz;
begin
  if months_ahead is null or months_ahead < 0 or months_ahead > 120 then
    raise exception 'usagemeter: months_ahead must be between 0 and 120 (got %)', months_ahead using errcode = '22023';
  end if;
  perform pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('usagemeter.usage_event_partitions'));
  for month_start in
    select m from pg_catalog.generate_series(first_month, first_month + pg_catalog.make_interval(months => months_ahead),
                                             interval '1 month') as m
  loop
    continue when pg_catalog.to_regclass(
      'usagemeter_private.' || usagemeter_private.usage_event_partition_name_v1(month_start)) is not null;
    continue when exists (
      select 1 from usagemeter_private.usage_events_default as d
      where d.created_at >= month_start and d.created_at < month_start + interval '1 month');
    perform usagemeter_private.create_usage_event_month_table_v1(month_start);
    return next usagemeter_private.attach_usage_event_month_table_v1(month_start);
  end loop;
end
$$;

-- Retention (usagemeter retention): the same steps and records as on one node. Detaching and dropping a month
-- of the distributed ledger, and releasing its keys, run over one connection per node (sequential mode: the
-- ledger has foreign keys to reference tables). A month's ids and keys are released by (owner_id, id), the key
-- table's primary key on the cluster: each batch goes to every shard once, as an index probe per id there.
alter function usagemeter_private.detach_usage_event_month_v1(timestamptz)
  set citus.multi_shard_modify_mode = 'sequential';
alter function usagemeter_private.drop_usage_event_month_v1(timestamptz)
  set citus.multi_shard_modify_mode = 'sequential';

create or replace function usagemeter_private.free_usage_event_month_keys_v1(month_start timestamptz, after_id uuid, batch int)
returns table (freed bigint, last_id uuid)
language plpgsql security definer
set search_path = ''
set enable_seqscan = off
set enable_bitmapscan = off
set citus.multi_shard_modify_mode = 'sequential'
as $$
declare
  partition_name text := usagemeter_private.usage_event_partition_name_v1(month_start);
  ids uuid[];
  owners uuid[];
  released bigint;
begin
  if not exists (select from usagemeter_private.usage_event_archives as a
                 where a.month_start = free_usage_event_month_keys_v1.month_start and a.detached_at is not null) then
    raise exception 'usagemeter: % is not detached by retention; its keys stay', partition_name
      using errcode = '55000';
  end if;
  execute pg_catalog.format(
    'select array_agg(s.id order by s.id, s.owner_id), array_agg(s.owner_id order by s.id, s.owner_id)'
    ' from (select e.id, e.owner_id from usagemeter_private.%I as e'
    ' where e.id > coalesce($1, ''00000000-0000-0000-0000-000000000000''::uuid) order by e.id limit $2) as s',
    partition_name)
  into ids, owners
  using after_id, batch;
  delete from usagemeter_private.usage_event_keys as k
  using rows from (pg_catalog.unnest(owners), pg_catalog.unnest(ids)) as freed_key (owner_id, id)
  where k.owner_id = freed_key.owner_id and k.id = freed_key.id;
  get diagnostics released = row_count;
  return query select released, ids[pg_catalog.array_length(ids, 1)];
end
$$;

-- Moving a month out of the default partition (usagemeter maintain): the month's table is distributed,
-- co-located with the ledger, before rows are copied into it, so the copy runs on each worker shard by shard
-- (a co-located INSERT ... SELECT), in one step (block ranges mean nothing across shards), and the attach
-- joins a distributed table to the distributed ledger. Same locks, checks and counts as on one node.
create or replace function usagemeter_private.begin_usage_event_month_move_v1(month_start timestamptz)
returns table (partition_name text, blocks bigint)
language plpgsql security definer
set search_path = ''
set citus.multi_shard_modify_mode = 'sequential'
as $$
declare
  made text;
begin
  lock table usagemeter_private.usage_events_default in share row exclusive mode;
  made := usagemeter_private.create_usage_event_month_table_v1(month_start);
  perform pg_catalog.create_distributed_table(
    pg_catalog.format('usagemeter_private.%I', made), 'owner_id', colocate_with => 'public.usage_events');
  return query select made, 1::bigint;
end
$$;

create or replace function usagemeter_private.copy_usage_event_month_rows_v1(month_start timestamptz, first_block bigint, last_block bigint)
returns bigint
language plpgsql security definer
set search_path = ''
set citus.multi_shard_modify_mode = 'sequential'
as $$
declare
  copied bigint;
begin
  if first_block > 0 then
    return 0;  -- the one step (first_block 0) copied the whole month
  end if;
  execute pg_catalog.format(
    'insert into usagemeter_private.%I (owner_id, id, tenant_id, user_id, action, module_id, tokens_input,'
    ' tokens_output, metadata, created_at, idempotency_key, cost, corrects_event_id, correction_kind,'
    ' correction_reason, recorded_at, occurred_at)'
    ' select owner_id, id, tenant_id, user_id, action, module_id, tokens_input, tokens_output, metadata, created_at,'
    ' idempotency_key, cost, corrects_event_id, correction_kind, correction_reason, recorded_at, occurred_at'
    ' from usagemeter_private.usage_events_default'
    ' where created_at >= $1 and created_at < $2',
    usagemeter_private.usage_event_partition_name_v1(month_start))
  using month_start, month_start + interval '1 month';
  get diagnostics copied = row_count;
  return copied;
end
$$;


create or replace function usagemeter_private.finish_usage_event_month_move_v1(month_start timestamptz, copied bigint)
returns bigint
language plpgsql security definer
set search_path = ''
set citus.multi_shard_modify_mode = 'sequential'
as $$
declare
  partition_name text := usagemeter_private.usage_event_partition_name_v1(month_start);
  removed bigint;
begin
  -- The rows are moved, not changed: no row trigger of the ledger fires for their removal from the default
  -- partition (Citus cannot disable one trigger on the shards; replica mode skips them all on every node
  -- until the transaction ends).
  set local session_replication_role = replica;
  delete from usagemeter_private.usage_events_default
  where created_at >= month_start and created_at < month_start + interval '1 month';
  get diagnostics removed = row_count;
  set local session_replication_role = origin;
  if removed <> copied then
    raise exception 'usagemeter: % rows of % were copied but % are in the default partition; nothing was moved',
      copied, partition_name, removed
      using errcode = '55000';
  end if;
  execute pg_catalog.format(
    'alter table usagemeter_private.usage_events_default add constraint %I'
    ' check (created_at < %L or created_at >= %L) not valid',
    partition_name || '_moved', month_start, month_start + interval '1 month');
  execute pg_catalog.format(
    'alter table usagemeter_private.usage_events_default validate constraint %I', partition_name || '_moved');
  perform usagemeter_private.attach_usage_event_month_table_v1(month_start);
  execute pg_catalog.format(
    'alter table usagemeter_private.usage_events_default drop constraint %I', partition_name || '_moved');
  return removed;
end
$$;

-- Closing a statement period: usage_closed_periods is a reference table, so the trigger that keeps closed
-- periods apart runs on every node's copy as the coordinator writes it. Its single-node LOCK TABLE would be
-- propagated by each node to all the others (a distributed deadlock with the write itself); a node-local
-- transaction advisory lock serializes closes on each copy instead (every close writes the copies in the
-- same order), and the overlap check then sees every close committed before it.
create or replace function usagemeter_private.keep_closed_periods_apart_v1() returns trigger
language plpgsql security definer
set search_path = ''
as $$
begin
  perform pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('usagemeter.usage_closed_periods'));
  if exists (
    select 1 from public.usage_closed_periods as c
    where c.id <> new.id
      and c.tenant_id is not distinct from new.tenant_id and c.user_id is not distinct from new.user_id
      and c.period_start < new.period_end and new.period_start < c.period_end
  ) then
    raise exception 'usagemeter: the statement for % to % is already closed (or overlaps a closed one)',
      new.period_start, new.period_end
      using errcode = '23P01', hint = 'A closed statement is final; late usage is booked in the first open month.';
  end if;
  if new.period_end > now() - interval '1 hour' then
    raise exception 'usagemeter: the period % to % ended less than an hour ago (or has not ended); it can be closed from % on',
      new.period_start, new.period_end, new.period_end + interval '1 hour'
      using errcode = '22023';
  end if;
  return null;
end
$$;

-- Loading prices: usage_prices is a reference table too, and the statement trigger that keeps one currency
-- serializes loads the same way as closing periods does (a node-local advisory lock in place of LOCK TABLE).
create or replace function usagemeter_private.keep_one_price_currency_v1() returns trigger
language plpgsql security definer
set search_path = ''
as $$
declare
  currencies text[];
begin
  perform pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('usagemeter.usage_prices'));
  perform set_config('usagemeter.statement_rates', '', true);  -- rates remembered by the rating trigger
  select array_agg(distinct p.currency order by p.currency) into currencies from public.usage_prices as p;
  if cardinality(currencies) > 1 then
    raise exception 'usagemeter: every price must be in one currency; the price list would hold %', array_to_string(currencies, ', ')
      using errcode = '22023',
            hint = 'Load prices in the currency of the prices already stored (usagemeter prices list).';
  end if;
  return null;
end
$$;

-- Booking a late entry (closed statement periods): the same rules. An entry booked into another month is
-- written again, as on one node, but here the trigger runs on a shard: the row goes into the parent shard
-- of the partition shard it fires on (the same owner, so the same shard group on this worker), with its
-- owner_id, by a local INSERT that Citus does not route again.
create or replace function usagemeter_private.book_usage_event_v1() returns trigger
language plpgsql security definer
set search_path = ''
as $$
declare
  booked timestamptz;
  writer text := coalesce(nullif(pg_catalog.current_setting('role'), 'none'), session_user);
  parent_shard regclass;
begin
  if tg_op = 'INSERT' then
    booked := usagemeter_private.first_open_moment_v1(new.tenant_id, new.user_id, new.created_at);
    if booked = new.created_at then
      return new;
    end if;
    new.occurred_at := coalesce(new.occurred_at, new.created_at);
    new.created_at := booked;
    if pg_catalog.date_trunc('month', booked, 'UTC') = pg_catalog.date_trunc('month', new.occurred_at, 'UTC') then
      return new;
    end if;
    if not exists (select from pg_catalog.pg_roles as r where r.rolname = writer and (r.rolsuper or r.rolbypassrls)) then
      raise exception 'usagemeter: event dated % is in a closed statement period; only the service role may book it into the next open month', new.occurred_at
        using errcode = '42501';
    end if;
    select i.inhparent::regclass into strict parent_shard from pg_catalog.pg_inherits as i where i.inhrelid = tg_relid;
    execute pg_catalog.format(
      'insert into %s (owner_id, id, tenant_id, user_id, action, module_id, tokens_input, tokens_output, metadata,'
      ' created_at, idempotency_key, cost, corrects_event_id, correction_kind, correction_reason, recorded_at,'
      ' occurred_at) values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)',
      parent_shard)
    using new.owner_id, new.id, new.tenant_id, new.user_id, new.action, new.module_id, new.tokens_input,
          new.tokens_output, new.metadata, new.created_at, new.idempotency_key, new.cost, new.corrects_event_id,
          new.correction_kind, new.correction_reason, new.recorded_at, new.occurred_at;
    return null;
  end if;
  if pg_catalog.pg_trigger_depth() <= 1
     and usagemeter_private.first_open_moment_v1(old.tenant_id, old.user_id, old.created_at) <> old.created_at then
    raise exception 'usagemeter: event % is on a closed statement (%); it cannot be changed', old.id, old.created_at
      using errcode = '42501', hint = 'Void or amend it: the correction is booked in the first open month.';
  end if;
  return case when tg_op = 'DELETE' then old else new end;
end
$$;
