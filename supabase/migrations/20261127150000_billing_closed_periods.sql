-- Billing, part three: closed statement periods, and late entries booked in the first open month.
--
-- `usagemeter statement close` makes a tenant's (or a Personal user's) statement for a month
-- final: it records the period here with the statement as it stood. From then on nothing dated
-- inside the period can be written, by anyone:
-- - an event or correction entry whose created_at falls in a closed period is booked at the start
--   of the first open period after it (created_at moves there), and keeps when it happened in
--   occurred_at; a correction also references the event it corrects (corrects_event_id);
-- - events inside a closed period cannot be updated or deleted, except by the cascades of erasing
--   a user or deleting a tenant (which remove what the statement was about).
-- So a closed statement never changes, and what came late is on the next one.

do $guard$
begin
  if to_regclass('public.usage_closed_periods') is not null then
    raise exception 'usagemeter: public.usage_closed_periods already exists and was not created by usagemeter'
      using hint = 'Rename or drop it, then run the migrations again; nothing was changed.';
  end if;
end
$guard$;

create table public.usage_closed_periods (
  id bigint generated always as identity primary key,
  tenant_id uuid references public.tenants (id) on delete cascade,
  user_id uuid references auth.users (id) on delete cascade,
  period_start timestamptz not null,
  period_end timestamptz not null,
  time_zone text not null,
  statement jsonb not null,
  closed_at timestamptz not null default now(),
  constraint usage_closed_periods_one_scope check ((tenant_id is null) <> (user_id is null)),
  constraint usage_closed_periods_ordered check (period_start < period_end),
  constraint usage_closed_periods_statement_is_object check (jsonb_typeof(statement) = 'object')
);
create index usage_closed_periods_tenant_idx on public.usage_closed_periods (tenant_id, period_end)
  where tenant_id is not null;
create index usage_closed_periods_personal_idx on public.usage_closed_periods (user_id, period_end)
  where user_id is not null;

comment on table public.usage_closed_periods is
  'Final statements: a tenant''s or a Personal user''s period (a month in a time zone) that nothing can be written into any more; late entries are booked after it.';
comment on column public.usage_closed_periods.id is 'Closed period id.';
comment on column public.usage_closed_periods.tenant_id is 'Tenant of the statement; NULL for a Personal user''s.';
comment on column public.usage_closed_periods.user_id is 'Personal user of the statement; NULL for a tenant''s.';
comment on column public.usage_closed_periods.period_start is 'Start of the period (local midnight on the 1st, in time_zone).';
comment on column public.usage_closed_periods.period_end is 'End of the period (exclusive).';
comment on column public.usage_closed_periods.time_zone is 'IANA zone the month was taken in.';
comment on column public.usage_closed_periods.statement is 'The statement as it was closed (the JSON `usagemeter statement` prints).';
comment on column public.usage_closed_periods.closed_at is 'When the statement was closed.';

revoke all on table public.usage_closed_periods from public, anon, authenticated, service_role;
grant select on table public.usage_closed_periods to authenticated;
grant select, insert on table public.usage_closed_periods to service_role;
alter table public.usage_closed_periods enable row level security;
create policy "Members read their tenants' closed statements; users read their personal ones"
  on public.usage_closed_periods for select to authenticated
  using (
    tenant_id = any ((select usagemeter_private.tenant_ids_of_current_user_v1())::uuid[])
    or (tenant_id is null and user_id = (select auth.uid()))
  );

-- Periods of one scope must not overlap (two closes of one month, or months in two zones).
create function usagemeter_private.keep_closed_periods_apart_v1() returns trigger
language plpgsql security definer
set search_path = ''
as $$
begin
  lock table public.usage_closed_periods in share row exclusive mode;
  if exists (
    select from public.usage_closed_periods as c
    where c.id <> new.id
      and c.tenant_id is not distinct from new.tenant_id and c.user_id is not distinct from new.user_id
      and c.period_start < new.period_end and new.period_start < c.period_end
  ) then
    raise exception 'usagemeter: the statement for % to % is already closed (or overlaps a closed one)',
      new.period_start, new.period_end
      using errcode = '23P01', hint = 'A closed statement is final; late usage is booked in the first open month.';
  end if;
  -- An hour's grace after the end: entries written later than that are never inside a closed
  -- period, so the booking trigger skips them without a lookup (see usage_events_book).
  if new.period_end > now() - interval '1 hour' then
    raise exception 'usagemeter: the period % to % ended less than an hour ago (or has not ended); it can be closed from % on',
      new.period_start, new.period_end, new.period_end + interval '1 hour'
      using errcode = '22023';
  end if;
  return null;
