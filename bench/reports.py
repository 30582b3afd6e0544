"""Report speed at scale: summaries (rollup-backed), costs, statements, listings and exports against plain GROUP BYs.

    python bench/reports.py [--rows N] [--repeat K] [--database-url URL]

Data from bench/data.py (1000 tenants, Zipf sizes, 5000 users, 10% personal, 3 models, over 2026),
rated at write from bench/data.py's prices, loaded first. For each summary (and the largest
tenant's statement) the same numbers are computed with a plain GROUP BY over the raw rows, in the
same run, and both are timed; the benchmark asserts they are equal first.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg
from rich.console import Console

from bench import data, harness
from usagemeter import db
from usagemeter.billing import prices, statements
from usagemeter.db import Identity, acting_as
from usagemeter.reporting import exporting, filters, listing, summaries

JUNE = (datetime(2026, 6, 1, tzinfo=UTC), datetime(2026, 7, 1, tzinfo=UTC))
STATEMENT_MONTH = "2026-06"
STATEMENT_ZONES = ["UTC", "Europe/Paris"]
COST_SUMMARY_TARGET_MS = 20.0  # p95, issue 10
STATEMENT_TARGET_MS = 200.0  # p95, issue 10
YEAR = (datetime(2026, 1, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC))

RAW_BY_ACTION_AND_DAY = (
    "select action, date_trunc('day', created_at) as day, count(*), sum(tokens_input), sum(tokens_output),"
    " sum(tokens_total) from public.usage_events where tenant_id = %(tenant)s and created_at >= %(start)s"
    " and created_at < %(end)s group by 1, 2"
)
RAW_MINE = (
    "select count(*), sum(tokens_input), sum(tokens_output), sum(tokens_total) from public.usage_events"
    " where created_at >= %(start)s and created_at < %(end)s"
    " and (tenant_id = any(%(tenants)s::uuid[]) or (tenant_id is null and user_id = %(user)s))"
)
# What a cost summary and a statement's lines hold (event_count: corrections count -1 or 0; the bench has none).
RAW_COST_BY_ACTION_AND_MODEL = (
    "select action, model, sum(event_count), sum(tokens_input), sum(tokens_output), sum(cost)"
    " from public.usage_events where tenant_id = %(tenant)s and created_at >= %(start)s"
    " and created_at < %(end)s group by 1, 2"
)
RAW_PERSONAL = (
    "select count(*), sum(tokens_input), sum(tokens_output), sum(tokens_total) from public.usage_events"
    " where tenant_id is null and user_id = %(user)s and created_at >= %(start)s and created_at < %(end)s"
)


@dataclass(frozen=True)
class Case:
    label: str
    identity: Identity
    query: summaries.SummaryQuery
    raw_sql: str
    raw_params: dict[str, Any]


def totals_of_summary(rows: list[summaries.SummaryRow]) -> tuple[int, int, int, int]:
    return (
        sum(r.events for r in rows),
        sum(r.tokens_input for r in rows),
        sum(r.tokens_output for r in rows),
        sum(r.tokens_total for r in rows),
    )


def totals_of_raw(rows: list[tuple[Any, ...]]) -> tuple[int, int, int, int]:
    return tuple(sum(int(row[i] or 0) for row in rows) for i in range(-4, 0))  # type: ignore[return-value]


CostGroups = dict[tuple[str, str | None], tuple[int, int, int, Decimal]]


def cost_groups_of_summary(rows: list[summaries.SummaryRow]) -> CostGroups:
    return {(r.keys["action"], r.keys["model"]): (r.events, r.tokens_input, r.tokens_output, r.cost) for r in rows}


def cost_groups_of_statement(statement: statements.Statement) -> CostGroups:
    return {(line.action, line.model): (line.events, line.tokens_input, line.tokens_output, line.amount)
            for line in statement.lines}  # fmt: skip


def cost_groups_of_raw(rows: list[tuple[Any, ...]]) -> CostGroups:
    return {(r[0], r[1]): (int(r[2]), int(r[3]), int(r[4]), Decimal(r[5])) for r in rows}


def raw(conn: psycopg.Connection[Any], sql_text: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
    with acting_as(conn, Identity.service()):
        return conn.execute(sql_text, params).fetchall()


def cases(conn: psycopg.Connection[Any], subjects: data.Subjects) -> list[Case]:
    member = conn.execute(
        "select user_id from public.tenant_members where tenant_id = %s and role = 'owner' limit 1",
        (subjects.largest_tenant,),
    ).fetchone()
    assert member is not None
    my_tenants = [
        r[0]
        for r in conn.execute(
            "select tenant_id from public.tenant_members where user_id = %s", (subjects.member_of_three,)
        )
    ]
    month: dict[str, Any] = {"start": JUNE[0], "end": JUNE[1]}
    return [
        Case(
            "largest tenant's month by action and day",
            Identity.user(member[0]),
            summaries.SummaryQuery(
                scope="tenant", tenant_id=subjects.largest_tenant, **month, group_by=("action",), bucket="day"
            ),
            RAW_BY_ACTION_AND_DAY,
            {"tenant": subjects.largest_tenant, **month},
        ),
        Case(
            "all my usage this month (3 tenants, RLS)",
            Identity.user(subjects.member_of_three),
            summaries.SummaryQuery(scope="all", **month),
            RAW_MINE,
            {"tenants": my_tenants, "user": subjects.member_of_three, **month},
        ),
        Case(
            "a personal user's month",
            Identity.user(subjects.personal_user),
            summaries.SummaryQuery(scope="user", user_id=subjects.personal_user, **month),
            RAW_PERSONAL,
            {"user": subjects.personal_user, **month},
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    console = Console(stderr=True)
    timings: list[harness.Timing] = []
    speedups: dict[str, float] = {}

    with (
        harness.server(args.database_url) as server_url,
        harness.scratch_database(server_url) as url,
        db.connect(url, autocommit=True) as owner,
        db.connect_app(harness.app_url(url), autocommit=True) as conn,  # reads run as recorders and reports do
    ):
        description = harness.server_description(owner)
        console.print(f"loading {args.rows:,} events ({description})")
        prices.load_prices(owner, data.PRICES)  # before the events: each is rated as it is written
        started = time.perf_counter()
        subjects = data.load(owner, rows=args.rows)
        load_seconds = time.perf_counter() - started
        console.print(f"loaded in {load_seconds:,.0f} s ({args.rows / load_seconds:,.0f} rows/s)")
        for case in cases(owner, subjects):
            summary = summaries.summarize(conn, case.identity, case.query)
            baseline = raw(conn, case.raw_sql, case.raw_params)
            assert totals_of_summary(summary) == totals_of_raw(baseline), case.label
            ours = harness.measure(
                case.label, partial(summaries.summarize, conn, case.identity, case.query), repeat=args.repeat
            )
            plain = harness.measure(
                "  plain GROUP BY over raw rows",
                partial(raw, conn, case.raw_sql, case.raw_params),
                repeat=max(3, args.repeat // 3),
            )
            timings += [ours, plain]
            speedups[case.label] = plain.p50 / ours.p50

        largest = cases(owner, subjects)[0]
        month: dict[str, Any] = {"tenant": subjects.largest_tenant, "start": JUNE[0], "end": JUNE[1]}
        cost_query = summaries.SummaryQuery(
            scope="tenant", tenant_id=subjects.largest_tenant, start=JUNE[0], end=JUNE[1], group_by=("action", "model")
        )
        cost_summary = summaries.summarize(conn, largest.identity, cost_query)
        cost_baseline = cost_groups_of_raw(raw(conn, RAW_COST_BY_ACTION_AND_MODEL, month))
        assert cost_groups_of_summary(cost_summary) == cost_baseline, "cost summary"
        month_cost = sum((group[3] for group in cost_baseline.values()), Decimal(0))
        assert month_cost > 0, "the largest tenant's month costs nothing: were the prices loaded?"
        cost_timing = harness.measure("cost summary: largest tenant's month by action and model",
                                      partial(summaries.summarize, conn, largest.identity, cost_query),
                                      repeat=args.repeat)  # fmt: skip
        cost_plain = harness.measure("  plain GROUP BY over raw rows", partial(
            raw, conn, RAW_COST_BY_ACTION_AND_MODEL, month), repeat=max(3, args.repeat // 3))  # fmt: skip
        timings += [cost_timing, cost_plain]
        statement_timings: dict[str, harness.Timing] = {}
        for tz in STATEMENT_ZONES:
            statement_of = partial(statements.statement, conn, Identity.service(),
                                   tenant_id=subjects.largest_tenant, month=STATEMENT_MONTH, tz=tz)  # fmt: skip
            start, end = statements.month_bounds(STATEMENT_MONTH, tz)
            expected = cost_groups_of_raw(
                raw(conn, RAW_COST_BY_ACTION_AND_MODEL, {**month, "start": start, "end": end})
            )
            assert cost_groups_of_statement(statement_of()) == expected, f"statement ({tz})"
            statement_timings[tz] = harness.measure(
                f"statement: largest tenant's {STATEMENT_MONTH}, {tz}", statement_of, repeat=args.repeat
            )
            timings.append(statement_timings[tz])
        list_query = listing.ListQuery(scope="tenant", tenant_id=subjects.largest_tenant, start=YEAR[0], end=YEAR[1])
        first_page = listing.list_events(conn, largest.identity, list_query)
        timings.append(harness.measure("listing: first page of 100", partial(
            listing.list_events, conn, largest.identity, list_query), repeat=args.repeat))  # fmt: skip
        timings.append(harness.measure("listing: next page of 100", partial(
            listing.list_events, conn, largest.identity, list_query, cursor=first_page.next_cursor),
            repeat=args.repeat))  # fmt: skip

        export_query = filters.UsageFilter(
            scope="tenant", tenant_id=subjects.largest_tenant, start=YEAR[0], end=YEAR[1]
        )
        export_rates = {}
        formats: list[exporting.ExportFormat] = ["csv", "jsonl"]
        for fmt in formats:
            sink = io.BytesIO()
            started = time.perf_counter()
            exported = exporting.export_events(conn, Identity.service(), export_query, fmt, sink)
            export_rates[fmt] = exported / (time.perf_counter() - started)

    console.print(f"{args.rows:,} events; {description}")
    harness.print_timings("Reports (ms)", timings, console)
    for label, ratio in speedups.items():
        console.print(f"{label}: {ratio:,.1f}x faster than the plain GROUP BY")
    cost_speedup = cost_plain.p50 / cost_timing.p50
    console.print(f"cost summary: {cost_speedup:,.1f}x faster than the plain GROUP BY")
    console.print(f"export: {export_rates['csv']:,.0f} rows/s CSV, {export_rates['jsonl']:,.0f} rows/s JSON Lines")
    statement_p95 = max(t.p95 for t in statement_timings.values())
    for name, p95, target in [
        ("cost summary", cost_timing.p95, COST_SUMMARY_TARGET_MS),
        ("statement", statement_p95, STATEMENT_TARGET_MS),
    ]:
        console.print(f"{name} p95 {p95:,.2f} ms: target under {target:,.0f} ms {'met' if p95 < target else 'MISSED'}")
    summary_timings = [t for t in timings if t.label in speedups]
    harness.print_summary(
        {
            "rows": args.rows,
            "server": description,
            "summary_p95_ms_max": round(max(t.p95 for t in summary_timings), 2),
            "largest_tenant_speedup_vs_raw": round(speedups[largest.label], 2),
            "speedups_vs_raw": {k: round(v, 2) for k, v in speedups.items()},
            "listing_p95_ms": round(max(t.p95 for t in timings if t.label.startswith("listing")), 2),
            "export_rows_per_s": round(export_rates["csv"]),
            "export_jsonl_rows_per_s": round(export_rates["jsonl"]),
            "load_rows_per_s": round(args.rows / load_seconds),
            "cost_summary_p50_ms": round(cost_timing.p50, 2),
            "cost_summary_p95_ms": round(cost_timing.p95, 2),
            "cost_summary_speedup_vs_raw": round(cost_speedup, 2),
            "largest_tenant_month_cost": float(month_cost),
            "statement_p95_ms": round(statement_p95, 2),
            "statement_ms": {
                tz: {"p50": round(t.p50, 2), "p95": round(t.p95, 2)} for tz, t in statement_timings.items()
            },
        }
    )


if __name__ == "__main__":
    main()
