-- Queries of the HTTP API itself (its routes call the flows for everything else).

-- schema_ready --
-- Whether usagemeter's schema is in place, as the app login can see it: the ledger table and the
-- function the newest migrations add (a database migrated by older code answers false).
select to_regclass('public.usage_events') is not null
  and to_regclass('public.usage_closed_periods') is not null
  and to_regprocedure('public.check_usage_quota_v1(uuid, uuid, text, bigint, bigint, numeric)') is not null
