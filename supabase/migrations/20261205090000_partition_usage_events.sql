-- usage_events becomes range-partitioned by created_at, one partition per UTC month.
--
-- Why: deleting old events from one huge table bloats it and takes hours; dropping a month's
-- partition is instant (usagemeter retention), and a month's query reads only its partition.
--
-- How, on a fresh install and on one with data alike (no row is copied here, no id changes):
-- - The existing table steps aside into usagemeter_private and becomes the DEFAULT partition, so
--   its rows stay where they are and no insert ever fails for lack of a partition. Its own
--   triggers and policies go (the parent's apply to every row routed through it); its
--   per-partition indexes are built when it is attached (a scan of its rows, once).
-- - Monthly partitions are created for the months ahead that hold no rows yet (the current one
--   and three more): usagemeter_private.create_usage_event_partitions_v1(), which `usagemeter db
--   migrate`, `usagemeter maintain` and, when the extension is present, pg_cron run again.
--   `usagemeter maintain` moves rows out of the default partition, a month at a time, into
--   partitions of their own: on an installation with data, that is the conversion (progress bar).
-- - Partitions live in usagemeter_private (no API role may use it), with every privilege revoked
--   and RLS enabled without policies: only through public.usage_events, and its policies, are
--   rows reached.
--
-- Uniqueness across partitions. PostgreSQL's unique indexes on a partitioned table must include
-- the partition key, but an id and an idempotency key must be unique across all months (a retry
-- in the next month must still find its first attempt). usagemeter_private.usage_event_keys holds
-- every event's id, created_at and idempotency key under the two unique indexes the table had;
-- statement triggers keep it in step, so a used id or key fails the statement with a
-- unique_violation, as before. Corrections referenced their event by a foreign key, which cannot
-- point at a partitioned table's id alone: a delete trigger now removes an event's corrections
-- with it (what ON DELETE CASCADE did), and the correction functions lock the event they correct.
--
-- Booking late entries: a BEFORE ROW trigger may not move a row to another partition, so an
-- entry dated in a closed statement period whose first open moment lies in another month is
-- written again at that moment (through the parent, so it lands in the right partition) and the
-- original insert is skipped. Only callers who may write created_at (service role, owner) can
-- date an entry that far back; anyone else gets an error instead (see book_usage_event_v1).

-- 1. The table as it is becomes the default partition ---------------------------------------------

alter table public.usage_events rename to usage_events_default;
alter table public.usage_events_default set schema usagemeter_private;

drop trigger usage_budgets_after_delete on usagemeter_private.usage_events_default;
drop trigger usage_budgets_after_insert on usagemeter_private.usage_events_default;
drop trigger usage_budgets_after_update on usagemeter_private.usage_events_default;
drop trigger usage_events_book on usagemeter_private.usage_events_default;
drop trigger usage_events_book_changes on usagemeter_private.usage_events_default;
drop trigger usage_events_keep_personal_owner on usagemeter_private.usage_events_default;
drop trigger usage_events_rate on usagemeter_private.usage_events_default;
drop trigger usage_rollup_after_delete on usagemeter_private.usage_events_default;
drop trigger usage_rollup_after_insert on usagemeter_private.usage_events_default;
drop trigger usage_rollup_after_update on usagemeter_private.usage_events_default;
drop trigger usage_rollup_zz_forget_emptied_users_after_delete on usagemeter_private.usage_events_default;
drop trigger usage_rollup_zz_forget_emptied_users_after_update on usagemeter_private.usage_events_default;
drop policy "Members read their tenants' usage; users read their personal us" on usagemeter_private.usage_events_default;
drop policy "Users record their own usage, personal or in their tenants" on usagemeter_private.usage_events_default;
revoke all on table usagemeter_private.usage_events_default from public, anon, authenticated, service_role;

-- The event ids and keys move to usage_event_keys (below); the per-partition indexes the parent
-- declares are built on this table when it is attached.
alter table usagemeter_private.usage_events_default drop constraint usage_events_corrects_event_id_fkey;
alter table usagemeter_private.usage_events_default drop constraint usage_events_pkey;
drop index usagemeter_private.usage_events_idempotency_key_idx;
-- The two checks added NOT VALID (rows written before them may break them) are checked on new
-- rows by the parent alone; a partition attached must carry the parent's checks, so they go.
alter table usagemeter_private.usage_events_default drop constraint usage_events_cache_token_counts;
alter table usagemeter_private.usage_events_default drop constraint usage_events_model_length;

-- 2. The partitioned ledger ---------------------------------------------------------------------------

create table public.usage_events (
  id uuid not null default gen_random_uuid(),
  tenant_id uuid,
  user_id uuid,
  action text not null,
  module_id text,
  tokens_input int not null default 0,
  tokens_output int not null default 0,
  tokens_total int generated always as (tokens_input + tokens_output) stored,
  metadata jsonb not null default '{}',
  created_at timestamptz not null default now(),
  idempotency_key text,
  personal_user_id uuid generated always as (case when tenant_id is null then user_id else null::uuid end) stored,
  model text generated always as (nullif(metadata ->> 'model', '')) stored,
  cost numeric(20, 6) not null default 0,
  corrects_event_id uuid,
  correction_kind text,
  correction_reason text,
  event_count smallint generated always as (
    case when correction_kind is null then 1 when correction_kind = 'void' then -1 else 0 end
  ) stored,
  recorded_at timestamptz default now(),
  occurred_at timestamptz,
  constraint usage_events_pkey primary key (id, created_at),
  constraint usage_events_tenant_id_fkey foreign key (tenant_id) references public.tenants (id) on delete cascade,
  constraint usage_events_user_id_fkey foreign key (user_id) references auth.users (id) on delete set null,
  constraint usage_events_personal_user_id_fkey
    foreign key (personal_user_id) references auth.users (id) on delete cascade,
  constraint usage_events_action_format
    check (char_length(action) <= 200 and action ~ '^[a-z0-9_-]+:[a-z0-9_-]+:[a-z0-9_-]+$'),
  constraint usage_events_correction_complete
    check ((corrects_event_id is null) = (correction_kind is null) and (correction_kind is null) = (correction_reason is null)),
  constraint usage_events_correction_kind_valid check (correction_kind in ('void', 'amend')),
  constraint usage_events_correction_reason_length
    check (correction_reason is null or char_length(btrim(correction_reason)) between 1 and 1000),
  constraint usage_events_idempotency_key_length
    check (idempotency_key is null or char_length(idempotency_key) between 1 and 200),
  constraint usage_events_metadata_is_object check (jsonb_typeof(metadata) = 'object'),
  constraint usage_events_metadata_size check (octet_length(metadata::text) <= 16384),
  constraint usage_events_module_id_matches_action check (module_id is null or module_id = split_part(action, ':', 1)),
  constraint usage_events_owner_present check (tenant_id is not null or user_id is not null),
  constraint usage_events_tokens_input_nonnegative check (tokens_input >= 0 or correction_kind is not null),
  constraint usage_events_tokens_output_nonnegative check (tokens_output >= 0 or correction_kind is not null)
) partition by range (created_at);

comment on table public.usage_events is
  'Append-only ledger of AI token usage and billable actions, per tenant (or per user in Personal mode when tenant_id is NULL). Partitioned by UTC month of created_at.';
comment on column public.usage_events.id is
  'Event id: chosen by the recorder (uuid v4) so retries are safe, or gen_random_uuid(); unique across all partitions.';
comment on column public.usage_events.tenant_id is 'Tenant billed for the event; NULL for Personal mode (the row belongs to user_id alone).';
comment on column public.usage_events.user_id is
  'User who caused the event (auth.users.id). NULL on tenant events whose user was deleted, and on tenant-level system events recorded by the service role; never NULL on personal events.';
comment on column public.usage_events.action is 'What happened, as <module>:<domain>:<verb> of [a-z0-9_-], e.g. agency:scope:generate; at most 200 characters.';
comment on column public.usage_events.module_id is 'The module, e.g. agency: when set, equal to the first segment of action.';
comment on column public.usage_events.tokens_input is 'Input (prompt) tokens consumed, >= 0.';
comment on column public.usage_events.tokens_output is 'Output (completion) tokens produced, >= 0.';
comment on column public.usage_events.tokens_total is 'tokens_input + tokens_output, computed by the database.';
comment on column public.usage_events.metadata is 'Free-form JSON object (model, request id, cost inputs...), at most 16 KiB as text.';
comment on column public.usage_events.created_at is
  'When the event happened and is billed; set by the database for authenticated callers. An entry dated inside a closed statement period is booked at the start of the first open period (its original time kept in occurred_at).';
comment on column public.usage_events.idempotency_key is
  'Caller-chosen retry key, unique per (tenant_id, user_id) across all partitions: a retried write with the same key stores nothing new.';
comment on column public.usage_events.personal_user_id is
  'user_id on personal rows (tenant_id NULL), NULL on tenant rows; computed by the database. Its foreign key deletes a user''s personal events with the user.';
comment on column public.usage_events.model is
  'The model, metadata->>''model'', computed by the database: what tokens are priced by, and a grouping key.';
comment on column public.usage_events.cost is
  'What the event costs in the price list''s currency, set by the database when it is written: its tokens at its model''s price plus its action''s per-event price, each in effect at created_at, rounded to 6 decimal places. On a correction: the change.';
comment on column public.usage_events.corrects_event_id is
  'On a correction entry: the event it voids or amends (deleting the event deletes its corrections). NULL on events.';
comment on column public.usage_events.correction_kind is 'void or amend on a correction entry; NULL on events.';
comment on column public.usage_events.correction_reason is 'Why the service role corrected the event (required on a correction entry).';
comment on column public.usage_events.event_count is
  'What the row adds to event counts: 1 for an event, -1 for a void, 0 for an amendment; computed by the database.';
comment on column public.usage_events.recorded_at is
  'When the row was written (created_at is when the event happened); set by the database. NULL on rows written before usagemeter kept it.';
comment on column public.usage_events.occurred_at is
  'When the event (or the corrected event) happened, on entries booked late: created_at fell in a closed statement period and was moved to the start of the first open one. NULL otherwise (created_at is when it happened).';

-- The same indexes as before, per partition; the idempotency key's is for lookups (its uniqueness
-- is usage_event_keys').
create index usage_events_tenant_created_idx on public.usage_events (tenant_id, created_at desc);
create index usage_events_action_idx on public.usage_events (action);
create index usage_events_user_created_idx on public.usage_events (user_id, created_at desc);
create index usage_events_module_idx on public.usage_events (module_id);
create index usage_events_personal_user_created_idx
  on public.usage_events (user_id, created_at desc) where tenant_id is null;
create index usage_events_idempotency_key_idx
  on public.usage_events (tenant_id, user_id, idempotency_key) where idempotency_key is not null;
create index usage_events_personal_user_id_idx
  on public.usage_events (personal_user_id) where personal_user_id is not null;
create index usage_events_corrects_event_id_idx
  on public.usage_events (corrects_event_id) where corrects_event_id is not null;
create index usage_events_tenant_adjustments_idx on public.usage_events (tenant_id, created_at)
  where correction_kind is not null or occurred_at is not null;
create index usage_events_personal_adjustments_idx on public.usage_events (user_id, created_at)
  where (correction_kind is not null or occurred_at is not null) and tenant_id is null;

-- Privileges and policies, as before: an append-only ledger.
revoke all on table public.usage_events from public, anon, authenticated, service_role;
grant select on table public.usage_events to authenticated;
grant insert (id, tenant_id, user_id, action, module_id, tokens_input, tokens_output, metadata, idempotency_key)
  on table public.usage_events to authenticated;
grant select, insert, update, delete on table public.usage_events to service_role;

alter table public.usage_events enable row level security;

create policy "Members read their tenants' usage; users read their personal usage"
  on public.usage_events for select to authenticated
  using (
    tenant_id = any ((select usagemeter_private.tenant_ids_of_current_user_v1())::uuid[])
    or (tenant_id is null and user_id = (select auth.uid()))
  );

create policy "Users record their own usage, personal or in their tenants"
  on public.usage_events for insert to authenticated
  with check (
    user_id = (select auth.uid())
    and (tenant_id is null or tenant_id = any ((select usagemeter_private.tenant_ids_of_current_user_v1())::uuid[]))
  );

-- 3. Ids and idempotency keys, unique across partitions ------------------------------------------------

create table usagemeter_private.usage_event_keys (
  id uuid not null,
  created_at timestamptz not null,
  tenant_id uuid,
  user_id uuid,
  idempotency_key text
);
comment on table usagemeter_private.usage_event_keys is
  'Every usage event''s id, created_at and idempotency key, kept by statement triggers on usage_events: the uniqueness of ids and keys across its partitions.';

insert into usagemeter_private.usage_event_keys (id, created_at, tenant_id, user_id, idempotency_key)
select id, created_at, tenant_id, user_id, idempotency_key from usagemeter_private.usage_events_default;

alter table usagemeter_private.usage_event_keys add constraint usage_event_keys_pkey primary key (id);
create unique index usage_event_keys_idempotency_key_idx
  on usagemeter_private.usage_event_keys (tenant_id, user_id, idempotency_key) nulls not distinct
  where idempotency_key is not null;
revoke all on table usagemeter_private.usage_event_keys from public, anon, authenticated, service_role;
alter table usagemeter_private.usage_event_keys enable row level security;

create function usagemeter_private.keep_usage_event_keys_v1() returns trigger
language plpgsql security definer
set search_path = ''
as $$
begin
  if tg_op = 'TRUNCATE' then
    truncate usagemeter_private.usage_event_keys;
    return null;
  end if;
  if tg_op in ('UPDATE', 'DELETE') then
    delete from usagemeter_private.usage_event_keys as k using removed_rows as r where k.id = r.id;
  end if;
  if tg_op = 'DELETE' then
    -- What ON DELETE CASCADE did: an event's corrections go with it (their own delete stops here:
    -- removed_rows is a transition table, only planned where the trigger has one).
    if exists (select from removed_rows as r where r.correction_kind is null) then
      delete from public.usage_events as e
      where e.corrects_event_id in (select r.id from removed_rows as r where r.correction_kind is null);
    end if;
  end if;
  if tg_op in ('INSERT', 'UPDATE') then
    insert into usagemeter_private.usage_event_keys (id, created_at, tenant_id, user_id, idempotency_key)
    select a.id, a.created_at, a.tenant_id, a.user_id, a.idempotency_key from added_rows as a;
  end if;
  return null;