end
$$;
comment on function usagemeter_private.keep_closed_periods_apart_v1() is
  'AFTER INSERT row trigger on usage_closed_periods: refuses a period that overlaps a closed one of the same scope, or ended less than an hour ago.';
revoke all on function usagemeter_private.keep_closed_periods_apart_v1() from public;

create trigger usage_closed_periods_apart
  after insert on public.usage_closed_periods
  for each row execute function usagemeter_private.keep_closed_periods_apart_v1();

-- Events: when it happened, if booked later -------------------------------------------------------

alter table public.usage_events add column occurred_at timestamptz;
comment on column public.usage_events.occurred_at is
  'When the event (or the corrected event) happened, on entries booked late: created_at fell in a closed statement period '
  'and was moved to the start of the first open one. NULL otherwise (created_at is when it happened).';
comment on column public.usage_events.created_at is
  'When the event happened and is billed; set by the database for authenticated callers. An entry dated inside a closed '
  'statement period is booked at the start of the first open period (its original time kept in occurred_at).';

-- A statement lists its adjustments (correction entries, entries booked late) without reading the
-- period's events: partial indexes hold only those rows, so ordinary writes never touch them.
create index usage_events_tenant_adjustments_idx on public.usage_events (tenant_id, created_at)
  where correction_kind is not null or occurred_at is not null;
create index usage_events_personal_adjustments_idx on public.usage_events (user_id, created_at)
  where (correction_kind is not null or occurred_at is not null) and tenant_id is null;

-- The first moment at or after `at` outside the scope's closed periods.
create function usagemeter_private.first_open_moment_v1(tenant_id uuid, user_id uuid, at timestamptz)
returns timestamptz
language plpgsql stable security definer
set search_path = ''
as $$
declare
  moment timestamptz := at;
  closed_until timestamptz;
begin
  loop
    select c.period_end into closed_until
    from public.usage_closed_periods as c
    where case when first_open_moment_v1.tenant_id is null
               then c.tenant_id is null and c.user_id = first_open_moment_v1.user_id
               else c.tenant_id = first_open_moment_v1.tenant_id end
      and c.period_start <= moment and c.period_end > moment;
    exit when not found;
    moment := closed_until;
  end loop;
  return moment;
end
$$;
comment on function usagemeter_private.first_open_moment_v1(uuid, uuid, timestamptz) is
  'The moment itself when no closed statement period of the scope holds it, else the end of the run of closed periods holding it.';
revoke all on function usagemeter_private.first_open_moment_v1(uuid, uuid, timestamptz) from public;

-- Booking before rating: an entry dated in a closed period moves to the first open one, and is
-- priced at that booking time (the statement it lands on is priced as of then).
create function usagemeter_private.book_usage_event_v1() returns trigger
language plpgsql security definer
set search_path = ''
as $$
declare
  booked timestamptz;
begin
  if tg_op = 'INSERT' then
    booked := usagemeter_private.first_open_moment_v1(new.tenant_id, new.user_id, new.created_at);
    if booked <> new.created_at then
      new.occurred_at := new.created_at;
      new.created_at := booked;
    end if;
    return new;
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
  'occurred_at), and refuses updates and deletes of rows on a closed statement (erasure cascades excepted).';
revoke all on function usagemeter_private.book_usage_event_v1() from public;

-- Named to fire before usage_events_rate (BEFORE row triggers fire in name order). An entry dated
-- an hour or more before the moment it is written is looked at; a later one cannot be inside a
-- closed period: a period is closed at the earliest an hour after it ends, and a close either
-- committed before this write (then its period ended before created_at) or waits for it (its
-- SHARE lock), so the row is on the statement it closes. Ordinary writes skip the lookup.
create trigger usage_events_book
  before insert on public.usage_events
  for each row when (new.created_at < clock_timestamp() - interval '1 hour')
  execute function usagemeter_private.book_usage_event_v1();
create trigger usage_events_book_changes
  before update or delete on public.usage_events
  for each row execute function usagemeter_private.book_usage_event_v1();
