"""Report speed at scale: summaries (rollup-backed), listings and exports against plain GROUP BYs over raw rows.

    python bench/reports.py [--rows N] [--repeat K] [--database-url URL]

Data from bench/data.py (1000 tenants, Zipf sizes, 5000 users, 10% personal, over 2026). For each
summary the same numbers are computed with a plain GROUP BY over the raw rows, in the same run,
and both are timed; the benchmark asserts they are equal first.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
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
from usagemeter.reporting import exporting, filters, listing, summaries

JUNE = (datetime(2026, 6, 1, tzinfo=UTC), datetime(2026, 7, 1, tzinfo=UTC))
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
        started = time.perf_counter()
        subjects = data.load(owner, rows=args.rows)
        console.print(f"loaded in {time.perf_counter() - started:,.0f} s")
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
    console.print(f"export: {export_rates['csv']:,.0f} rows/s CSV, {export_rates['jsonl']:,.0f} rows/s JSON Lines")
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
        }
    )


if __name__ == "__main__":
    main()