end
$$;
comment on function usagemeter_private.keep_usage_event_keys_v1() is
  'Statement trigger on usage_events: keeps usage_event_keys in step (a used id or key fails the statement), and deletes the corrections of deleted events.';
revoke all on function usagemeter_private.keep_usage_event_keys_v1() from public;

create trigger usage_event_keys_after_insert
  after insert on public.usage_events referencing new table as added_rows
  for each statement execute function usagemeter_private.keep_usage_event_keys_v1();
create trigger usage_event_keys_after_update
  after update on public.usage_events referencing old table as removed_rows new table as added_rows
  for each statement execute function usagemeter_private.keep_usage_event_keys_v1();
create trigger usage_event_keys_after_delete
  after delete on public.usage_events referencing old table as removed_rows
  for each statement execute function usagemeter_private.keep_usage_event_keys_v1();
create trigger usage_event_keys_after_truncate
  after truncate on public.usage_events
  for each statement execute function usagemeter_private.keep_usage_event_keys_v1();

-- 4. The other triggers, as they were -------------------------------------------------------------------

create trigger usage_budgets_after_delete after delete on public.usage_events
  referencing old table as removed_rows
  for each statement execute function usagemeter_private.enforce_usage_budgets_v1();
create trigger usage_budgets_after_insert after insert on public.usage_events
  referencing new table as added_rows
  for each statement execute function usagemeter_private.enforce_usage_budgets_v1();
