-- Queries of the write flow: inserting events and finding ones stored before (retries, idempotency keys).
-- One query per `-- name --` marker, with a comment saying what it is for. Parameters are %(name)s
-- placeholders bound by psycopg; no SQL is ever built from values.

-- insert_events --
-- Append a batch in one statement, as the current role (RLS checks each row). Ids are chosen by the
-- recorder, so a row already stored by an earlier attempt, or a used idempotency key, is skipped, not doubled.
insert into public.usage_events
  (id, tenant_id, user_id, action, module_id, tokens_input, tokens_output, metadata, idempotency_key)
select * from unnest(
  %(ids)s::uuid[], %(tenant_ids)s::uuid[], %(user_ids)s::uuid[], %(actions)s::text[], %(module_ids)s::text[],
  %(tokens_input)s::int[], %(tokens_output)s::int[], %(metadata)s::jsonb[], %(idempotency_keys)s::text[]
)
on conflict do nothing
returning id, created_at

-- insert_events_with_created_at --
-- The same for the service role, which may set created_at (backfills, late events); NULL means now().
insert into public.usage_events
  (id, tenant_id, user_id, action, module_id, tokens_input, tokens_output, metadata, idempotency_key, created_at)
select id, tenant_id, user_id, action, module_id, tokens_input, tokens_output, metadata, idempotency_key,
       coalesce(created_at, now())
from unnest(
  %(ids)s::uuid[], %(tenant_ids)s::uuid[], %(user_ids)s::uuid[], %(actions)s::text[], %(module_ids)s::text[],
  %(tokens_input)s::int[], %(tokens_output)s::int[], %(metadata)s::jsonb[], %(idempotency_keys)s::text[],
  %(created_at)s::timestamptz[]
) as e(id, tenant_id, user_id, action, module_id, tokens_input, tokens_output, metadata, idempotency_key, created_at)
on conflict do nothing
returning id, created_at

-- events_by_id --
-- Rows an earlier attempt of this very write already stored (same recorder-chosen ids).
select id, created_at from public.usage_events where id = any(%(ids)s::uuid[])

-- events_by_idempotency_key --
-- Stored events holding the given (tenant, user, key) triples, and whether their metadata equals the sent
-- one as jsonb compares it (1e23 and 100000000000000000000000 are one number); one arm per NULL pattern so
-- each uses the unique index.
select k.ord, e.id, e.created_at, e.tenant_id, e.user_id, e.action, e.module_id, e.tokens_input, e.tokens_output,
       e.metadata = k.metadata
from unnest(%(tenant_ids)s::uuid[], %(user_ids)s::uuid[], %(idempotency_keys)s::text[], %(metadata)s::jsonb[])
  with ordinality as k(tenant_id, user_id, idempotency_key, metadata, ord)
join public.usage_events as e
  on e.idempotency_key = k.idempotency_key and e.tenant_id = k.tenant_id and e.user_id = k.user_id
union all
select k.ord, e.id, e.created_at, e.tenant_id, e.user_id, e.action, e.module_id, e.tokens_input, e.tokens_output,
       e.metadata = k.metadata
from unnest(%(tenant_ids)s::uuid[], %(user_ids)s::uuid[], %(idempotency_keys)s::text[], %(metadata)s::jsonb[])
  with ordinality as k(tenant_id, user_id, idempotency_key, metadata, ord)
join public.usage_events as e
  on e.idempotency_key = k.idempotency_key and e.tenant_id is null and k.tenant_id is null and e.user_id = k.user_id
union all
select k.ord, e.id, e.created_at, e.tenant_id, e.user_id, e.action, e.module_id, e.tokens_input, e.tokens_output,
       e.metadata = k.metadata
from unnest(%(tenant_ids)s::uuid[], %(user_ids)s::uuid[], %(idempotency_keys)s::text[], %(metadata)s::jsonb[])
  with ordinality as k(tenant_id, user_id, idempotency_key, metadata, ord)
join public.usage_events as e
  on e.idempotency_key = k.idempotency_key and e.user_id is null and k.user_id is null and e.tenant_id = k.tenant_id

-- insert_events_plain --
-- The fast path: append a chunk with no conflict handling (a used id or key fails the statement and the
-- careful path, insert_events, takes over). Binary parameters: cheaper to send than text arrays.
insert into public.usage_events
  (id, tenant_id, user_id, action, module_id, tokens_input, tokens_output, metadata, idempotency_key)
select * from unnest(
  %(ids)b::uuid[], %(tenant_ids)b::uuid[], %(user_ids)b::uuid[], %(actions)b::text[], %(module_ids)b::text[],
  %(tokens_input)b::int[], %(tokens_output)b::int[], %(metadata)b::jsonb[], %(idempotency_keys)b::text[]
)

-- insert_events_plain_with_created_at --
-- The fast path for the service role, which may set created_at.
insert into public.usage_events
  (id, tenant_id, user_id, action, module_id, tokens_input, tokens_output, metadata, idempotency_key, created_at)
select id, tenant_id, user_id, action, module_id, tokens_input, tokens_output, metadata, idempotency_key,
       coalesce(created_at, now())
from unnest(
  %(ids)b::uuid[], %(tenant_ids)b::uuid[], %(user_ids)b::uuid[], %(actions)b::text[], %(module_ids)b::text[],
  %(tokens_input)b::int[], %(tokens_output)b::int[], %(metadata)b::jsonb[], %(idempotency_keys)b::text[],
  %(created_at)b::timestamptz[]
) as e(id, tenant_id, user_id, action, module_id, tokens_input, tokens_output, metadata, idempotency_key, created_at)
