-- Queries of billing. One query per `-- name --` marker, with a comment saying what it is for.
-- Parameters are %(name)s placeholders bound by psycopg; no SQL is ever built from values.

-- insert_price --
-- One price, as the service role; usage_prices' checks, key, tenant reference and one-currency
-- trigger refuse what breaks a rule.
insert into public.usage_prices
  (model, action, tenant_id, currency, input_per_million, output_per_million, cached_input_per_million,
   cache_write_per_million, per_event, effective_from)
values (%(model)s, %(action)s, %(tenant_id)s, %(currency)s, %(input_per_million)s, %(output_per_million)s,
        %(cached_input_per_million)s, %(cache_write_per_million)s, %(per_event)s, %(effective_from)s)

-- list_prices --
-- Every price the caller may read (RLS), or only those applying to one tenant (the general ones and
-- its own), in an order that does not depend on the database's collation.
select p.model, p.action, p.tenant_id, p.currency, p.input_per_million, p.output_per_million, p.per_event,
       p.effective_from, p.cached_input_per_million, p.cache_write_per_million
from public.usage_prices as p
where (%(tenant_id)s::uuid is null or p.tenant_id is null or p.tenant_id = %(tenant_id)s::uuid)
order by p.model collate "C" nulls first, p.action collate "C" nulls first, p.tenant_id nulls first,
         p.effective_from, p.currency collate "C"

-- list_prices_in_effect --
-- The prices in effect at %(at)s that the caller may read: for each model, action and tenant, the one
-- with the latest effective_from at or before it (the tenant filter as in list_prices).
select latest.*
from (
  select distinct on (p.model, p.action, p.tenant_id)
         p.model, p.action, p.tenant_id, p.currency, p.input_per_million, p.output_per_million, p.per_event,
         p.effective_from, p.cached_input_per_million, p.cache_write_per_million
  from public.usage_prices as p
  where p.effective_from <= %(at)s::timestamptz
    and (%(tenant_id)s::uuid is null or p.tenant_id is null or p.tenant_id = %(tenant_id)s::uuid)
  order by p.model, p.action, p.tenant_id, p.effective_from desc
) as latest
order by latest.model collate "C" nulls first, latest.action collate "C" nulls first, latest.tenant_id nulls first,
         latest.effective_from, latest.currency collate "C"
