-- Billing, part one: prices, the cost of every event, the model as a column, and corrections as
-- entries of the ledger.
--
-- - usage_prices: what tokens of a model and events of an action cost, from an effective_from on,
--   for every tenant or one (a tenant's price overrides the general one). Rows are immutable:
--   a change is a new row with a later effective_from. One currency for the whole price list.
-- - usage_events.model: metadata->>'model', computed by the database, so an event inserted with
--   only metadata.model (as a Supabase client does) is priced and grouped by it.
-- - usage_events.cost: set by the database when the event is written, with the prices in effect
--   at its created_at, rounded to 6 decimal places. Stored, so a price loaded later never
--   rewrites history, and budgets and rollups add up stored numbers.
-- - usage_events.recorded_at: when the row was written, kept apart from created_at (when the
--   event happened), set by the database.
-- - Corrections: the service role voids an event or amends its token counts with
--   public.void_usage_event_v1 / public.amend_usage_event_v1. Each is a new row of usage_events
--   that references the original (corrects_event_id) and carries the change: negative or positive
--   token and cost deltas, and event_count -1 for a void, 0 for an amendment (+1 for events).
--   The original is never changed; summaries, costs and budgets add the entries up.
-- - The rollups gain model (a grouping key) and cost, and count event_count instead of rows; they
--   are rebuilt here from the events, in this transaction.

-- Prices ----------------------------------------------------------------------------------------

do $guard$
begin
  if to_regclass('public.usage_prices') is not null then
    raise exception 'usagemeter: public.usage_prices already exists and was not created by usagemeter'
      using hint = 'Rename or drop the existing table, then run the migrations again; nothing was changed.';
  end if;
end
$guard$;

create table public.usage_prices (
  id bigint generated always as identity primary key,
  model text,
  action text,
  tenant_id uuid references public.tenants (id) on delete cascade,
  currency text not null,
  input_per_million numeric(20, 6),
  output_per_million numeric(20, 6),
  cached_input_per_million numeric(20, 6),
  cache_write_per_million numeric(20, 6),
  per_event numeric(20, 6),
  effective_from timestamptz not null,
  created_at timestamptz not null default now(),
  constraint usage_prices_prices_something check (model is not null or action is not null),
  constraint usage_prices_model_length check (model is null or char_length(model) between 1 and 200),
  constraint usage_prices_action_format
    check (action is null or (char_length(action) <= 200 and action ~ '^[a-z0-9_-]+:[a-z0-9_-]+:[a-z0-9_-]+$')),
  constraint usage_prices_currency_iso_4217 check (currency ~ '^[A-Z]{3}$'),
  constraint usage_prices_token_price_complete check (
    action is not null
    or (input_per_million is not null and output_per_million is not null and per_event is null)
  ),
  constraint usage_prices_action_price_complete check (
    action is null
    or (per_event is not null and input_per_million is null and output_per_million is null
        and cached_input_per_million is null and cache_write_per_million is null)
  ),
  constraint usage_prices_nonnegative check (
    coalesce(input_per_million, 0) >= 0 and coalesce(output_per_million, 0) >= 0
    and coalesce(cached_input_per_million, 0) >= 0 and coalesce(cache_write_per_million, 0) >= 0
    and coalesce(per_event, 0) >= 0
  )
);

-- One price per (model, action, tenant, currency) and effective_from; it also serves token-price lookups.
create unique index usage_prices_key
  on public.usage_prices (model, action, tenant_id, currency, effective_from) nulls not distinct;
create index usage_prices_action_idx on public.usage_prices (action, effective_from) where action is not null;
create index usage_prices_tenant_idx on public.usage_prices (tenant_id) where tenant_id is not null;

comment on table public.usage_prices is
  'Prices: tokens of a model (per million) or events of an action (per event, optionally of one model), for every tenant '
  'or one (overriding the general price), from effective_from on. Immutable: a change is a new row. One currency for all rows.';
comment on column public.usage_prices.id is 'Price id.';
comment on column public.usage_prices.model is 'Model whose tokens this prices (action NULL), or to which an action price is narrowed.';
comment on column public.usage_prices.action is 'Action whose events this prices per event; NULL for a token price.';
comment on column public.usage_prices.tenant_id is 'Tenant this price applies to, overriding the general one; NULL for every tenant and personal usage.';
comment on column public.usage_prices.currency is 'ISO 4217 code; every price shares one currency.';
comment on column public.usage_prices.input_per_million is 'Price of a million input tokens (those not cached or written to the cache).';
comment on column public.usage_prices.output_per_million is 'Price of a million output tokens.';
comment on column public.usage_prices.cached_input_per_million is 'Price of a million input tokens read from the cache (metadata.tokens_cached_input); NULL: the input price.';
comment on column public.usage_prices.cache_write_per_million is 'Price of a million input tokens written to the cache (metadata.tokens_cache_write); NULL: the input price.';
comment on column public.usage_prices.per_event is 'Price of one event of the action.';
comment on column public.usage_prices.effective_from is 'From when the price applies (events whose created_at is at or after it, until a later price).';
comment on column public.usage_prices.created_at is 'When the price was loaded.';

-- Service role manages prices (insert; delete only before they take effect); users read what applies to them.
revoke all on table public.usage_prices from public, anon, authenticated, service_role;
grant select on table public.usage_prices to authenticated;
grant select, insert, delete on table public.usage_prices to service_role;
alter table public.usage_prices enable row level security;

create policy "Users read the general prices and their tenants' prices"
  on public.usage_prices for select to authenticated
  using (tenant_id is null or tenant_id = any ((select usagemeter_private.tenant_ids_of_current_user_v1())::uuid[]));

create function usagemeter_private.keep_one_price_currency_v1() returns trigger
language plpgsql security definer
set search_path = ''
as $$
declare
  currencies text[];
begin
  -- Loads are rare: serialise them, so two loads in different currencies cannot both pass.
  lock table public.usage_prices in share row exclusive mode;
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
comment on function usagemeter_private.keep_one_price_currency_v1() is
  'Statement trigger on usage_prices: refuses a load that would leave prices in more than one currency, and forgets the rates the rating trigger remembered.';
revoke all on function usagemeter_private.keep_one_price_currency_v1() from public;

create trigger usage_prices_one_currency
  after insert on public.usage_prices
  for each statement execute function usagemeter_private.keep_one_price_currency_v1();

create function usagemeter_private.keep_effective_prices_v1() returns trigger
language plpgsql
set search_path = ''
as $$
begin
  if old.effective_from <= now() then
    raise exception 'usagemeter: price % has been in effect since %; prices in effect are kept for the events they priced', old.id, old.effective_from
      using errcode = '42501',
            hint = 'Load a new price with a later effective_from instead.';
  end if;
  return old;
end
$$;
comment on function usagemeter_private.keep_effective_prices_v1() is
  'BEFORE DELETE trigger on usage_prices: only a price not yet in effect may be deleted.';
revoke all on function usagemeter_private.keep_effective_prices_v1() from public;

create trigger usage_prices_keep_effective
  before delete on public.usage_prices
  for each row execute function usagemeter_private.keep_effective_prices_v1();

-- Events: model, cost, corrections ----------------------------------------------------------------

-- Cached input counts are parts of tokens_input: each absent, or a whole number >= 0, and together
-- at most tokens_input.
create function usagemeter_private.cache_token_counts_valid_v1(metadata jsonb, tokens_input int) returns boolean
language sql immutable parallel safe
set search_path = ''
as $$
  select coalesce(bool_and(
           jsonb_typeof(metadata -> key) = 'number'
           and case when jsonb_typeof(metadata -> key) = 'number'
                    then (metadata ->> key)::numeric >= 0 and (metadata ->> key)::numeric = trunc((metadata ->> key)::numeric)
                    else false end
         ), true)
         and coalesce(sum(case when jsonb_typeof(metadata -> key) = 'number' then (metadata ->> key)::numeric end), 0)
             <= greatest(tokens_input, 0)  -- a negative tokens_input is its own CHECK's to name
  from unnest(array['tokens_cached_input', 'tokens_cache_write']) as key
  where metadata ? key
$$;
comment on function usagemeter_private.cache_token_counts_valid_v1(jsonb, int) is
  'CHECK helper: metadata.tokens_cached_input and metadata.tokens_cache_write are each absent or a whole number >= 0, together at most tokens_input.';
revoke all on function usagemeter_private.cache_token_counts_valid_v1(jsonb, int) from public;
grant execute on function usagemeter_private.cache_token_counts_valid_v1(jsonb, int) to authenticated, service_role;

alter table public.usage_events
  add column model text generated always as (nullif(metadata ->> 'model', '')) stored,
  add column cost numeric(20, 6) not null default 0,
  add column corrects_event_id uuid references public.usage_events (id) on delete cascade,
  add column correction_kind text,
  add column correction_reason text,
  add column event_count smallint generated always as (
    case when correction_kind is null then 1 when correction_kind = 'void' then -1 else 0 end
  ) stored,
  add column recorded_at timestamptz;
-- Rows from before this migration keep NULL: when they were written is not known.
alter table public.usage_events alter column recorded_at set default now();

comment on column public.usage_events.model is
  'The model, metadata->>''model'', computed by the database: what tokens are priced by, and a grouping key.';
comment on column public.usage_events.cost is
  'What the event costs in the price list''s currency, set by the database when it is written: its tokens at its model''s '
  'price plus its action''s per-event price, each in effect at created_at, rounded to 6 decimal places. On a correction: the change.';
comment on column public.usage_events.corrects_event_id is
  'On a correction entry: the event it voids or amends. NULL on events.';
comment on column public.usage_events.correction_kind is 'void or amend on a correction entry; NULL on events.';
comment on column public.usage_events.correction_reason is 'Why the service role corrected the event (required on a correction entry).';
comment on column public.usage_events.recorded_at is
  'When the row was written (created_at is when the event happened); set by the database. NULL on rows written before usagemeter kept it.';
comment on column public.usage_events.event_count is
  'What the row adds to event counts: 1 for an event, -1 for a void, 0 for an amendment; computed by the database.';

alter table public.usage_events
  add constraint usage_events_model_length check (model is null or char_length(model) <= 200) not valid,
  add constraint usage_events_correction_kind_valid check (correction_kind in ('void', 'amend')),
  add constraint usage_events_correction_complete check (
    (corrects_event_id is null) = (correction_kind is null)
    and (correction_kind is null) = (correction_reason is null)
  ),
  add constraint usage_events_correction_reason_length
    check (correction_reason is null or char_length(btrim(correction_reason)) between 1 and 1000),
  -- The helper runs only when the metadata names a cache count (OR stops at the first true).
  add constraint usage_events_cache_token_counts check (
    correction_kind is not null
    or not (metadata ?| array['tokens_cached_input', 'tokens_cache_write'])
    or usagemeter_private.cache_token_counts_valid_v1(metadata, tokens_input)
  ) not valid;

-- Corrections carry negative changes; events still count nothing below zero.
alter table public.usage_events
  drop constraint usage_events_tokens_input_nonnegative,
  drop constraint usage_events_tokens_output_nonnegative,
  add constraint usage_events_tokens_input_nonnegative check (tokens_input >= 0 or correction_kind is not null),
  add constraint usage_events_tokens_output_nonnegative check (tokens_output >= 0 or correction_kind is not null);

create index usage_events_corrects_event_id_idx
  on public.usage_events (corrects_event_id) where corrects_event_id is not null;

-- Rating ------------------------------------------------------------------------------------------

-- The rates that apply to an event of a tenant (NULL: personal usage, general prices only), model
-- and action at a moment, as [input, output, cached input, cache write, per event] per million
-- tokens (per event for the last); NULLs where no price applies. Which price: a tenant's own beats
-- the general one; for an action, one narrowed to the event's model beats one for any model; then
-- the latest effective_from at or before `at`. Cache rates fall back to the input rate.
create function usagemeter_private.price_rates_v1(tenant_id uuid, model text, action text, at timestamptz)
returns numeric[]
language plpgsql stable security definer
set search_path = ''
as $$
begin
  return (
    select array[t.input_per_million, t.output_per_million,
                 coalesce(t.cached_input_per_million, t.input_per_million),
                 coalesce(t.cache_write_per_million, t.input_per_million), a.per_event]
    from (select) as one
    left join lateral (
      select p.input_per_million, p.output_per_million, p.cached_input_per_million, p.cache_write_per_million
      from public.usage_prices as p
      where p.model = price_rates_v1.model and p.action is null
        and (p.tenant_id is null or p.tenant_id = price_rates_v1.tenant_id)
        and p.effective_from <= price_rates_v1.at
      order by p.tenant_id is null, p.effective_from desc
      limit 1
    ) as t on true
    left join lateral (
      select p.per_event
      from public.usage_prices as p
      where p.action = price_rates_v1.action
        and (p.model is null or p.model = price_rates_v1.model)
        and (p.tenant_id is null or p.tenant_id = price_rates_v1.tenant_id)
        and p.effective_from <= price_rates_v1.at
      order by p.tenant_id is null, p.model is null, p.effective_from desc
      limit 1
    ) as a on true
  );
end
$$;
comment on function usagemeter_private.price_rates_v1(uuid, text, text, timestamptz) is
  'The token rates (input, output, cached input, cache write; per million) and per-event price in effect for a tenant, model and action at a moment.';
revoke all on function usagemeter_private.price_rates_v1(uuid, text, text, timestamptz) from public;

-- What token counts and one event cost at the given rates. Cached input: the counts in metadata
-- (parts of tokens_input, clamped to it) at the cache rates; the rest of tokens_input at the
-- input rate. Exact in numeric, rounded once to 6 decimal places (half away from zero).
create function usagemeter_private.cost_at_rates_v1(rates numeric[], tokens_input bigint, tokens_output bigint,
                                                    metadata jsonb)
returns numeric
language plpgsql immutable
set search_path = ''
as $$
declare
  cached bigint := 0;
  cache_write bigint := 0;
  total numeric := coalesce(rates[5], 0);
begin
  if rates[1] is not null then
    if jsonb_typeof(metadata -> 'tokens_cached_input') = 'number' then
      cached := least(greatest((metadata ->> 'tokens_cached_input')::numeric, 0), tokens_input)::bigint;
    end if;
    if jsonb_typeof(metadata -> 'tokens_cache_write') = 'number' then
      cache_write := least(greatest((metadata ->> 'tokens_cache_write')::numeric, 0), tokens_input - cached)::bigint;
    end if;
    total := total + ((tokens_input - cached - cache_write) * rates[1] + cached * rates[3]
                      + cache_write * rates[4] + tokens_output * rates[2]) / 1000000;
  end if;
  return round(total, 6);
end
$$;
comment on function usagemeter_private.cost_at_rates_v1(numeric[], bigint, bigint, jsonb) is
  'The cost of token counts (cached input from metadata) and one event at rates from price_rates_v1, rounded to 6 decimal places.';
revoke all on function usagemeter_private.cost_at_rates_v1(numeric[], bigint, bigint, jsonb) from public;

create function usagemeter_private.event_cost_v1(
  tenant_id uuid, model text, action text, at timestamptz, tokens_input bigint, tokens_output bigint, metadata jsonb
) returns numeric
language plpgsql stable security definer
set search_path = ''
as $$
begin
  return usagemeter_private.cost_at_rates_v1(
    usagemeter_private.price_rates_v1(tenant_id, model, action, at), tokens_input, tokens_output, metadata);
end
$$;
comment on function usagemeter_private.event_cost_v1(uuid, text, text, timestamptz, bigint, bigint, jsonb) is
  'Cost of an event (tokens by its model, plus its action''s per-event price) under the prices in effect at a time, rounded to 6 decimal places.';
revoke all on function usagemeter_private.event_cost_v1(uuid, text, text, timestamptz, bigint, bigint, jsonb) from public;

-- Every event is rated as it is written (and again if the service role changes what it is rated
-- by); correction entries carry the change their function computed. The rates are looked up once
-- per statement for each (tenant, model, action, created_at) and kept in a transaction-local
-- setting for the statement's next rows (a batch's rows mostly share them: one lookup instead of
-- two per row, which halved the trigger's cost); a price loaded in the transaction clears them.
create function usagemeter_private.rate_usage_event_v1() returns trigger
language plpgsql security definer
set search_path = ''
as $$
declare
  model text := nullif(new.metadata ->> 'model', '');
  rates_key text;
  remembered text;
  rates numeric[];
begin
  if tg_op = 'INSERT' then
    new.recorded_at := now();  -- nobody chooses when a row was written
    -- Correction entries come only from void_usage_event_v1 / amend_usage_event_v1, which check them.
    if new.correction_kind is not null
       and current_setting('usagemeter.correcting_event', true) is distinct from new.corrects_event_id::text then
      raise exception 'usagemeter: correction entries are written by public.void_usage_event_v1 and public.amend_usage_event_v1 only'
        using errcode = '42501';
    end if;
  end if;
  if new.correction_kind is null then
    rates_key := concat_ws('|', statement_timestamp(), new.tenant_id, model, new.action, new.created_at) || '=';
    remembered := current_setting('usagemeter.statement_rates', true);
    if starts_with(remembered, rates_key) then
      rates := substr(remembered, length(rates_key) + 1)::numeric[];
    else
      rates := usagemeter_private.price_rates_v1(new.tenant_id, model, new.action, new.created_at);
      perform set_config('usagemeter.statement_rates', rates_key || rates::text, true);
    end if;
    new.cost := usagemeter_private.cost_at_rates_v1(rates, new.tokens_input, new.tokens_output, new.metadata);
  end if;
  return new;
end
$$;
comment on function usagemeter_private.rate_usage_event_v1() is
  'BEFORE INSERT/UPDATE row trigger on usage_events: stamps recorded_at on insert, and sets cost from the prices in effect at created_at (correction entries keep theirs).';
revoke all on function usagemeter_private.rate_usage_event_v1() from public;

create trigger usage_events_rate
  before insert or update of tenant_id, action, tokens_input, tokens_output, metadata, created_at, cost, recorded_at
  on public.usage_events
  for each row execute function usagemeter_private.rate_usage_event_v1();

-- Corrections ---------------------------------------------------------------------------------
-- The two functions are security definer (they reach usagemeter_private, which no API role may
-- use) and executable by the service role alone.

-- What an event adds up to with its corrections so far, locking the original (so corrections of
-- one event run one at a time).
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

create function public.void_usage_event_v1(event_id uuid, reason text) returns uuid
language plpgsql security definer
set search_path = ''
as $$
declare
  current record;
  entry_id uuid;
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
    (tenant_id, user_id, action, module_id, tokens_input, tokens_output, metadata, created_at, cost,
     corrects_event_id, correction_kind, correction_reason)
  values ((current.original).tenant_id, (current.original).user_id, (current.original).action,
          (current.original).module_id, -current.tokens_input, -current.tokens_output,
          jsonb_strip_nulls(jsonb_build_object('model', (current.original).model)),
          (current.original).created_at, -current.cost, event_id, 'void', reason)
  returning id into entry_id;
  perform set_config('usagemeter.correcting_event', '', true);
  return entry_id;
end
$$;
comment on function public.void_usage_event_v1(uuid, text) is
  'Service role: voids an event with a reason, as a correction entry that takes back its counts, tokens and cost; returns the entry''s id.';
revoke all on function public.void_usage_event_v1(uuid, text) from public, anon, authenticated;
grant execute on function public.void_usage_event_v1(uuid, text) to service_role;

create function public.amend_usage_event_v1(event_id uuid, tokens_input int, tokens_output int, reason text)
returns uuid
language plpgsql security definer
set search_path = ''
as $$
declare
  current record;
  new_cost numeric;
  entry_id uuid;
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
    (tenant_id, user_id, action, module_id, tokens_input, tokens_output, metadata, created_at, cost,
     corrects_event_id, correction_kind, correction_reason)
  values ((current.original).tenant_id, (current.original).user_id, (current.original).action,
          (current.original).module_id, tokens_input - current.tokens_input, tokens_output - current.tokens_output,
          jsonb_strip_nulls(jsonb_build_object('model', (current.original).model)),
          (current.original).created_at, new_cost - current.cost, event_id, 'amend', reason)
  returning id into entry_id;
  perform set_config('usagemeter.correcting_event', '', true);
  return entry_id;
end
$$;
comment on function public.amend_usage_event_v1(uuid, int, int, text) is
  'Service role: sets an event''s token counts (re-priced at its created_at) with a reason, as a correction entry carrying the change; returns the entry''s id.';
revoke all on function public.amend_usage_event_v1(uuid, int, int, text) from public, anon, authenticated;
grant execute on function public.amend_usage_event_v1(uuid, int, int, text) to service_role;

-- Rollups: model and cost --------------------------------------------------------------------------

alter table public.usage_rollup_deltas add column model text, add column cost numeric(20, 6) not null default 0;
alter table public.usage_rollup_hourly add column model text, add column cost numeric(20, 6) not null default 0;
alter table public.usage_rollup_daily add column model text, add column cost numeric(20, 6) not null default 0;
alter table public.usage_rollup_tenant_daily add column model text, add column cost numeric(20, 6) not null default 0;
comment on column public.usage_rollup_deltas.model is 'Model of the events.';
comment on column public.usage_rollup_deltas.cost is 'Change in the sum of cost.';
comment on column public.usage_rollup_deltas.events is 'Change in the number of events (the sum of event_count: voids count -1).';
comment on column public.usage_rollup_hourly.model is 'Model of the events.';
comment on column public.usage_rollup_hourly.cost is 'Sum of cost.';
comment on column public.usage_rollup_hourly.events is 'Number of events: the sum of event_count (voids count -1).';
comment on column public.usage_rollup_daily.model is 'Model of the events.';
comment on column public.usage_rollup_daily.cost is 'Sum of cost.';
comment on column public.usage_rollup_daily.events is 'Number of events: the sum of event_count (voids count -1).';
comment on column public.usage_rollup_tenant_daily.model is 'Model of the events.';
comment on column public.usage_rollup_tenant_daily.cost is 'Sum of cost.';
comment on column public.usage_rollup_tenant_daily.events is 'Number of events: the sum of event_count (voids count -1).';

drop index public.usage_rollup_hourly_key;
drop index public.usage_rollup_hourly_tenant_bucket_idx;
drop index public.usage_rollup_hourly_personal_user_bucket_idx;
drop index public.usage_rollup_daily_key;
drop index public.usage_rollup_daily_tenant_day_idx;
drop index public.usage_rollup_daily_personal_user_day_idx;
alter table public.usage_rollup_tenant_daily drop constraint usage_rollup_tenant_daily_key;

-- Deleted and refilled below; the indexes are built after the refill.
delete from public.usage_rollup_deltas;
delete from public.usage_rollup_hourly;
delete from public.usage_rollup_daily;
delete from public.usage_rollup_tenant_daily;

insert into public.usage_rollup_hourly
  (bucket, tenant_id, user_id, action, module_id, model, events, tokens_input, tokens_output, tokens_total, cost)
select date_trunc('hour', created_at, 'UTC'), tenant_id, user_id, action, split_part(action, ':', 1), model,
       sum(event_count), sum(tokens_input), sum(tokens_output), sum(tokens_total), sum(cost)
from public.usage_events
group by 1, 2, 3, 4, 6
having (sum(event_count), sum(tokens_input), sum(tokens_output), sum(cost)) <> (0, 0, 0, 0);
insert into public.usage_rollup_daily
  (day, tenant_id, user_id, action, module_id, model, events, tokens_input, tokens_output, tokens_total, cost)
select date_trunc('day', bucket, 'UTC'), tenant_id, user_id, action, module_id, model,
       sum(events), sum(tokens_input), sum(tokens_output), sum(tokens_total), sum(cost)
from public.usage_rollup_hourly
group by 1, 2, 3, 4, 5, 6;
insert into public.usage_rollup_tenant_daily
  (day, tenant_id, action, module_id, model, events, tokens_input, tokens_output, tokens_total, cost)
select day, tenant_id, action, module_id, model, sum(events), sum(tokens_input), sum(tokens_output),
       sum(tokens_total), sum(cost)
from public.usage_rollup_daily
where tenant_id is not null
group by 1, 2, 3, 4, 5;

create unique index usage_rollup_hourly_key
  on public.usage_rollup_hourly (tenant_id, user_id, action, model, bucket) nulls not distinct;
create index usage_rollup_hourly_tenant_bucket_idx
  on public.usage_rollup_hourly (tenant_id, bucket)
  include (user_id, action, module_id, model, events, tokens_input, tokens_output, tokens_total, cost);
create index usage_rollup_hourly_personal_user_bucket_idx
  on public.usage_rollup_hourly (user_id, bucket)
  include (action, module_id, model, events, tokens_input, tokens_output, tokens_total, cost)
  where tenant_id is null;
create unique index usage_rollup_daily_key
  on public.usage_rollup_daily (tenant_id, user_id, action, model, day) nulls not distinct;
create index usage_rollup_daily_tenant_day_idx
  on public.usage_rollup_daily (tenant_id, day)
  include (user_id, action, module_id, model, events, tokens_input, tokens_output, tokens_total, cost);
create index usage_rollup_daily_personal_user_day_idx
  on public.usage_rollup_daily (user_id, day)
  include (action, module_id, model, events, tokens_input, tokens_output, tokens_total, cost)
  where tenant_id is null;
create unique index usage_rollup_tenant_daily_key
  on public.usage_rollup_tenant_daily (tenant_id, day, action, model)
  include (module_id, events, tokens_input, tokens_output, tokens_total, cost) nulls not distinct;

-- The fold, as before, with model in the key and cost among the sums.
create or replace function usagemeter_private.fold_usage_rollups_v1() returns bigint
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
    returning d.bucket, d.tenant_id, d.user_id, d.action, d.model, d.events, d.tokens_input, d.tokens_output,
              d.tokens_total, d.cost
  ),
  hourly as (
    select bucket, tenant_id, user_id, action, model, sum(events) as events, sum(tokens_input) as tokens_input,
           sum(tokens_output) as tokens_output, sum(tokens_total) as tokens_total, sum(cost) as cost
    from moved group by 1, 2, 3, 4, 5
  ),
  upserted_hours as (
    insert into public.usage_rollup_hourly as r
      (bucket, tenant_id, user_id, action, module_id, model, events, tokens_input, tokens_output, tokens_total, cost)
    select bucket, tenant_id, user_id, action, split_part(action, ':', 1), model, events, tokens_input,
           tokens_output, tokens_total, cost
    from hourly where (events, tokens_input, tokens_output, cost) <> (0, 0, 0, 0)
    order by tenant_id, user_id, action, model, bucket
    on conflict (tenant_id, user_id, action, model, bucket) do update
      set events = r.events + excluded.events, tokens_input = r.tokens_input + excluded.tokens_input,
          tokens_output = r.tokens_output + excluded.tokens_output,
          tokens_total = r.tokens_total + excluded.tokens_total, cost = r.cost + excluded.cost
    returning r.id, (r.events, r.tokens_input, r.tokens_output, r.cost) = (0, 0, 0, 0) as emptied
  ),
  daily as (
    select date_trunc('day', bucket, 'UTC') as day, tenant_id, user_id, action, model, sum(events) as events,
           sum(tokens_input) as tokens_input, sum(tokens_output) as tokens_output,
           sum(tokens_total) as tokens_total, sum(cost) as cost
    from hourly group by 1, 2, 3, 4, 5
  ),
  upserted_days as (
    insert into public.usage_rollup_daily as r
      (day, tenant_id, user_id, action, module_id, model, events, tokens_input, tokens_output, tokens_total, cost)
    select day, tenant_id, user_id, action, split_part(action, ':', 1), model, events, tokens_input, tokens_output,
           tokens_total, cost
    from daily where (events, tokens_input, tokens_output, cost) <> (0, 0, 0, 0)
    order by tenant_id, user_id, action, model, day
    on conflict (tenant_id, user_id, action, model, day) do update
      set events = r.events + excluded.events, tokens_input = r.tokens_input + excluded.tokens_input,
          tokens_output = r.tokens_output + excluded.tokens_output,
          tokens_total = r.tokens_total + excluded.tokens_total, cost = r.cost + excluded.cost
    returning r.id, (r.events, r.tokens_input, r.tokens_output, r.cost) = (0, 0, 0, 0) as emptied
  ),
  tenant_daily as (
    select day, tenant_id, action, model, sum(events) as events, sum(tokens_input) as tokens_input,
           sum(tokens_output) as tokens_output, sum(tokens_total) as tokens_total, sum(cost) as cost
    from daily where tenant_id is not null group by 1, 2, 3, 4
  ),
  upserted_tenant_days as (
    insert into public.usage_rollup_tenant_daily as r
      (day, tenant_id, action, module_id, model, events, tokens_input, tokens_output, tokens_total, cost)
    select day, tenant_id, action, split_part(action, ':', 1), model, events, tokens_input, tokens_output,
           tokens_total, cost
    from tenant_daily where (events, tokens_input, tokens_output, cost) <> (0, 0, 0, 0)
    order by tenant_id, day, action, model
    on conflict (tenant_id, day, action, model) do update
      set events = r.events + excluded.events, tokens_input = r.tokens_input + excluded.tokens_input,
          tokens_output = r.tokens_output + excluded.tokens_output,
          tokens_total = r.tokens_total + excluded.tokens_total, cost = r.cost + excluded.cost
    returning r.id, (r.events, r.tokens_input, r.tokens_output, r.cost) = (0, 0, 0, 0) as emptied
  )
  select (select count(*) from moved),
         (select array_agg(id) from upserted_hours where emptied),
         (select array_agg(id) from upserted_days where emptied),
         (select array_agg(id) from upserted_tenant_days where emptied)
    into folded, emptied_hours, emptied_days, emptied_tenant_days;

  -- A group left with no events, tokens or cost has nothing to say: it goes. (A group of
  -- corrections alone, booked apart from their events, keeps its token and cost changes.)
  delete from public.usage_rollup_hourly where id = any (emptied_hours);
  delete from public.usage_rollup_daily where id = any (emptied_days);
  delete from public.usage_rollup_tenant_daily where id = any (emptied_tenant_days);
  return folded;
