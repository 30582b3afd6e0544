-- Queries of billing's corrections (corrections.py): voiding and amending an event through the
-- database's functions, and reading an event back with its correction entries.
-- One query per `-- name --` marker, with a comment saying what it is for. Parameters are %(name)s
-- placeholders bound by psycopg; no SQL is ever built from values.

-- void_event --
-- Void an event: the database appends a correction entry taking back its counts, tokens and cost,
-- and returns the entry's id (service role only; the rules are the function's).
select public.void_usage_event_v1(%(event_id)s::uuid, %(reason)s::text)

-- amend_event --
-- Set an event's token counts: the database appends a correction entry carrying the change, re-priced
-- at the event's created_at, and returns the entry's id (service role only).
select public.amend_usage_event_v1(%(event_id)s::uuid, %(tokens_input)s::int, %(tokens_output)s::int, %(reason)s::text)

-- correction_entry --
-- A correction entry just appended, as the function wrote it.
select e.id, e.corrects_event_id, e.correction_kind, e.tokens_input, e.tokens_output, e.cost, e.correction_reason
from public.usage_events as e
where e.id = %(entry_id)s::uuid

-- event_history --
-- An event and its correction entries, as the caller's role sees them (row-level security decides),
-- given the id of the event or of one of its entries: the event first, then its corrections in the
-- order they were written (recorded_at: corrections of one event run one at a time, as each locks
-- the event, so their transactions and times follow one another; a void, after which nothing is
-- accepted, comes last).
with original as (
  select coalesce(c.corrects_event_id, c.id) as id from public.usage_events as c where c.id = %(event_id)s::uuid
),
entries as (
  select e.* from public.usage_events as e join original as o on e.id = o.id
  union all
  select e.* from public.usage_events as e join original as o on e.corrects_event_id = o.id
)
select id, corrects_event_id, correction_kind, tenant_id, user_id, action, model, tokens_input, tokens_output,
       cost, correction_reason, created_at
from entries
order by corrects_event_id is not null, correction_kind is not distinct from 'void', recorded_at, id
