-- Queries of operations: migration history and locks, and the catalog reads type generation needs.
-- One query per `-- name --` marker, with a comment saying what it is for. Parameters are %(name)s
-- placeholders bound by psycopg; no SQL is ever built from values.

-- lock_migrations --
-- Serialise migrators on this database for the rest of this transaction: a second one waits. A
-- transaction-level lock holds no session state, so it works through a transaction-mode pooler too.
select pg_advisory_xact_lock(hashtext('usagemeter:migrate'))

-- create_migration_history --
-- The history table the Supabase CLI keeps, created or completed the way the CLI does it, so either
-- tool can take over: a table from a CLI before mid-2023 has only `version` (or `version, statements`);
-- the missing columns are added and its rows kept.
create schema if not exists supabase_migrations;
create table if not exists supabase_migrations.schema_migrations (version text not null primary key);
alter table supabase_migrations.schema_migrations add column if not exists statements text[];
alter table supabase_migrations.schema_migrations add column if not exists name text

-- applied_migrations --
-- Every recorded version, ours or the application's own, with its statements (NULL when the history
-- table predates that column): read through to_jsonb so a history table of any CLI age can be read
-- before anything is changed.
select h.version, to_jsonb(h) -> 'statements' as statements
from supabase_migrations.schema_migrations as h
order by h.version

-- migration_recorded --
-- Whether a version is recorded already (another migrator applied it while this one waited).
select exists (select from supabase_migrations.schema_migrations where version = %(version)s)

-- migration_history_exists --
-- Whether the history table exists yet (status and the pre-flight checks must not create it).
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

-- schema_exists --
-- Whether a schema of this name exists (pre-flight checks of the migration runner).
select to_regnamespace(%(schema)s) is not null

-- server_version --
-- The server's major and full version, for status output and version-specific checks.
select current_setting('server_version_num')::int / 10000, current_setting('server_version')

-- typegen_relations --
-- Tables, foreign tables, views and materialized views of the schemas types are generated for,
-- as postgres-meta lists them: a view takes inserts and updates when it is updatable and deletable.
select
  c.oid::int8 as id,
  n.nspname as schema,
  c.relname as name,
  case c.relkind
    when 'v' then 'view'
    when 'm' then 'materialized_view'
    when 'f' then 'foreign_table'
    else 'table'
  end as kind,
  c.relkind = 'v' and (pg_relation_is_updatable(c.oid, false) & 20) = 20 as is_updatable,
  obj_description(c.oid, 'pg_class') as comment
from pg_catalog.pg_class as c
join pg_catalog.pg_namespace as n on n.oid = c.relnamespace
where n.nspname = any(%(schemas)s) and c.relkind in ('r', 'p', 'f', 'v', 'm')
  and (
    pg_has_role(c.relowner, 'USAGE')
    or has_table_privilege(c.oid, 'SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER')
    or has_any_column_privilege(c.oid, 'SELECT, INSERT, UPDATE, REFERENCES')
  )
order by c.oid

-- typegen_columns --
-- Columns of those relations with what the Row, Insert and Update types depend on. The type is the
-- base type of a domain and "_<element>" for an array; a generated column has a default here, as
-- postgres-meta reports it.
select
  c.oid::int8 as relation_id,
  a.attname as name,
  a.attnum as position,
  coalesce(bt.typname, t.typname) as format,
  not (a.attnotnull or (t.typtype = 'd' and t.typnotnull)) as is_nullable,
  a.atthasdef as has_default,
  a.attidentity in ('a', 'd') as is_identity,
  a.attidentity = 'a' as is_identity_always,
  a.attgenerated <> '' as is_generated,
  c.relkind in ('r', 'p')
    or (c.relkind in ('v', 'f') and pg_column_is_updatable(c.oid, a.attnum, false)) as is_updatable,
  col_description(c.oid, a.attnum) as comment
from pg_catalog.pg_attribute as a
join pg_catalog.pg_class as c on c.oid = a.attrelid
join pg_catalog.pg_namespace as n on n.oid = c.relnamespace
join pg_catalog.pg_type as t on t.oid = a.atttypid
left join pg_catalog.pg_type as bt on t.typtype = 'd' and bt.oid = t.typbasetype
where n.nspname = any(%(schemas)s) and c.relkind in ('r', 'p', 'f', 'v', 'm')
  and a.attnum > 0 and not a.attisdropped
  and (
    pg_has_role(c.relowner, 'USAGE')
    or has_column_privilege(c.oid, a.attnum, 'SELECT, INSERT, UPDATE, REFERENCES')
  )
