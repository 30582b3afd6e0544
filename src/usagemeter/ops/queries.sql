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