create trigger usage_budgets_after_update after update on public.usage_events
  referencing old table as removed_rows new table as added_rows
  for each statement execute function usagemeter_private.enforce_usage_budgets_v1();
create trigger usage_events_book before insert on public.usage_events
  for each row when (new.created_at < clock_timestamp() - interval '1 hour')
  execute function usagemeter_private.book_usage_event_v1();
create trigger usage_events_book_changes before update or delete on public.usage_events
  for each row execute function usagemeter_private.book_usage_event_v1();
create trigger usage_events_keep_personal_owner before update of user_id on public.usage_events
  for each row when (old.tenant_id is null and new.tenant_id is null and old.user_id is not null and new.user_id is null)
  execute function usagemeter_private.keep_personal_owner_for_cascade_v1();
create trigger usage_events_rate
  before insert or update of tenant_id, action, tokens_input, tokens_output, metadata, created_at, cost, recorded_at
  on public.usage_events
  for each row execute function usagemeter_private.rate_usage_event_v1();
create trigger usage_rollup_after_delete after delete on public.usage_events
  referencing old table as removed_rows
  for each statement execute function usagemeter_private.add_usage_rollup_deltas_v1();
create trigger usage_rollup_after_insert after insert on public.usage_events
  referencing new table as added_rows
  for each statement execute function usagemeter_private.add_usage_rollup_deltas_v1();