order by c.oid, a.attnum

-- typegen_relationships --
-- Foreign keys outside the system schemas, as PostgREST sees them: one-to-one when the referencing
-- columns, in key order, are exactly a primary key or unique constraint of their table.
select
  con.conname as foreign_key_name,
  n.nspname as schema,
  src.relname as relation,
  fk.columns,
  rn.nspname as referenced_schema,
  ref.relname as referenced_relation,
  array(
    select a.attname from unnest(con.confkey) with ordinality as k(attnum, ord)
    join pg_catalog.pg_attribute as a on a.attrelid = con.confrelid and a.attnum = k.attnum
    order by k.ord
  )::text[] as referenced_columns,
  exists (
    select 1 from pg_catalog.pg_constraint as u
    where u.conrelid = con.conrelid and u.contype in ('p', 'u')
      and array(
        select a.attname from unnest(u.conkey) as k(attnum)
        join pg_catalog.pg_attribute as a on a.attrelid = u.conrelid and a.attnum = k.attnum
        order by a.attnum
      )::text[] = fk.columns
  ) as is_one_to_one
from pg_catalog.pg_constraint as con
join pg_catalog.pg_namespace as n on n.oid = con.connamespace
join pg_catalog.pg_class as src on src.oid = con.conrelid
join pg_catalog.pg_class as ref on ref.oid = con.confrelid
join pg_catalog.pg_namespace as rn on rn.oid = ref.relnamespace
cross join lateral (
  select array(
    select a.attname from unnest(con.conkey) with ordinality as k(attnum, ord)
    join pg_catalog.pg_attribute as a on a.attrelid = con.conrelid and a.attnum = k.attnum
    order by k.ord
  )::text[] as columns
) as fk
where con.contype = 'f' and con.conparentid = 0 and n.nspname not in ('information_schema', 'pg_catalog', 'pg_toast')
order by con.oid

-- typegen_functions --
-- Functions of those schemas that PostgREST can call (not procedures, not trigger functions), with
-- every argument: its mode, name ('' when unnamed), type and whether it has a default.
with functions as (
  select
    p.*,
    coalesce(
      p.proargmodes::text[],
      array_fill('i'::text, array[cardinality(coalesce(p.proallargtypes, p.proargtypes::oid[]))])
    ) as arg_modes,
    coalesce(
      p.proargnames,
      array_fill(''::text, array[cardinality(coalesce(p.proallargtypes, p.proargtypes::oid[]))])
    ) as arg_names,
    coalesce(p.proallargtypes, p.proargtypes::oid[]) as arg_types,
    array_cat(
      array_fill(false, array[p.pronargs - p.pronargdefaults]),
      array_fill(true, array[p.pronargdefaults])
    ) as arg_has_defaults
  from pg_catalog.pg_proc as p
  join pg_catalog.pg_namespace as n on n.oid = p.pronamespace
  where n.nspname = any(%(schemas)s) and p.prokind = 'f'
)
select
  f.oid::int8 as id,
  n.nspname as schema,
  f.proname as name,
  pg_get_function_arguments(f.oid) as argument_types,
  pg_get_function_result(f.oid) as return_type,
  f.prorettype::int8 as return_type_id,
  nullif(rt.typrelid::int8, 0) as return_type_relation_id,
  f.proretset as is_set_returning,
  f.prorows::float8 as prorows,
  coalesce((
    select jsonb_agg(jsonb_build_object(
      'mode', case a.mode when 'i' then 'in' when 'o' then 'out' when 'b' then 'inout'
                          when 'v' then 'variadic' else 'table' end,
      'name', a.name,
      'type_id', a.type_id::int8,
      'has_default', coalesce(a.has_default, false)
    ) order by a.ord)
    from unnest(f.arg_modes, f.arg_names, f.arg_types, f.arg_has_defaults)
      with ordinality as a(mode, name, type_id, has_default, ord)
  ), '[]'::jsonb) as args
from functions as f
join pg_catalog.pg_namespace as n on n.oid = f.pronamespace
left join pg_catalog.pg_type as rt on rt.oid = f.prorettype
where pg_get_function_result(f.oid) not in ('trigger', 'event_trigger')
order by f.oid

