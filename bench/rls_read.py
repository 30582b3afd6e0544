"""RLS read cost: our policies vs the spec's vs no RLS at all, on the same data in the same run.

    python bench/rls_read.py [--rows N] [--repeat K] [--database-url URL]

Two queries, each as an authenticated user (RLS on) and as service_role with the equivalent explicit
filter (the no-RLS limit): (a) a tenant's June summary by action, with a tenant filter; (b) "all my
usage in June" with no tenant filter, for a member of three tenants. The spec's table and policies
are built beside ours in a schema `spec` and filled with the same rows.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg
from rich.console import Console

from bench import data, harness
from usagemeter import db
from usagemeter.db import Identity, acting_as

# The spec's table, indexes and policies, verbatim but for schema qualification.
SPEC_SCHEMA = [
    "create schema spec",
    """create table spec.usage_events (
      id uuid primary key default gen_random_uuid(),
      tenant_id uuid references public.tenants(id) on delete cascade,
      user_id uuid references auth.users(id),
      action text not null,
      module_id text,
      tokens_input int default 0,
      tokens_output int default 0,
      tokens_total int generated always as (tokens_input + tokens_output) stored,
      metadata jsonb default '{}',
      created_at timestamptz default now()
    )""",
    "create index usage_events_tenant_created_idx on spec.usage_events(tenant_id, created_at desc)",
    "create index usage_events_action_idx on spec.usage_events(action)",
    "alter table spec.usage_events enable row level security",
    """create policy "Users can view own tenant usage" on spec.usage_events for select
      using (tenant_id in (select tenant_id from public.tenant_members where user_id = auth.uid()))""",
    """create policy "Authenticated can insert usage" on spec.usage_events for insert
      with check (auth.uid() is not null)""",
    "grant usage on schema spec to authenticated, service_role",
    "grant select, insert on spec.usage_events to authenticated, service_role",
    """insert into spec.usage_events
      (id, tenant_id, user_id, action, module_id, tokens_input, tokens_output, metadata, created_at)
      select id, tenant_id, user_id, action, module_id, tokens_input, tokens_output, metadata, created_at
      from public.usage_events""",
    "analyze spec.usage_events",
]

JUNE = "created_at >= '2026-06-01' and created_at < '2026-07-01'"
TENANT_SUMMARY = {
    "public": "select action, count(*), sum(tokens_input), sum(tokens_output), sum(tokens_total)"
    " from public.usage_events where tenant_id = %(tenant)s and " + JUNE + " group by action order by action",
    "spec": "select action, count(*), sum(tokens_input), sum(tokens_output), sum(tokens_total)"
    " from spec.usage_events where tenant_id = %(tenant)s and " + JUNE + " group by action order by action",
}
MY_JUNE = {
    "public": "select count(*), sum(tokens_input), sum(tokens_output) from public.usage_events where " + JUNE,
    "spec": "select count(*), sum(tokens_input), sum(tokens_output) from spec.usage_events where " + JUNE,
}
# What RLS adds to MY_JUNE for our policies, spelled out for the service role (the no-RLS limit).
MY_JUNE_EXPLICIT = (
    "select count(*), sum(tokens_input), sum(tokens_output) from public.usage_events where " + JUNE + " and"
    " (tenant_id = any(%(tenants)s::uuid[]) or (tenant_id is null and user_id = %(user)s))"
)


def run_as(conn: psycopg.Connection[Any], identity: Identity, query: str, params: dict[str, Any]) -> list[Any]:
    with acting_as(conn, identity):
        return conn.execute(query, params).fetchall()


@dataclass(frozen=True)
class Scenario:
    """Who runs what: a member of the largest tenant for (a), a member of three tenants for (b)."""

    tenant_member: Identity
    user: Identity
    filtered: dict[str, Any]
    unfiltered: dict[str, Any]


def prepare(conn: psycopg.Connection[Any], rows: int) -> Scenario:
    subjects = data.load(conn, rows=rows)
    for statement in SPEC_SCHEMA:
        conn.execute(statement)
    owner_row = conn.execute(
        "select user_id from public.tenant_members where tenant_id = %s and role = 'owner' limit 1",
        (subjects.largest_tenant,),
    ).fetchone()
    assert owner_row is not None
    user = subjects.member_of_three
    tenants = [r[0] for r in conn.execute("select tenant_id from public.tenant_members where user_id = %s", (user,))]
    scenario = Scenario(
        tenant_member=Identity.user(owner_row[0]),
        user=Identity.user(user),
        filtered={"tenant": subjects.largest_tenant},
        unfiltered={"tenants": tenants, "user": user},
    )
    # Same rows with and without RLS, or the comparison means nothing.
    service = Identity.service()
    ours_a = run_as(conn, scenario.tenant_member, TENANT_SUMMARY["public"], scenario.filtered)
    assert ours_a == run_as(conn, service, TENANT_SUMMARY["public"], scenario.filtered)
    ours_b = run_as(conn, scenario.user, MY_JUNE["public"], {})
    assert ours_b == run_as(conn, service, MY_JUNE_EXPLICIT, scenario.unfiltered)
    return scenario


def time_queries(conn: psycopg.Connection[Any], scenario: Scenario, repeat: int) -> dict[str, harness.Timing]:
    service = Identity.service()
    plan: dict[str, tuple[str, Identity, str, dict[str, Any]]] = {
        "norls_filtered": (
            "(a) tenant June summary, service_role (no RLS)",
            service,
            TENANT_SUMMARY["public"],
            scenario.filtered,
        ),
        "ours_filtered": (
            "(a) tenant June summary, ours",
            scenario.tenant_member,
            TENANT_SUMMARY["public"],
            scenario.filtered,
        ),
        "spec_filtered": (
            "(a) tenant June summary, spec",
            scenario.tenant_member,
            TENANT_SUMMARY["spec"],
            scenario.filtered,
        ),
        "norls_unfiltered": (
            "(b) all my June usage, service_role (no RLS)",
            service,
            MY_JUNE_EXPLICIT,
            scenario.unfiltered,
        ),
        "ours_unfiltered": ("(b) all my June usage, ours", scenario.user, MY_JUNE["public"], {}),
        "spec_unfiltered": ("(b) all my June usage, spec", scenario.user, MY_JUNE["spec"], {}),
    }
    return {
        key: harness.measure(label, partial(run_as, conn, identity, query, params), repeat=repeat)
        for key, (label, identity, query, params) in plan.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    console = Console(stderr=True)

    with (
        harness.server(args.database_url) as server_url,
        harness.scratch_database(server_url) as url,
        db.connect(url, autocommit=True) as conn,
    ):
        description = harness.server_description(conn)
        console.print(f"loading {args.rows:,} events ({description})")
        scenario = prepare(conn, args.rows)
        with db.connect_app(harness.app_url(url), autocommit=True) as app:  # as recorders and reports connect
            timings = time_queries(app, scenario, args.repeat)

    console.print(f"{args.rows:,} events, 1000 tenants (Zipf), 5000 users, 10% personal; {description}")
    harness.print_timings("RLS read cost (ms)", list(timings.values()), console)
    p50 = {key: timing.p50 for key, timing in timings.items()}
    harness.print_summary(
        {
            "rows": args.rows,
            "server": description,
            **{f"{key}_p50_ms": round(value, 3) for key, value in p50.items()},
            "ours_vs_norls_filtered": round(p50["ours_filtered"] / p50["norls_filtered"], 3),
            "ours_vs_norls_unfiltered": round(p50["ours_unfiltered"] / p50["norls_unfiltered"], 3),
            "spec_vs_ours_filtered": round(p50["spec_filtered"] / p50["ours_filtered"], 3),
            "spec_vs_ours_unfiltered": round(p50["spec_unfiltered"] / p50["ours_unfiltered"], 3),
        }
    )


if __name__ == "__main__":
    main()