create trigger usage_rollup_after_update after update on public.usage_events
  referencing old table as removed_rows new table as added_rows
  for each statement execute function usagemeter_private.add_usage_rollup_deltas_v1();
create trigger usage_rollup_zz_forget_emptied_users_after_delete after delete on public.usage_events
  referencing old table as removed_rows
  for each statement execute function usagemeter_private.forget_emptied_rollup_users_v1();
create trigger usage_rollup_zz_forget_emptied_users_after_update after update on public.usage_events
  referencing old table as removed_rows new table as added_rows
  for each statement execute function usagemeter_private.forget_emptied_rollup_users_v1();

-- Booking across months: written again through the parent (see the header).
create or replace function usagemeter_private.book_usage_event_v1() returns trigger
language plpgsql security definer
set search_path = ''
as $$
declare
  booked timestamptz;
  writer text := coalesce(nullif(pg_catalog.current_setting('role'), 'none'), session_user);
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
    -- Another month's partition: only a writer who bypasses RLS may be written again here, as
    -- this definer would skip the caller's insert policy.
    if not exists (select from pg_catalog.pg_roles as r where r.rolname = writer and (r.rolsuper or r.rolbypassrls)) then
      raise exception 'usagemeter: event dated % is in a closed statement period; only the service role may book it into the next open month', new.occurred_at
        using errcode = '42501';
    end if;
    insert into public.usage_events
      (id, tenant_id, user_id, action, module_id, tokens_input, tokens_output, metadata, created_at, idempotency_key,
       cost, corrects_event_id, correction_kind, correction_reason, recorded_at, occurred_at)
    values (new.id, new.tenant_id, new.user_id, new.action, new.module_id, new.tokens_input, new.tokens_output,
            new.metadata, new.created_at, new.idempotency_key, new.cost, new.corrects_event_id, new.correction_kind,
            new.correction_reason, new.recorded_at, new.occurred_at);
    return null;
  end if;
  -- UPDATE or DELETE of a row in a closed period: only the cascades of an erasure may (depth > 1).
  if pg_catalog.pg_trigger_depth() <= 1
     and usagemeter_private.first_open_moment_v1(old.tenant_id, old.user_id, old.created_at) <> old.created_at then
    raise exception 'usagemeter: event % is on a closed statement (%); it cannot be changed', old.id, old.created_at
      using errcode = '42501', hint = 'Void or amend it: the correction is booked in the first open month.';
  end if;
  return case when tg_op = 'DELETE' then old else new end;