-- typegen_types --
-- Every type of the database but the row types of views and the like, with enum labels in order and
-- the attributes of composite types: arguments, results and columns are typed by looking them up here.
select
  t.oid::int8 as id,
  t.typname as name,
  n.nspname as schema,
  format_type(t.oid, null) as format,
  coalesce(
    (select array_agg(e.enumlabel::text order by e.enumsortorder) from pg_catalog.pg_enum as e where e.enumtypid = t.oid),
    '{}'::text[]
  ) as enums,
  coalesce((
    select jsonb_agg(jsonb_build_object('name', a.attname, 'type_id', a.atttypid::int8) order by a.attnum)
    from pg_catalog.pg_class as c
    join pg_catalog.pg_attribute as a on a.attrelid = c.oid
    where c.oid = t.typrelid and c.relkind = 'c' and not a.attisdropped
  ), '[]'::jsonb) as attributes,
  nullif(t.typrelid::int8, 0) as type_relation_id
from pg_catalog.pg_type as t
join pg_catalog.pg_namespace as n on n.oid = t.typnamespace
where t.typrelid = 0 or (select c.relkind in ('c', 'r') from pg_catalog.pg_class as c where c.oid = t.typrelid)
order by t.oid

-- typegen_view_definitions --
-- The stored query of every view and materialized view outside the system schemas, with its column
-- names by number: which table column each view column passes through is read from the query.
select
  c.oid::int8 as id,
  n.nspname as schema,
  c.relname as name,
  r.ev_action::text as definition,
  coalesce((
    select jsonb_object_agg(a.attnum::text, a.attname)
    from pg_catalog.pg_attribute as a
    where a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped
  ), '{}'::jsonb) as column_names
from pg_catalog.pg_class as c
join pg_catalog.pg_namespace as n on n.oid = c.relnamespace
join pg_catalog.pg_rewrite as r on r.ev_class = c.oid
where c.relkind in ('v', 'm') and n.nspname not in ('information_schema', 'pg_catalog', 'pg_toast')
order by c.oid

-- typegen_key_columns --
-- Every column of every primary and foreign key (type p, f), and every column foreign keys
-- reference (f_ref), with its position in the key: PostgREST's view key dependencies start here.
select
  k.constraint_type,
  k.constraint_name,
  k.column_count,
  k.relation_id,
  k.column_number,
  k.ordinality,
  n.nspname as table_schema,
  c.relname as table_name
from (
  select
    con.contype::text as constraint_type,
    con.conname as constraint_name,
    cardinality(con.conkey) as column_count,
    con.conrelid::int8 as relation_id,
    key.attnum::int as column_number,
    key.ord::int as ordinality
  from pg_catalog.pg_constraint as con
  cross join lateral unnest(con.conkey) with ordinality as key(attnum, ord)
  where con.contype in ('p', 'f')
  union
  select
    con.contype::text || '_ref',
    con.conname,
    cardinality(con.confkey),
    con.confrelid::int8,
    key.attnum::int,
    key.ord::int
  from pg_catalog.pg_constraint as con
  cross join lateral unnest(con.confkey) with ordinality as key(attnum, ord)
  where con.contype = 'f'
) as k
join pg_catalog.pg_class as c on c.oid = k.relation_id
join pg_catalog.pg_namespace as n on n.oid = c.relnamespace
where n.nspname not in ('information_schema', 'pg_catalog', 'pg_toast')
order by k.relation_id, k.constraint_name, k.constraint_type, k.ordinality

-- create_usage_event_partitions --
-- Create the monthly partitions of usage_events from the current UTC month to %(months_ahead)s later.
select name from usagemeter_private.create_usage_event_partitions_v1(%(months_ahead)s) as name

-- partitions_supported --
-- Whether the database has the partitioned ledger (the migration that made it has been applied).
select to_regprocedure('usagemeter_private.create_usage_event_partitions_v1(integer)') is not null

-- default_usage_event_months --
-- The UTC months the default partition holds rows of, oldest first, with how many.
select month_start, events from usagemeter_private.default_usage_event_months_v1()

-- begin_usage_event_month_move --
-- Lock the default partition against writes until commit and make the month's table; its name, and the
-- default partition's size in blocks.
select partition_name, blocks from usagemeter_private.begin_usage_event_month_move_v1(%(month_start)s)

