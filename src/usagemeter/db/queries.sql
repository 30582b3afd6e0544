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
