-- Queries of the db layer: taking on a request's identity, and handing back the one before it.
-- One query per `-- name --` marker, with a comment saying what it is for. Parameters are %(name)s
-- placeholders bound by psycopg; no SQL is ever built from values.

-- become_request_identity --
-- What Supabase's API layer does per request: switch role and set the JWT claims, for this transaction only,
-- with the role's statement timeout (NULL keeps the current one). Also returns now(), the created_at of
-- rows this transaction writes without one.
select set_config('role', %(role)s, true), set_config('request.jwt.claims', %(claims)s, true), now(),
       set_config('statement_timeout', coalesce(%(statement_timeout)s, current_setting('statement_timeout')), true)

-- current_request_identity --
-- The role, claims and statement timeout in force, to restore after a nested identity's block.
select current_setting('role'), coalesce(current_setting('request.jwt.claims', true), ''),
       current_setting('statement_timeout')

-- restore_request_identity --
-- Back to the role, claims and statement timeout read by current_request_identity.
select set_config('role', %(role)s, true), set_config('request.jwt.claims', %(claims)s, true),
       set_config('statement_timeout', %(timeout)s, true)

-- claims_propagate --
-- Whether this database is laid out on a Citus cluster by `usagemeter db distribute`: there the claims are set
-- with SET LOCAL (through usagemeter_private.set_request_claims_v1), which Citus sends on to the workers.
select exists (select from pg_catalog.pg_proc as p join pg_catalog.pg_namespace as n on n.oid = p.pronamespace
               where n.nspname = 'usagemeter_private' and p.proname = 'set_request_claims_v1')

-- become_request_identity_propagated --
-- become_request_identity on a Citus coordinator: the claims by SET LOCAL, so that the workers see them too.
-- The function is looked up and its EXECUTE checked before the role switch takes effect (as the login role).
select set_config('role', %(role)s, true), usagemeter_private.set_request_claims_v1(%(claims)s), now(),
       set_config('statement_timeout', coalesce(%(statement_timeout)s, current_setting('statement_timeout')), true)

-- reset_request_role --
-- Back to the login role, so the next query may name usagemeter_private.set_request_claims_v1 (only the login
-- role may use that schema).
select set_config('role', 'none', true)

-- restore_request_identity_propagated --
-- restore_request_identity on a Citus coordinator (after reset_request_role): the claims by SET LOCAL.
select set_config('role', %(role)s, true), usagemeter_private.set_request_claims_v1(%(claims)s),
       set_config('statement_timeout', %(timeout)s, true)

-- login_role_reach --
-- What the session's login role could do without taking on a request identity: whether it is (or can
-- become) a superuser, whether it bypasses RLS itself, and which owners of relations in schema public it
-- can act as (owners bypass RLS). An app login must answer false, false, NULL.
select session_user::text,
       r.rolsuper or exists (select 1 from pg_catalog.pg_roles s
                             where s.rolsuper and pg_catalog.pg_has_role(session_user, s.oid, 'MEMBER')),
       r.rolbypassrls,
       (select string_agg(distinct o.rolname, ', ')
          from pg_catalog.pg_class c
          join pg_catalog.pg_namespace n on n.oid = c.relnamespace
          join pg_catalog.pg_roles o on o.oid = c.relowner
         where n.nspname = 'public' and pg_catalog.pg_has_role(session_user, c.relowner, 'MEMBER'))
  from pg_catalog.pg_roles r
 where r.rolname = session_user
