-- Every query usagemeter sends, one per `-- name --` marker, with a line saying what it is for.
-- Parameters are %(name)s placeholders bound by psycopg; no SQL is ever built from values.

-- become_request_identity --
-- What Supabase's API layer does per request: switch role and set the JWT claims, for this transaction only.
-- Also returns now(), the created_at of rows this transaction writes without one.
select set_config('role', %(role)s, true), set_config('request.jwt.claims', %(claims)s, true), now()

-- drop_request_identity --
-- Back to the session's own role and no claims, for the rest of the current transaction.
select set_config('role', 'none', true), set_config('request.jwt.claims', '', true)

-- lock_migrations --
-- Serialise migrators on this database: a second one waits until the first has finished.
select pg_advisory_lock(hashtext('usagemeter:migrate'))

-- unlock_migrations --
-- Let the next migrator in.
select pg_advisory_unlock(hashtext('usagemeter:migrate'))

-- create_migration_history --
-- The history table the Supabase CLI keeps, created where absent so either tool can take over.
create schema if not exists supabase_migrations;
create table if not exists supabase_migrations.schema_migrations (
  version text not null primary key,
  statements text[],
  name text
)

-- applied_migrations --
-- Every recorded migration, ours or the application's own.
select version, name, statements from supabase_migrations.schema_migrations order by version

-- migration_history_exists --
-- Whether the history table exists yet (status must not create it).
select to_regclass('supabase_migrations.schema_migrations') is not null

-- record_migration --
-- Mark a migration applied, by column name since newer Supabase CLIs add nullable columns.
insert into supabase_migrations.schema_migrations (version, name, statements)
values (%(version)s, %(name)s, %(statements)s)

-- table_shape --
-- A table's columns as "name type, ...", or NULL when no such table exists.
select string_agg(format('%%s %%s', a.attname, format_type(a.atttypid, a.atttypmod)), ', ' order by a.attnum)
from pg_catalog.pg_attribute as a
where a.attrelid = to_regclass(%(table)s) and a.attnum > 0 and not a.attisdropped

-- server_version --
-- The server's major and full version, for status output and version-specific checks.
select current_setting('server_version_num')::int / 10000, current_setting('server_version')

-- table_columns --
-- Columns of every table in a schema, with what type generation needs to know about each.
select
  c.relname as table_name,
  a.attname as column_name,
  a.attnum as position,
  coalesce(et.typname, t.typname) as type_name,
  t.typcategory = 'A' as is_array,
  not a.attnotnull as is_nullable,
  a.atthasdef and a.attgenerated = '' as has_default,
  a.attgenerated <> '' as is_generated,
  a.attidentity <> '' as is_identity,
  col_description(c.oid, a.attnum) as comment
from pg_catalog.pg_class as c
join pg_catalog.pg_namespace as n on n.oid = c.relnamespace
join pg_catalog.pg_attribute as a on a.attrelid = c.oid
join pg_catalog.pg_type as t on t.oid = a.atttypid
left join pg_catalog.pg_type as et on et.oid = t.typelem and t.typcategory = 'A'
where n.nspname = %(schema)s and c.relkind in ('r', 'p') and a.attnum > 0 and not a.attisdropped
order by c.relname, a.attname

-- table_comments --
-- The comment on every table in a schema.
select c.relname as table_name, obj_description(c.oid, 'pg_class') as comment
from pg_catalog.pg_class as c
join pg_catalog.pg_namespace as n on n.oid = c.relnamespace
where n.nspname = %(schema)s and c.relkind in ('r', 'p')
order by c.relname

-- foreign_keys --
-- Foreign keys between tables of one schema, as Supabase's type generator lists them.
select
  con.conname as name,
  src.relname as table_name,
  array(select a.attname from unnest(con.conkey) with ordinality as k(attnum, ord)
        join pg_catalog.pg_attribute as a on a.attrelid = con.conrelid and a.attnum = k.attnum
        order by k.ord)::text[] as columns,
  ref.relname as referenced_table,
  array(select a.attname from unnest(con.confkey) with ordinality as k(attnum, ord)
        join pg_catalog.pg_attribute as a on a.attrelid = con.confrelid and a.attnum = k.attnum
        order by k.ord)::text[] as referenced_columns,
  exists (
    select 1 from pg_catalog.pg_index as i
    where i.indrelid = con.conrelid and i.indisunique and i.indpred is null
      and (select array_agg(x order by x) from unnest(i.indkey::int2[]) as x)
        = (select array_agg(x order by x) from unnest(con.conkey) as x)
  ) as is_one_to_one
from pg_catalog.pg_constraint as con
join pg_catalog.pg_class as src on src.oid = con.conrelid
join pg_catalog.pg_namespace as sn on sn.oid = src.relnamespace
join pg_catalog.pg_class as ref on ref.oid = con.confrelid
join pg_catalog.pg_namespace as rn on rn.oid = ref.relnamespace
where con.contype = 'f' and sn.nspname = %(schema)s and rn.nspname = %(schema)s
order by src.relname, con.conname

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
-- Stored events holding the given (tenant, user, key) triples; one arm per NULL pattern so each uses the unique index.
select k.ord, e.id, e.created_at, e.tenant_id, e.user_id, e.action, e.module_id, e.tokens_input, e.tokens_output,
       e.metadata
