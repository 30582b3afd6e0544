"""Synthetic usage for benchmarks and plan tests, generated inside PostgreSQL (no rows cross the wire).

Shape: `tenants` tenants whose event counts follow Zipf (s=1: tenant i gets about 1/i of the
weight, so of 1000 tenants the largest holds about 10%), `users` users, each a base member of one
tenant and every tenth user of two more (so members of three tenants exist), and a `personal_share`
of rows with no tenant. Events spread uniformly over the year `year`; each names one of `MODELS` in
its metadata (Zipf-like: the first about half the events), which `PRICES` price, so that when the
prices are loaded first every event gets a non-zero cost.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import psycopg

from usagemeter.billing import prices

ACTIONS = [
    "agency:scope:generate",
    "agency:proposal:generate",
    "agency:proposal:revise",
    "chat:message:send",
    "chat:summary:generate",
    "docs:page:translate",
    "docs:page:summarise",
    "search:query:embed",
]

# Token prices per million (input, output) of the models, and one per-event price, in effect all of 2026.
TOKEN_RATES = {"bench-large": ("15", "75"), "bench-medium": ("3", "15"), "bench-small": ("0.25", "1.25")}
PRICES_FROM = datetime(2026, 1, 1, tzinfo=UTC)
PRICES = [
    *(
        prices.PriceRow(
            model=model,
            currency="USD",
            input_per_million=Decimal(rates[0]),
            output_per_million=Decimal(rates[1]),
            effective_from=PRICES_FROM,
        )
        for model, rates in TOKEN_RATES.items()
    ),
    prices.PriceRow(
        action="search:query:embed", currency="USD", per_event=Decimal("0.0004"), effective_from=PRICES_FROM
    ),
]

# Model i gets weight 1/i (s=1): 6/11, 3/11 and 2/11 of the events; an event's model is the one
# whose threshold is the last at or below a uniform draw.
MODELS = list(TOKEN_RATES)
MODEL_WEIGHTS = [1 / i for i in range(1, len(MODELS) + 1)]
MODEL_THRESHOLDS = [sum(MODEL_WEIGHTS[:i]) / sum(MODEL_WEIGHTS) for i in range(len(MODELS))]

# One statement each: parameters bind per statement.
CREATE_TENANTS_AND_USERS = [
    """create temporary table bench_tenants on commit drop as
       select i, gen_random_uuid() as id from generate_series(1, %(tenants)s) as i""",
    """create temporary table bench_users on commit drop as
       select i, gen_random_uuid() as id from generate_series(1, %(users)s) as i""",
    "insert into public.tenants (id, name, slug) select id, 'Tenant ' || i, 'tenant-' || i from bench_tenants",
    "insert into auth.users (id, email) select id, 'user' || i || '@bench.test' from bench_users",
    # Base membership: user u belongs to tenant ((u - 1) mod T) + 1, so every tenant has users / tenants members.
    """insert into public.tenant_members (tenant_id, user_id, role)
       select t.id, u.id, case when u.i <= %(tenants)s then 'owner' else 'member' end
       from bench_users u join bench_tenants t on t.i = ((u.i - 1) %% %(tenants)s) + 1""",
    # Every tenth user is also a member of the next two tenants: members of three tenants.
    """insert into public.tenant_members (tenant_id, user_id)
       select t.id, u.id
       from bench_users u cross join generate_series(1, 2) as k
       join bench_tenants t on t.i = ((u.i - 1 + k) %% %(tenants)s) + 1
       where u.i %% 10 = 0
       on conflict do nothing""",
]

# Tenant index by inverse-CDF of a continuous 1/x law: floor((T+1)^u) for uniform u is Zipf-like (s=1).
# A tenant event's user is one of the tenant's base members, so authors are members.
INSERT_EVENTS = """
insert into public.usage_events
  (tenant_id, user_id, action, module_id, tokens_input, tokens_output, metadata, created_at)