end
$$;
comment on function usagemeter_private.book_usage_event_v1() is
  'BEFORE row trigger on usage_events: books an entry dated in a closed statement period at the first open moment (keeping '
  'occurred_at; written again through the parent when that moment is in another month), and refuses updates and deletes '
  'of rows on a closed statement (erasure cascades excepted).';

-- 5. Corrections: the same functions, over the partitioned ledger ---------------------------------------
-- corrected_event_v1 returned the old table's row type; it now returns the parent's. The void and
-- amend functions choose their entry's id first: an entry booked into another month is written
-- again by the booking trigger, so RETURNING would not see it.

drop function usagemeter_private.corrected_event_v1(uuid);
create function usagemeter_private.corrected_event_v1(event_id uuid)
returns table (original public.usage_events, events bigint, tokens_input bigint, tokens_output bigint, cost numeric)
language plpgsql
set search_path = ''
as $$
declare
  found_event public.usage_events;
begin
  select e.* into found_event from public.usage_events as e where e.id = event_id for update;
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
    where e.id = event_id or e.corrects_event_id = event_id;
end
$$;
comment on function usagemeter_private.corrected_event_v1(uuid) is
  'An event, locked, with its totals after its corrections so far.';
revoke all on function usagemeter_private.corrected_event_v1(uuid) from public;

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
  perform set_config('usagemeter.correcting_event', event_id::text, true);
  insert into public.usage_events
    (id, tenant_id, user_id, action, module_id, tokens_input, tokens_output, metadata, created_at, cost,
     corrects_event_id, correction_kind, correction_reason)
  values (entry_id, (current.original).tenant_id, (current.original).user_id, (current.original).action,
          (current.original).module_id, -current.tokens_input, -current.tokens_output,
          jsonb_strip_nulls(jsonb_build_object('model', (current.original).model)),
          (current.original).created_at, -current.cost, event_id, 'void', reason);
  perform set_config('usagemeter.correcting_event', '', true);
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
  perform set_config('usagemeter.correcting_event', event_id::text, true);
  new_cost := usagemeter_private.event_cost_v1(
    (current.original).tenant_id, (current.original).model, (current.original).action,
    (current.original).created_at, tokens_input, tokens_output, (current.original).metadata);
  insert into public.usage_events
    (id, tenant_id, user_id, action, module_id, tokens_input, tokens_output, metadata, created_at, cost,
     corrects_event_id, correction_kind, correction_reason)
  values (entry_id, (current.original).tenant_id, (current.original).user_id, (current.original).action,
          (current.original).module_id, tokens_input - current.tokens_input, tokens_output - current.tokens_output,
          jsonb_strip_nulls(jsonb_build_object('model', (current.original).model)),
          (current.original).created_at, new_cost - current.cost, event_id, 'amend', reason);
  perform set_config('usagemeter.correcting_event', '', true);
  return entry_id;