-- copy_usage_event_month_rows --
-- Copy the month's rows from blocks [first_block, last_block) of the default partition; how many.
select usagemeter_private.copy_usage_event_month_rows_v1(%(month_start)s, %(first_block)s, %(last_block)s)

-- finish_usage_event_month_move --
-- Delete the copied rows from the default partition and attach the month's table; how many moved.
select usagemeter_private.finish_usage_event_month_move_v1(%(month_start)s, %(copied)s)

-- usage_event_months --
-- Every monthly table of usage_events, oldest first, attached or (mid-retention) detached.
select month_start, partition_name, attached from usagemeter_private.usage_event_months_v1()

-- usage_event_month_totals --
-- Rows and sums of one month's table: what its archive must hold.
select events, tokens_input, tokens_output, cost from usagemeter_private.usage_event_month_totals_v1(%(month_start)s)

-- record_usage_event_archive --
-- Record a month's totals and its verified archive (NULL: dropped without one) before it is detached.
select usagemeter_private.record_usage_event_archive_v1(
  %(month_start)s, %(events)s, %(tokens_input)s, %(tokens_output)s, %(cost)s, %(archive_path)s)

-- detach_usage_event_month --
-- Detach a month that still holds what its record says, and free its ids and keys; how many were freed.
select usagemeter_private.detach_usage_event_month_v1(%(month_start)s)

-- drop_usage_event_month --
-- Drop the table of a month retention detached.
select usagemeter_private.drop_usage_event_month_v1(%(month_start)s)

-- vacuum_default_usage_event_partition --
-- Give the space of rows moved out of the default partition back (its emptied end is truncated).
vacuum (analyze) usagemeter_private.usage_events_default

-- free_usage_event_month_keys --
-- Release up to %(batch)s ids and keys of a detached month after %(after_id)s; how many, and the last id.
select freed, last_id from usagemeter_private.free_usage_event_month_keys_v1(%(month_start)s, %(after_id)s, %(batch)s)

-- usage_event_month_keys_freed --
-- Record that a detached month's ids and keys are all released.
select usagemeter_private.usage_event_month_keys_freed_v1(%(month_start)s)

-- citus_readiness --
-- For `db distribute`: the Citus version installed in this database (NULL without the extension), the active
-- primary workers, whether usage_events exists, and whether it is distributed already.
select (select extversion from pg_catalog.pg_extension where extname = 'citus'),
       (select count(*) from pg_catalog.pg_dist_node where groupid <> 0 and noderole = 'primary' and isactive),
       to_regclass('public.usage_events') is not null,
       exists (select from pg_catalog.pg_dist_partition where logicalrelid = to_regclass('public.usage_events'))

-- citus_extension_available --
-- Whether the Citus extension is installed in this database.
select exists (select from pg_catalog.pg_extension where extname = 'citus')

-- store_node_password --
-- Citus's password for a role's connections to every node (nodeid 0); pg_dist_authinfo is readable by
-- superusers only.
insert into pg_catalog.pg_dist_authinfo (nodeid, rolename, authinfo)
values (0, %(role)s, 'password=' || %(password)s)
on conflict (nodeid, rolename) do update set authinfo = excluded.authinfo

-- role_can_login --
-- Whether a role may log in (a request role given a node password by an earlier db distribute on this server).
select rolcanlogin from pg_catalog.pg_roles where rolname = %(role)s

-- other_databases --
-- The databases of this server that accept connections (where an earlier db distribute may have stored a role's
-- node password).
select datname from pg_catalog.pg_database where datallowconn and not datistemplate order by datname

-- node_password --
-- The node password Citus holds for a role in this database (pg_dist_authinfo, superusers only).
select substring(authinfo from '^password=(.*)$') from pg_catalog.pg_dist_authinfo
where nodeid = 0 and rolename = %(role)s and authinfo ~ '^password='

-- grant_insert_on_event_shards --
-- After db distribute commits (the shards must be visible to the connections Citus opens): the coordinator
-- checks the column-level INSERT grants on the statement as written, but the statement it sends to a shard names
-- every column, defaults filled in; so on the shards of usage_events authenticated may insert every column.
-- Returns the shards where the grant failed.
select shardid, result
  from run_command_on_shards('public.usage_events', 'grant insert on %s to authenticated')
 where not success
