-- usage_events (TASK-1-07): AI token consumption, billable actions and audit trail, per tenant.
-- tenant_id NULL means "Personal" mode: the row belongs to user_id alone.
--
-- The spec's columns, types and defaults, plus what a ledger needs and the spec forgot:
-- NOT NULL on counters and metadata, named CHECKs, an idempotency key, an append-only grant set,
-- and policies that (a) never let a user write as someone else or into a foreign tenant,
-- (b) show personal users their own rows, and (c) stay on indexes without a tenant filter.

do $guard$
declare
  found_columns text;
begin
  if to_regclass('public.usage_events') is not null then
    select string_agg(format('%s %s', attname, format_type(atttypid, atttypmod)), ', ' order by attnum)
      into found_columns
      from pg_catalog.pg_attribute
      where attrelid = 'public.usage_events'::regclass and attnum > 0 and not attisdropped;
    raise exception 'usagemeter: public.usage_events already exists and was not created by usagemeter (columns: %)', found_columns
      using hint = 'Rename or drop the existing table (copy its rows into the new one afterwards), then run the migrations again; nothing was changed.';
  end if;
end
$guard$;

create table public.usage_events (
  id uuid primary key default gen_random_uuid(),
  tenant_id uuid references public.tenants (id) on delete cascade,
  user_id uuid references auth.users (id),
  action text not null,
  module_id text,
  tokens_input int not null default 0,
  tokens_output int not null default 0,
  tokens_total int generated always as (tokens_input + tokens_output) stored,
  metadata jsonb not null default '{}',
  created_at timestamptz not null default now(),
  idempotency_key text,
  constraint usage_events_action_format
    check (char_length(action) <= 200 and action ~ '^[a-z0-9_-]+:[a-z0-9_-]+:[a-z0-9_-]+$'),
  constraint usage_events_module_id_matches_action
    check (module_id is null or module_id = split_part(action, ':', 1)),
  constraint usage_events_tokens_input_nonnegative check (tokens_input >= 0),
  constraint usage_events_tokens_output_nonnegative check (tokens_output >= 0),
  constraint usage_events_metadata_is_object check (jsonb_typeof(metadata) = 'object'),
  constraint usage_events_metadata_size check (octet_length(metadata::text) <= 16384),
  constraint usage_events_owner_present check (tenant_id is not null or user_id is not null),
  constraint usage_events_idempotency_key_length
    check (idempotency_key is null or char_length(idempotency_key) between 1 and 200)
);

comment on table public.usage_events is
  'Append-only ledger of AI token usage and billable actions, per tenant (or per user in Personal mode when tenant_id is NULL).';
comment on column public.usage_events.id is 'Event id.';
comment on column public.usage_events.tenant_id is 'Tenant billed for the event; NULL for Personal mode (the row belongs to user_id alone).';
comment on column public.usage_events.user_id is 'User who caused the event (auth.users.id); NULL only for tenant-level system events recorded by the service role.';
comment on column public.usage_events.action is 'What happened, as <module>:<domain>:<verb> of [a-z0-9_-], e.g. agency:scope:generate; at most 200 characters.';
comment on column public.usage_events.module_id is 'The module, e.g. agency: when set, equal to the first segment of action.';
comment on column public.usage_events.tokens_input is 'Input (prompt) tokens consumed, >= 0.';
comment on column public.usage_events.tokens_output is 'Output (completion) tokens produced, >= 0.';
comment on column public.usage_events.tokens_total is 'tokens_input + tokens_output, computed by the database.';
comment on column public.usage_events.metadata is 'Free-form JSON object (model, request id, cost inputs...), at most 16 KiB as text.';
comment on column public.usage_events.created_at is 'When the event happened; set by the database for authenticated callers.';
comment on column public.usage_events.idempotency_key is 'Caller-chosen retry key, unique per (tenant_id, user_id): a retried write with the same key stores nothing new.';

-- Indexes for the common queries: a tenant's usage over time, by action, by user, by module.
create index usage_events_tenant_created_idx on public.usage_events (tenant_id, created_at desc);
create index usage_events_action_idx on public.usage_events (action);
create index usage_events_user_created_idx on public.usage_events (user_id, created_at desc);
create index usage_events_module_idx on public.usage_events (module_id);
-- The personal arm of the read policy (tenant_id is null and user_id = me) stays on an index.
create index usage_events_personal_user_created_idx
  on public.usage_events (user_id, created_at desc) where tenant_id is null;
-- One event per key per (tenant, user); NULLS NOT DISTINCT so personal rows (tenant_id NULL) are covered.
create unique index usage_events_idempotency_key_idx
  on public.usage_events (tenant_id, user_id, idempotency_key) nulls not distinct
  where idempotency_key is not null;

-- Privileges: an append-only ledger. authenticated reads and appends (without choosing id or
-- created_at); anon gets nothing; nobody but the owner may TRUNCATE. Explicit revokes undo
-- Supabase's default "grant all on new tables to anon, authenticated, service_role".
revoke all on table public.usage_events from public, anon, authenticated, service_role;
grant select on table public.usage_events to authenticated;
grant insert (tenant_id, user_id, action, module_id, tokens_input, tokens_output, metadata, idempotency_key)
  on table public.usage_events to authenticated;
grant select, insert, update, delete on table public.usage_events to service_role;

alter table public.usage_events enable row level security;

create policy "Members read their tenants' usage; users read their personal usage"
  on public.usage_events for select to authenticated
  using (
    tenant_id = any ((select private.tenant_ids_of_current_user_v1())::uuid[])
    or (tenant_id is null and user_id = (select auth.uid()))
  );

create policy "Users record their own usage, personal or in their tenants"
  on public.usage_events for insert to authenticated
  with check (
    user_id = (select auth.uid())
    and (tenant_id is null or tenant_id = any ((select private.tenant_ids_of_current_user_v1())::uuid[]))
  );