end
$$;

-- The delta of one statement, as before, per hour, tenant, user, action and model, counting
-- event_count (an event +1, a void -1, an amendment 0) and adding cost.
create or replace function usagemeter_private.add_usage_rollup_deltas_v1() returns trigger
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
        (bucket, tenant_id, user_id, action, module_id, model, events, tokens_input, tokens_output, tokens_total,
         cost)
      select date_trunc('hour', created_at, 'UTC'), tenant_id, user_id, action, split_part(action, ':', 1), model,
             sum(event_count), sum(tokens_input), sum(tokens_output), sum(tokens_total), sum(cost)
      from added_rows group by 1, 2, 3, 4, 6
      returning id
    )
    select min(id), max(id) into first_id, last_id from added;
  elsif tg_op = 'DELETE' then
    with added as (
      insert into public.usage_rollup_deltas
        (bucket, tenant_id, user_id, action, module_id, model, events, tokens_input, tokens_output, tokens_total,
         cost)
      select date_trunc('hour', created_at, 'UTC'), tenant_id, user_id, action, split_part(action, ':', 1), model,
             -sum(event_count), -sum(tokens_input), -sum(tokens_output), -sum(tokens_total), -sum(cost)
      from removed_rows as e
      -- The events of a deleted tenant (the cascade) leave no delta: the tenant's rows are deleted.
      where e.tenant_id is null or exists (select from public.tenants as t where t.id = e.tenant_id)
      group by 1, 2, 3, 4, 6
      returning id
    )
    select min(id), max(id) into first_id, last_id from added;
  else
    with changes as (
      select created_at, tenant_id, user_id, action, model, event_count, tokens_input, tokens_output, tokens_total,
             cost
      from added_rows
      union all
      select created_at, tenant_id, user_id, action, model, -event_count, -tokens_input, -tokens_output,
             -tokens_total, -cost
      from removed_rows
    ),
    grouped as (
      select date_trunc('hour', created_at, 'UTC') as bucket, tenant_id, user_id, action, model,
             sum(event_count) as events, sum(tokens_input) as tokens_input, sum(tokens_output) as tokens_output,
             sum(tokens_total) as tokens_total, sum(cost) as cost
      from changes group by 1, 2, 3, 4, 5
    ),
    added as (
      insert into public.usage_rollup_deltas
        (bucket, tenant_id, user_id, action, module_id, model, events, tokens_input, tokens_output, tokens_total,
         cost)
      select bucket, tenant_id, user_id, action, split_part(action, ':', 1), model, events, tokens_input,
             tokens_output, tokens_total, cost
      from grouped where (events, tokens_input, tokens_output, cost) <> (0, 0, 0, 0)
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
