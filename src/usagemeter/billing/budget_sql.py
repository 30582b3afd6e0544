"""The budget queries: fixed text, every value a bound parameter (the rules themselves live in the migration)."""

from __future__ import annotations

from typing import LiteralString

# Set a budget (as the service role); its trigger checks the zone and currency and starts the current window's counter.
INSERT_BUDGET: LiteralString = """
insert into public.usage_budgets
  (tenant_id, user_id, metric, usage_limit, currency, period, time_zone, action_pattern, mode, thresholds)
values (%(tenant_id)s, %(user_id)s, %(metric)s, %(limit)s, %(currency)s, %(period)s, %(time_zone)s,
        %(action_pattern)s, %(mode)s, %(thresholds)s)
returning id
"""

# Each budget the caller may read (RLS), with its current window: of one tenant, or of one Personal user.
# A total budget's window never ends: its end comes back NULL, as Python has no infinite datetime.
BUDGET_STATUS: LiteralString = """
select id, tenant_id, user_id, metric, usage_limit, currency, period, time_zone, action_pattern, mode, thresholds,
       window_start, nullif(window_end, 'infinity') as window_end, used, remaining
from public.usage_budget_status
where (%(budget_id)s::uuid is null or id = %(budget_id)s)
  and (%(tenant_id)s::uuid is null or tenant_id = %(tenant_id)s)
  and (%(personal_user_id)s::uuid is null or (tenant_id is null and user_id = %(personal_user_id)s))
order by tenant_id nulls first, user_id nulls first, metric, period, id
"""

DELETE_BUDGET: LiteralString = "delete from public.usage_budgets where id = %(budget_id)s returning id"

# "May I spend this much more now?" as the caller (RLS: only budgets they may read).
CHECK_QUOTA: LiteralString = """
select budget_id, metric, mode, usage_limit, used, requested, remaining, window_start,
       nullif(window_end, 'infinity') as window_end, allowed
from public.check_usage_quota_v1(%(tenant_id)s, %(user_id)s, %(action)s, %(events)s, %(tokens)s, %(cost)s)
"""

# Threshold alerts after an id (the outbox a late listener catches up on), oldest first.
ALERTS_AFTER: LiteralString = """
select a.id, a.budget_id, b.tenant_id, b.user_id, b.metric, a.threshold, a.used, a.usage_limit, a.window_start,
       a.fired_at
from public.usage_budget_alerts as a
join public.usage_budgets as b on b.id = a.budget_id
where a.id > %(after_id)s
order by a.id
limit %(limit)s
"""

LISTEN_ALERTS: LiteralString = "listen usagemeter_budget_alerts"
