-- Deleting a user (auth.users) works, and erases what is theirs alone (right to erasure).
--
-- Before: usage_events.user_id referenced auth.users with no ON DELETE rule, so deleting a user who
-- had events failed, and with it Supabase's account deletion. Now:
-- - Tenant events (tenant_id set) are the tenant's billing record: they stay, with user_id cleared
--   (ON DELETE SET NULL). The tenant's totals do not change; they are attributed to no user.
-- - Personal events (tenant_id NULL) have no other owner: they are deleted with the user
--   (ON DELETE CASCADE through personal_user_id, a stored generated column equal to user_id on
--   personal rows and NULL on tenant rows).
-- - Memberships (tenant_members) were already deleted with the user.
-- The rollups stay exact through their own usage_events triggers: the cascaded UPDATE moves the
-- user's tenant totals to "no user", the cascaded DELETE subtracts their personal totals. A
-- statement trigger then removes the rollup rows of those users that are left with all measures
-- zero, so no rollup row keeps the id of a deleted user.
-- Nothing here is a trigger on auth.users (on Supabase that table belongs to supabase_auth_admin):
-- both rules are foreign-key actions, which the auth service's own DELETE fires.
-- Adding the generated column rewrites usage_events once (an ACCESS EXCLUSIVE lock for the rewrite).

alter table public.usage_events
  add column personal_user_id uuid generated always as (case when tenant_id is null then user_id end) stored;

comment on column public.usage_events.personal_user_id is
  'user_id on personal rows (tenant_id NULL), NULL on tenant rows; computed by the database. Its foreign key '
  'deletes a user''s personal events with the user.';

comment on column public.usage_events.user_id is
  'User who caused the event (auth.users.id). NULL on tenant events whose user was deleted, and on '
  'tenant-level system events recorded by the service role; never NULL on personal events.';

-- Created before the SET NULL rule so that its action trigger sorts first and runs first.
alter table public.usage_events
  add constraint usage_events_personal_user_id_fkey
  foreign key (personal_user_id) references auth.users (id) on delete cascade;

alter table public.usage_events
  drop constraint usage_events_user_id_fkey,
  add constraint usage_events_user_id_fkey
  foreign key (user_id) references auth.users (id) on delete set null;

-- The cascaded DELETE finds a user's personal events on this index (tenant rows are not in it).
create index usage_events_personal_user_id_idx
  on public.usage_events (personal_user_id) where personal_user_id is not null;

-- The two actions of a user deletion may run in either order (trigger names carry oids, and a
-- restore may create the constraints in another order). When SET NULL runs first, a personal row
-- would lose its owner and break usage_events_owner_present: inside a referential action, such a
-- row keeps its user_id and is left to the cascade, which deletes it in the same statement.
-- Outside one, the CHECK refuses the update as before.
create function usagemeter_private.keep_personal_owner_for_cascade_v1() returns trigger
language plpgsql
set search_path = ''
as $$
begin
  if pg_catalog.pg_trigger_depth() > 1 then
    return null;  -- skip this row: the personal_user_id cascade deletes it
  end if;
  return new;
end
$$;
comment on function usagemeter_private.keep_personal_owner_for_cascade_v1() is
  'BEFORE UPDATE row trigger on usage_events: inside a referential action, a personal event is not stripped '
  'of its owner but left to the ON DELETE CASCADE of personal_user_id.';
revoke all on function usagemeter_private.keep_personal_owner_for_cascade_v1() from public;

create trigger usage_events_keep_personal_owner
  before update of user_id on public.usage_events
  for each row
  when (old.tenant_id is null and new.tenant_id is null and old.user_id is not null and new.user_id is null)
  execute function usagemeter_private.keep_personal_owner_for_cascade_v1();

-- Rollup rows of users whose events were deleted or lost their user, once every measure is zero.
-- Such a row contributes nothing to any total, so deleting it never changes one. It looks the
-- rollup tables up by shape (public.usage_rollup_* with user_id and the four measures), not by name.
create function usagemeter_private.forget_emptied_rollup_users_v1() returns trigger
language plpgsql security definer
set search_path = ''
as $$
declare
  pairs_tenant uuid[];
  pairs_user uuid[];
  rollup regclass;
begin
  if tg_op = 'DELETE' then
    select array_agg(tenant_id), array_agg(user_id) into pairs_tenant, pairs_user
    from (select distinct tenant_id, user_id from removed_rows where user_id is not null) as gone;
  else
    select array_agg(o.tenant_id), array_agg(o.user_id) into pairs_tenant, pairs_user
    from (
      select distinct o.tenant_id, o.user_id
      from removed_rows as o join added_rows as n on n.id = o.id
      where o.user_id is not null and n.user_id is distinct from o.user_id
    ) as o;
  end if;
  if pairs_user is null then
    return null;
  end if;
  for rollup in
    select c.oid::regclass
    from pg_catalog.pg_class as c
    where c.relnamespace = 'public'::regnamespace and c.relkind in ('r', 'p') and c.relname like 'usage\_rollup\_%'
      and (
        select count(*) from pg_catalog.pg_attribute as a
        where a.attrelid = c.oid and not a.attisdropped
          and a.attname in ('tenant_id', 'user_id', 'events', 'tokens_input', 'tokens_output', 'tokens_total')
      ) = 6
    order by c.relname
  loop
    execute format(
      'delete from %s as r using unnest($1, $2) as gone(tenant_id, user_id)'
      ' where r.tenant_id = gone.tenant_id and r.user_id = gone.user_id'
      ' and r.events = 0 and r.tokens_input = 0 and r.tokens_output = 0 and r.tokens_total = 0',
      rollup
    ) using pairs_tenant, pairs_user;
    execute format(
      'delete from %s as r'
      ' where r.tenant_id is null and r.user_id = any (array(select u from unnest($1, $2) as gone(t, u) where t is null))'
      ' and r.events = 0 and r.tokens_input = 0 and r.tokens_output = 0 and r.tokens_total = 0',
      rollup
    ) using pairs_tenant, pairs_user;
  end loop;
  return null;
end
$$;
comment on function usagemeter_private.forget_emptied_rollup_users_v1() is
  'Statement trigger on usage_events, after the rollup triggers: deletes the all-zero rollup rows of users '
  'whose events were deleted or lost their user_id (a deleted user keeps no row in the rollups).';
revoke all on function usagemeter_private.forget_emptied_rollup_users_v1() from public;

-- Named to sort after usage_rollup_after_*: AFTER triggers of one event fire in name order, and the
-- rows must have been brought to zero first.
create trigger usage_rollup_zz_forget_emptied_users_after_update
  after update on public.usage_events
  referencing old table as removed_rows new table as added_rows
  for each statement execute function usagemeter_private.forget_emptied_rollup_users_v1();
create trigger usage_rollup_zz_forget_emptied_users_after_delete
  after delete on public.usage_events
  referencing old table as removed_rows
  for each statement execute function usagemeter_private.forget_emptied_rollup_users_v1();