from unnest(%(tenant_ids)s::uuid[], %(user_ids)s::uuid[], %(idempotency_keys)s::text[])
  with ordinality as k(tenant_id, user_id, idempotency_key, ord)
join public.usage_events as e
  on e.idempotency_key = k.idempotency_key and e.tenant_id = k.tenant_id and e.user_id = k.user_id
union all
select k.ord, e.id, e.created_at, e.tenant_id, e.user_id, e.action, e.module_id, e.tokens_input, e.tokens_output,
       e.metadata
from unnest(%(tenant_ids)s::uuid[], %(user_ids)s::uuid[], %(idempotency_keys)s::text[])
  with ordinality as k(tenant_id, user_id, idempotency_key, ord)
join public.usage_events as e
  on e.idempotency_key = k.idempotency_key and e.tenant_id is null and k.tenant_id is null and e.user_id = k.user_id
union all
select k.ord, e.id, e.created_at, e.tenant_id, e.user_id, e.action, e.module_id, e.tokens_input, e.tokens_output,
       e.metadata
from unnest(%(tenant_ids)s::uuid[], %(user_ids)s::uuid[], %(idempotency_keys)s::text[])
  with ordinality as k(tenant_id, user_id, idempotency_key, ord)
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

-- rollup_differences --
-- Groups where a rollup and the raw events disagree (none when the triggers did their job).
with raw as (
  select date_trunc('hour', created_at, 'UTC') as bucket, tenant_id, user_id, action,
         count(*)::bigint as events, sum(tokens_input)::bigint as tokens_input,
         sum(tokens_output)::bigint as tokens_output, sum(tokens_total)::bigint as tokens_total
  from public.usage_events group by 1, 2, 3, 4
), raw_days as (
  select date_trunc('day', bucket, 'UTC') as bucket, tenant_id, user_id, action, sum(events)::bigint as events,
         sum(tokens_input)::bigint as tokens_input, sum(tokens_output)::bigint as tokens_output,
         sum(tokens_total)::bigint as tokens_total
  from raw group by 1, 2, 3, 4
), raw_tenant_days as (
  select bucket, tenant_id, action, sum(events)::bigint as events, sum(tokens_input)::bigint as tokens_input,
         sum(tokens_output)::bigint as tokens_output, sum(tokens_total)::bigint as tokens_total
  from raw_days where tenant_id is not null group by 1, 2, 3
), tenant_days as (
  select day, tenant_id, action, events, tokens_input, tokens_output, tokens_total
  from public.usage_rollup_tenant_daily where events <> 0
), hours as (
  select bucket, tenant_id, user_id, action, events, tokens_input, tokens_output, tokens_total
  from public.usage_rollup_hourly where events <> 0
), days as (
  select day, tenant_id, user_id, action, events, tokens_input, tokens_output, tokens_total
  from public.usage_rollup_daily where events <> 0
)
select count(*) from (
  select 'hour', bucket, tenant_id, user_id, action
  from ((table raw except table hours) union all (table hours except table raw)) as mismatched
  union
  select 'day', bucket, tenant_id, user_id, action
  from ((table raw_days except table days) union all (table days except table raw_days)) as mismatched_days
  union
  select 'tenant day', bucket, tenant_id, null, action
  from ((table raw_tenant_days except table tenant_days) union all (table tenant_days except table raw_tenant_days))
    as mismatched_tenant_days
) as differing_groups

-- lock_usage_for_rebuild --
-- Hold writers off while the rollups are rebuilt, so no event lands between the delete and the insert.
lock table public.usage_events in share mode

-- clear_rollups --
-- Forget both rollups (the rebuild refills them in the same transaction).
delete from public.usage_rollup_hourly;
delete from public.usage_rollup_daily;
delete from public.usage_rollup_tenant_daily

-- rebuild_hourly_rollup --
-- The hourly rollup recomputed from every raw event.
insert into public.usage_rollup_hourly
  (bucket, tenant_id, user_id, action, module_id, events, tokens_input, tokens_output, tokens_total)
select date_trunc('hour', created_at, 'UTC'), tenant_id, user_id, action, split_part(action, ':', 1),
       count(*), sum(tokens_input), sum(tokens_output), sum(tokens_total)
from public.usage_events
group by 1, 2, 3, 4

-- rebuild_tenant_daily_rollup --
-- The tenant-wide daily rollup recomputed from the daily one.
insert into public.usage_rollup_tenant_daily
  (day, tenant_id, action, module_id, events, tokens_input, tokens_output, tokens_total)
select day, tenant_id, action, module_id, sum(events), sum(tokens_input), sum(tokens_output), sum(tokens_total)
from public.usage_rollup_daily
where tenant_id is not null
group by 1, 2, 3, 4

-- rebuild_daily_rollup --
-- The daily rollup recomputed from the hourly one.
insert into public.usage_rollup_daily
  (day, tenant_id, user_id, action, module_id, events, tokens_input, tokens_output, tokens_total)
select date_trunc('day', bucket, 'UTC'), tenant_id, user_id, action, module_id,
       sum(events), sum(tokens_input), sum(tokens_output), sum(tokens_total)
from public.usage_rollup_hourly
group by 1, 2, 3, 4, 5