end
$$;

-- 6. Monthly partitions -------------------------------------------------------------------------------

create function usagemeter_private.usage_event_partition_name_v1(month_start timestamptz) returns text
language sql immutable
set search_path = ''
as $$ select 'usage_events_' || pg_catalog.to_char(month_start at time zone 'UTC', 'YYYY_MM') $$;
comment on function usagemeter_private.usage_event_partition_name_v1(timestamptz) is
  'The name of the partition of usage_events holding the UTC month starting at month_start (usage_events_YYYY_MM).';
revoke all on function usagemeter_private.usage_event_partition_name_v1(timestamptz) from public;

-- A month's partition is made as a table of its own, then attached: ATTACH takes a SHARE UPDATE
-- EXCLUSIVE lock on the parent (reads and writes go on), where CREATE ... PARTITION OF would take
-- an ACCESS EXCLUSIVE one. The table carries its range as a check, which spares the attach a scan.
create function usagemeter_private.create_usage_event_month_table_v1(month_start timestamptz) returns text
language plpgsql security definer
set search_path = ''
as $$
declare
  partition_name text := usagemeter_private.usage_event_partition_name_v1(month_start);
begin
  if month_start is null or month_start <> pg_catalog.date_trunc('month', month_start, 'UTC') then
    raise exception 'usagemeter: a partition starts at the beginning of a UTC month, not at %', month_start
      using errcode = '22023';
  end if;
  execute pg_catalog.format(
    'create table usagemeter_private.%I (like public.usage_events including defaults including generated'
    ' including constraints including storage, constraint %I check (created_at >= %L and created_at < %L))',
    partition_name, partition_name || '_range', month_start, month_start + interval '1 month');
  execute pg_catalog.format(
    'revoke all on table usagemeter_private.%I from public, anon, authenticated, service_role', partition_name);
  execute pg_catalog.format('alter table usagemeter_private.%I enable row level security', partition_name);
  return partition_name;
