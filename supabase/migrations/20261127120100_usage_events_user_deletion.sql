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

-- Rollup rows of a deleted user. Their groups fall to zero by the cascaded statement's own deltas;
-- folding at once (waiting for the fold's lock, as user deletion is rare) moves those deltas into
-- the rollups, and the fold deletes every row left without events. So neither a delta nor a rollup
-- row keeps a deleted user's id. Only when a user of the statement's rows is gone from auth.users:
-- other updates and deletes (corrections) leave their deltas to the next fold, as inserts do.
create function usagemeter_private.forget_emptied_rollup_users_v1() returns trigger
language plpgsql security definer
set search_path = ''
as $$
begin
  if not exists (
    select from removed_rows as o
    where o.user_id is not null and not exists (select from auth.users as u where u.id = o.user_id)
  ) then
    return null;
  end if;
  -- the fold's own lock, taken waiting: the fold below then holds it (advisory locks nest in a session)
  perform pg_advisory_xact_lock('public.usage_rollup_deltas'::regclass::oid::int, 0);
  perform usagemeter_private.fold_usage_rollups_v1();
  return null;
end
$$;
comment on function usagemeter_private.forget_emptied_rollup_users_v1() is
  'Statement trigger on usage_events, after the rollup triggers: when events of a user deleted from auth.users were deleted or lost their user_id, '
  'folds the deltas at once so no delta or rollup row keeps the user (the fold deletes groups left without events).';
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