select
  case when g.personal then null else t.id end,
  u.id,
  a.action,
  split_part(a.action, ':', 1),
  (random() * 4000)::int,
  (random() * 1500)::int,
  jsonb_build_object('model', (%(models)s::text[])[width_bucket(g.model_u, %(model_thresholds)s::float8[])], 'n', g.n),
  make_timestamptz(%(year)s, 1, 1, 0, 0, 0, 'UTC') + random() * interval '365 days'
from (
  select n,
         random() < %(personal_share)s as personal,
         least(floor(power(%(tenants)s + 1, random()))::int, %(tenants)s) as tenant_i,
         floor(random() * greatest(%(users)s / %(tenants)s, 1))::int as member_k,
         1 + floor(random() * %(users)s)::int as personal_user_i,
         1 + floor(random() * %(action_count)s)::int as action_i,
         random() as model_u
  from generate_series(%(first)s::bigint, %(last)s::bigint) as n
) as g
join bench_tenants t on t.i = g.tenant_i
join bench_users u on u.i = case when g.personal then g.personal_user_i
                                  else least(g.tenant_i + g.member_k * %(tenants)s, %(users)s) end
join (select row_number() over () as i, action from unnest(%(actions)s::text[]) as action) as a on a.i = g.action_i
"""

LOAD_CHUNK = 500_000

PICK_SUBJECTS = """
select
  (select t.id from public.tenants t join public.usage_events e on e.tenant_id = t.id
    group by t.id order by count(*) desc limit 1),
  (select m.user_id from public.tenant_members m
    join (select tenant_id, count(*) as events from public.usage_events group by tenant_id) as s using (tenant_id)
    group by m.user_id having count(*) = 3 order by sum(s.events) desc, m.user_id limit 1),
  (select e.user_id from public.usage_events e where e.tenant_id is null
    group by e.user_id order by count(*) desc limit 1)
"""


@dataclass(frozen=True)
class Subjects:
    """Who queries run as: the largest tenant, the busiest member of three tenants, the busiest personal user."""

    largest_tenant: uuid.UUID
    member_of_three: uuid.UUID
    personal_user: uuid.UUID


def load(
    conn: psycopg.Connection[Any],
    *,
    rows: int,
    tenants: int = 1000,
    users: int = 5000,
    personal_share: float = 0.10,
    year: int = 2026,
) -> Subjects:
    """Fill an empty migrated database (as its owner) and ANALYZE it; returns the query subjects.

    Events are rated as they are written: load `PRICES` first (prices.load_prices) for non-zero costs.
    """
    params = {
        "rows": rows,
        "tenants": tenants,
        "users": users,
        "personal_share": personal_share,
        "year": year,
        "actions": ACTIONS,
        "action_count": len(ACTIONS),
        "models": MODELS,
        "model_thresholds": MODEL_THRESHOLDS,
    }
    with conn.transaction():
        for statement in CREATE_TENANTS_AND_USERS:
            conn.execute(statement, params)
        for first in range(1, rows + 1, LOAD_CHUNK):  # statements of a bounded size: triggers see one chunk each
            conn.execute(INSERT_EVENTS, {**params, "first": first, "last": min(first + LOAD_CHUNK - 1, rows)})
    conn.execute("analyze public.usage_events, public.tenant_members, public.tenants")
    # What autovacuum does within a minute of a bulk load: the folds left the deltas table full of dead rows.
    conn.execute(
        "vacuum analyze public.usage_rollup_deltas, public.usage_rollup_hourly, public.usage_rollup_daily,"
        " public.usage_rollup_tenant_daily"
    )
    row = conn.execute(PICK_SUBJECTS).fetchone()
    if row is None or None in row:
        raise RuntimeError(
            f"the generated data lacks a subject (largest tenant, 3-tenant member, personal user): {row}"
        )
    return Subjects(*row)