end
$$;
comment on function usagemeter_private.create_usage_event_month_table_v1(timestamptz) is
  'Creates (not attached) the table for the UTC month of usage_events starting at month_start, with its range as a check; returns its name.';
revoke all on function usagemeter_private.create_usage_event_month_table_v1(timestamptz) from public;

-- Attaches a month's table. The default partition must hold no row of the month: PostgreSQL scans
-- it to check, unless a valid check of the default already says so (moving rows out adds one).
create function usagemeter_private.attach_usage_event_month_table_v1(month_start timestamptz) returns text
language plpgsql security definer
set search_path = ''
as $$
declare
  partition_name text := usagemeter_private.usage_event_partition_name_v1(month_start);
begin
  execute pg_catalog.format(
    'alter table public.usage_events attach partition usagemeter_private.%I for values from (%L) to (%L)',
    partition_name, month_start, month_start + interval '1 month');
  execute pg_catalog.format(
    'alter table usagemeter_private.%I drop constraint %I', partition_name, partition_name || '_range');
  return partition_name;
end
$$;
comment on function usagemeter_private.attach_usage_event_month_table_v1(timestamptz) is
  'Attaches the table made by create_usage_event_month_table_v1 as the partition of its month; returns its name.';
revoke all on function usagemeter_private.attach_usage_event_month_table_v1(timestamptz) from public;

-- The partitions of the current month and `months_ahead` more that do not exist yet, except months
-- the default partition holds rows of (usagemeter maintain moves those first). Safe to run at any
-- time, from any number of sessions (an advisory lock makes them take turns).
create function usagemeter_private.create_usage_event_partitions_v1(months_ahead int default 3)
returns setof text
language plpgsql security definer
set search_path = ''
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
      select from usagemeter_private.usage_events_default as d
      where d.created_at >= month_start and d.created_at < month_start + interval '1 month');
    perform usagemeter_private.create_usage_event_month_table_v1(month_start);
    return next usagemeter_private.attach_usage_event_month_table_v1(month_start);
  end loop;
end
$$;
comment on function usagemeter_private.create_usage_event_partitions_v1(int) is
  'Creates the missing monthly partitions of usage_events from the current UTC month to months_ahead months later (months the default partition holds rows of excepted); returns their names.';
revoke all on function usagemeter_private.create_usage_event_partitions_v1(int) from public;

