-- Queries of tenancy: tenants, their members, and users of the auth.users shim.
-- They run as the caller's role (acting_as), so the grants and RLS policies on public.tenants and
-- public.tenant_members decide what a caller may see and change; none filters by the caller here.

-- insert_tenant --
-- A new tenant; only the service role holds INSERT on public.tenants.
insert into public.tenants (name, slug)
values (%(name)s, %(slug)s)
returning id, name, slug, created_at

-- tenants_visible --
-- The tenants the caller may see (RLS), each with the caller's role in it when they are a member.
select t.id, t.name, t.slug, t.created_at, m.role
  from public.tenants as t
  left join public.tenant_members as m
    on m.tenant_id = t.id and m.user_id = (select auth.uid())
 order by t.name, t.slug

-- insert_member --
-- A membership, as the caller: RLS lets owners and admins add members, and only owners add owners.
-- An existing membership is left as it is (no row returned); member_role tells which role it has.
insert into public.tenant_members (tenant_id, user_id, role)
values (%(tenant_id)s, %(user_id)s, %(role)s)
on conflict (tenant_id, user_id) do nothing
returning tenant_id, user_id, role, created_at

-- member_role --
-- One membership as the caller sees it (RLS), to explain a write that changed nothing.
select tenant_id, user_id, role, created_at
  from public.tenant_members
 where tenant_id = %(tenant_id)s and user_id = %(user_id)s

-- delete_member --
-- Remove a membership, as the caller: RLS hides the rows the caller may not delete.
delete from public.tenant_members
 where tenant_id = %(tenant_id)s and user_id = %(user_id)s
returning tenant_id, user_id, role, created_at

-- members_of_tenant --
-- A tenant's members as the caller sees them (RLS: fellow members, or all for the service role).
select tenant_id, user_id, role, created_at
  from public.tenant_members
 where tenant_id = %(tenant_id)s
 order by case role when 'owner' then 0 when 'admin' then 1 else 2 end, created_at, user_id

-- users_table_comment --
-- Whether auth.users exists, and its table comment: usagemeter's shim says who owns it.
select to_regclass('auth.users') is not null,
       pg_catalog.obj_description(to_regclass('auth.users'), 'pg_class')

-- user_by_email --
-- A user with this email, compared without case as Supabase Auth does.
select id from auth.users where lower(email) = lower(%(email)s) limit 1

-- insert_user --
-- A user of the shim's auth.users (never on Supabase, whose auth service owns the table).
insert into auth.users (id, email)
values (%(id)s, %(email)s)
returning id
