-- Queries of the demo data set (ops/demo.py), run on the admin (owner) connection.

-- lock_demo --
-- Serialise demo loaders on this database for the session (two `serve --demo` starting at once):
-- a session lock, since the load spans transactions on two connections.
select pg_advisory_lock(hashtext('usagemeter:demo'))

-- unlock_demo --
-- Release the session lock taken by lock_demo.
select pg_advisory_unlock(hashtext('usagemeter:demo'))

-- database_state --
-- Whether the database holds any usage event, tenant or price: the demo loads only into an empty one.
select exists (select from public.usage_events),
       exists (select from public.tenants),
       exists (select from public.usage_prices)

-- demo_tenants --
-- The demo's tenants by slug, if it was loaded.
select slug, id from public.tenants where slug = any (%(slugs)s::text[])

-- demo_users --
-- The demo's users by email, if it was loaded.
select email, id from auth.users where email = any (%(emails)s::text[])

-- tenant_costs --
-- What each tenant's events cost in all, to size its demo budget.
select tenant_id, coalesce(sum(cost), 0)
  from public.usage_events
 where tenant_id = any (%(tenant_ids)s::uuid[])
 group by tenant_id

-- personal_cost --
-- What a Personal user's own events cost in all, to size their demo budget.
select coalesce(sum(cost), 0) from public.usage_events where tenant_id is null and user_id = %(user_id)s