-- Moving a month's rows out of the default partition (usagemeter maintain), in one transaction:
-- begin (locks the default partition against writes, reads go on; makes the month's table), copy
-- block range after block range (a progress bar), finish (deletes the copied rows from the default
-- partition, proves with a check it holds none of the month, attaches the month's table). Ids,
-- created_at and every other column are kept; the statement triggers of the parent do not fire
-- (rollups, budgets and usage_event_keys stay as they are: the same events, in another table).
create function usagemeter_private.default_usage_event_months_v1()
returns table (month_start timestamptz, events bigint)
language sql stable security definer
set search_path = ''
as $$
  select pg_catalog.date_trunc('month', d.created_at, 'UTC'), count(*)
  from usagemeter_private.usage_events_default as d
  group by 1
  order by 1
$$;
comment on function usagemeter_private.default_usage_event_months_v1() is
  'The UTC months the default partition of usage_events holds rows of, with their counts (a scan of the default partition).';
revoke all on function usagemeter_private.default_usage_event_months_v1() from public;

create function usagemeter_private.begin_usage_event_month_move_v1(month_start timestamptz)
returns table (partition_name text, blocks bigint)
language plpgsql security definer
set search_path = ''
as $$
begin
  lock table usagemeter_private.usage_events_default in share row exclusive mode;
  return query
    select usagemeter_private.create_usage_event_month_table_v1(month_start),
           pg_catalog.pg_relation_size('usagemeter_private.usage_events_default')
           / pg_catalog.current_setting('block_size')::bigint;
end
$$;
comment on function usagemeter_private.begin_usage_event_month_move_v1(timestamptz) is
  'Starts moving a month out of the default partition: locks it against writes until the transaction ends, makes the month''s table; returns its name and the default partition''s size in blocks.';
revoke all on function usagemeter_private.begin_usage_event_month_move_v1(timestamptz) from public;

create function usagemeter_private.copy_usage_event_month_rows_v1(month_start timestamptz, first_block bigint, last_block bigint)
returns bigint
language plpgsql security definer
set search_path = ''
as $$
declare
  copied bigint;
begin
  execute pg_catalog.format(
    'insert into usagemeter_private.%I (id, tenant_id, user_id, action, module_id, tokens_input, tokens_output,'
    ' metadata, created_at, idempotency_key, cost, corrects_event_id, correction_kind, correction_reason, recorded_at,'
    ' occurred_at)'
    ' select id, tenant_id, user_id, action, module_id, tokens_input, tokens_output, metadata, created_at,'
    ' idempotency_key, cost, corrects_event_id, correction_kind, correction_reason, recorded_at, occurred_at'
    ' from usagemeter_private.usage_events_default'
    ' where ctid >= $1 and ctid < $2 and created_at >= $3 and created_at < $4',
    usagemeter_private.usage_event_partition_name_v1(month_start))
  using pg_catalog.format('(%s,0)', first_block)::tid, pg_catalog.format('(%s,0)', last_block)::tid,
        month_start, month_start + interval '1 month';
  get diagnostics copied = row_count;
  return copied;
end
$$;
comment on function usagemeter_private.copy_usage_event_month_rows_v1(timestamptz, bigint, bigint) is
  'Copies the rows of a month found in blocks [first_block, last_block) of the default partition into the month''s table; returns how many.';
revoke all on function usagemeter_private.copy_usage_event_month_rows_v1(timestamptz, bigint, bigint) from public;

create function usagemeter_private.finish_usage_event_month_move_v1(month_start timestamptz, copied bigint)
returns bigint
language plpgsql security definer
set search_path = ''
as $$
declare
  partition_name text := usagemeter_private.usage_event_partition_name_v1(month_start);
  removed bigint;
begin
  -- The rows are moved, not changed: the closed-period guard has nothing to refuse here.
  alter table usagemeter_private.usage_events_default disable trigger usage_events_book_changes;
  delete from usagemeter_private.usage_events_default
  where created_at >= month_start and created_at < month_start + interval '1 month';
  get diagnostics removed = row_count;
  alter table usagemeter_private.usage_events_default enable trigger usage_events_book_changes;
  if removed <> copied then
    raise exception 'usagemeter: % rows of % were copied but % are in the default partition; nothing was moved',
      copied, partition_name, removed
      using errcode = '55000';
  end if;
  -- Validated under a lock that lets reads and writes go on, so the attach needs no scan.
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
comment on function usagemeter_private.finish_usage_event_month_move_v1(timestamptz, bigint) is
  'Finishes moving a month out of the default partition: deletes its copied rows there (as many as were copied), attaches the month''s table; returns how many rows moved.';
revoke all on function usagemeter_private.finish_usage_event_month_move_v1(timestamptz, bigint) from public;

-- 7. Attach the old table as the default partition ------------------------------------------------------
-- Months ahead first, while the table holds no rows of them; then the table, which is scanned
-- once to check it holds no row of those months. Its indexes are built as it is attached.

select usagemeter_private.create_usage_event_partitions_v1(3);
alter table public.usage_events attach partition usagemeter_private.usage_events_default default;

-- The two checks added NOT VALID before, again NOT VALID: rows written before them keep their place.
alter table public.usage_events
  add constraint usage_events_model_length check (model is null or char_length(model) <= 200) not valid,
  add constraint usage_events_cache_token_counts check (
    correction_kind is not null
    or not (metadata ?| array['tokens_cached_input', 'tokens_cache_write'])
    or usagemeter_private.cache_token_counts_valid_v1(metadata, tokens_input)
  ) not valid;

-- 8. pg_cron, where present: partitions keep being created ahead without anyone running maintain.
do $cron$
begin
  if exists (select from pg_catalog.pg_extension where extname = 'pg_cron') then
    perform cron.schedule('usagemeter-usage-event-partitions', '17 3 * * *',
                          'select usagemeter_private.create_usage_event_partitions_v1(3)');
  end if;
end
$cron$;
