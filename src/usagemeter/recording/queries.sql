-- Queries of the write flow: finding events stored before (retries, idempotency keys). The INSERT
-- statements are composed from the one column definition in insert_sql.py.
-- One query per `-- name --` marker, with a comment saying what it is for. Parameters are %(name)s
-- placeholders bound by psycopg; no SQL is ever built from values.

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
