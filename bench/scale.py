"""Scale: monthly partitions against one plain table, and retention's drop against DELETE.

    python bench/scale.py [--rows N] [--month-rows M] [--repeat K] [--database-url URL]

(a) The same events (bench/data.py, spread over 2026) in two databases: one migrated up to the
    partitioning migration and left there (one plain table), and a copy of it (CREATE DATABASE
    ... TEMPLATE) migrated on and converted by `maintain` (12 monthly partitions). In each, a
    one-month summary that reads raw events (a metadata filter), the same for one tenant (the
    product's summary SQL), and a one-month CSV export (the product's export); their results are
    checked equal first.
(b) Two months of M events each added to the partitioned database, then: DELETE of one month's
    rows (in a transaction rolled back, so the same rows stay), and `retention` dropping that
    month, timed; and retention archiving the other month to Parquet first.
(c) Ingest and a one-tenant summary on a three-node Citus cluster against one node of the same
    server (bench/scale_cluster.py, which runs it alone too), when the Citus build is found
    (--citus-dir, $USAGEMETER_CITUS_DIR, or ../shared/citus beside the clone); its keys are null,
    with the reason, when it is not, or with --cluster-events 0.

Its last line is JSON with partitioned_vs_plain_summary (plain time / partitioned time),
drop_vs_delete_speedup (DELETE time / retention time) and cluster_vs_single_ingest (cluster
events/s / one node's).
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg
from psycopg import sql as pgsql
from rich.console import Console

from bench import data, harness, scale_cluster
from tests import citus_cluster
from usagemeter import db
from usagemeter.billing import prices
from usagemeter.db import Identity, acting_as
from usagemeter.ops import migrate, partitions, retention
from usagemeter.reporting import exporting, filters, summaries

PARTITIONING = "20261205090000"
JUNE = (datetime(2026, 6, 1, tzinfo=UTC), datetime(2026, 7, 1, tzinfo=UTC))
# Months for (b), before the loaded year: dropped by retention keeping everything from 2025-07 on.
OLD_MONTHS = (datetime(2025, 5, 1, tzinfo=UTC), datetime(2025, 6, 1, tzinfo=UTC))

MONTH_ROWS = """
insert into public.usage_events (tenant_id, user_id, action, tokens_input, tokens_output, metadata, created_at)
select %(tenant)s, %(user)s, 'agency:scope:generate', i %% 4000, i %% 1500, '{"model": "gpt-4o"}',
       %(start)s::timestamptz + (i::double precision / %(rows)s::int) * interval '28 days'
from generate_series(%(first)s::int, %(last)s::int) as i
"""
DELETE_MONTH = "delete from public.usage_events where created_at >= %(start)s and created_at < %(end)s"


def queries(tenant: uuid.UUID) -> dict[str, summaries.SummaryQuery]:
    # metadata {} matches every event, and makes the summary read raw events (rollups lack metadata).
    return {
        "June, every tenant, by action and model": summaries.SummaryQuery(
            scope="all", group_by=("action", "model"), start=JUNE[0], end=JUNE[1], metadata={}
        ),
        "June, the largest tenant, by action": summaries.SummaryQuery(
            scope="tenant", tenant_id=tenant, group_by=("action",), start=JUNE[0], end=JUNE[1], metadata={}
        ),
    }


def export_june(conn: psycopg.Connection[Any]) -> int:
    query = filters.UsageFilter(scope="all", start=JUNE[0], end=JUNE[1])
    return exporting.export_events(conn, Identity.service(), query, "csv", io.BytesIO())


def summarize(conn: psycopg.Connection[Any], query: summaries.SummaryQuery) -> list[tuple[Any, ...]]:
    """The summary's own SQL (summaries.summary_statement), run as the service role.

    Not summaries.summarize: it also asks which months retention took out, which the plain
    database (migrated only up to partitioning) cannot answer.
    """
    statement, params = summaries.summary_statement(query)
    with acting_as(conn, Identity.service()):
        return conn.execute(statement, params).fetchall()


def time_reads(
    conn: psycopg.Connection[Any], label: str, tenant: uuid.UUID, repeat: int
) -> tuple[list[harness.Timing], dict[str, object]]:
    timings: list[harness.Timing] = []
    results: dict[str, object] = {}
    for name, query in queries(tenant).items():
        results[name] = summarize(conn, query)
        timings.append(harness.measure(f"{label}: {name}", partial(summarize, conn, query), repeat=repeat))
    results["export"] = export_june(conn)
    exports = max(3, repeat // 5)
    timings.append(harness.measure(f"{label}: June CSV export", partial(export_june, conn), repeat=exports))
    return timings, results


def add_month(conn: psycopg.Connection[Any], start: datetime, rows: int, subjects: data.Subjects) -> None:
    member = conn.execute(
        "select user_id from public.tenant_members where tenant_id = %s limit 1", (subjects.largest_tenant,)
    ).fetchone()
    assert member is not None
    for first in range(1, rows + 1, 100_000):
        conn.execute(MONTH_ROWS, {"tenant": subjects.largest_tenant, "user": member[0], "start": start,
                                  "rows": rows, "first": first, "last": min(first + 99_999, rows)})  # fmt: skip


class TimedRetention(retention.Retention):
    """Retention with each step's time kept: the detach and the drop take locks, releasing keys does not."""

    seconds: dict[str, float]

    def _timed(self, step: str, run: Callable[[], None]) -> None:
        started = time.perf_counter()
        run()
        self.seconds = {**getattr(self, "seconds", {}), step: time.perf_counter() - started}

    def detach(self, month: retention.Month) -> None:
        self._timed("detach", partial(super().detach, month))

    def free_keys(self, month: retention.Month) -> None:
        self._timed("free_keys", partial(super().free_keys, month))

    def drop(self, month: retention.Month) -> None:
        self._timed("drop", partial(super().drop, month))


def keep_from(month: datetime) -> int:
    """The --keep-months that keeps `month` and later, today."""
    now = datetime.now(UTC)
    return (now.year * 12 + now.month) - (month.year * 12 + month.month)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_200_000, help="events over 2026, for (a)")
    parser.add_argument("--month-rows", type=int, default=1_000_000, help="events in each month of (b)")
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--cluster-events", type=int, default=100_000, help="events ingested in (c); 0 skips (c)")
    parser.add_argument("--citus-dir", type=Path, default=None, help="the Citus build for (c)")
    args = parser.parse_args()
    console = Console(stderr=True)
    before_partitioning = [m for m in migrate.discover_migrations() if m.version < PARTITIONING]
    summary: dict[str, Any] = {}

    with harness.server(args.database_url) as server_url:
        stem = f"um_bench_{uuid.uuid4().hex[:10]}"
        plain_name, parted_name = f"{stem}_plain", f"{stem}_parted"
        with db.connect(server_url, autocommit=True) as admin:
            admin.execute(pgsql.SQL("create database {}").format(pgsql.Identifier(plain_name)))
        plain_url = db.with_database(server_url, plain_name)
        parted_url = db.with_database(server_url, parted_name)
        try:
            with db.connect(plain_url, autocommit=True) as plain:
                description = harness.server_description(plain)
                migrate.migrate(plain, before_partitioning)
                prices.load_prices(plain, data.PRICES)
                console.print(f"loading {args.rows:,} events into one plain table ({description})")
                subjects = data.load(plain, rows=args.rows)
            with db.connect(server_url, autocommit=True) as admin:
                admin.execute(
                    pgsql.SQL("create database {} template {}").format(
                        pgsql.Identifier(parted_name), pgsql.Identifier(plain_name)
                    )
                )
            with db.connect(parted_url, autocommit=True) as parted:
                started = time.perf_counter()
                migrate.migrate(parted)
                migrated = time.perf_counter() - started
                started = time.perf_counter()
                moved = partitions.move_out_of_default(parted)
                converted = time.perf_counter() - started
                parted.execute("vacuum analyze")
                console.print(f"converted: migration {migrated:.1f} s, {len(moved)} months moved out of the default"
                              f" partition in {converted:.1f} s ({args.rows / converted:,.0f} rows/s)")  # fmt: skip
                summary["conversion_rows_per_s"] = round(args.rows / converted)
                extra = parted.execute(
                    "select pg_total_relation_size('usagemeter_private.usage_event_keys'),"
                    " pg_total_relation_size('public.usage_rollup_hourly')"
                    " + pg_total_relation_size('public.usage_rollup_daily')"
                    " + pg_total_relation_size('public.usage_rollup_tenant_daily')"
                ).fetchone()
                assert extra is not None
                summary["keys_bytes_per_event"] = round(int(extra[0]) / args.rows, 1)
                summary["rollups_bytes_per_event"] = round(int(extra[1]) / args.rows, 1)
                summary["conversion_migration_s"] = round(migrated, 2)

            timings = []
            with db.connect(plain_url, autocommit=True) as plain:
                plain_timings, plain_results = time_reads(plain, "plain", subjects.largest_tenant, args.repeat)
            with db.connect(parted_url, autocommit=True) as parted:
                parted_timings, parted_results = time_reads(parted, "partitioned", subjects.largest_tenant,
                                                            args.repeat)  # fmt: skip
            assert plain_results == parted_results, "the partitioned database answers differently"
            timings += plain_timings + parted_timings
            ratios = [p.p50 / q.p50 for p, q in zip(plain_timings, parted_timings, strict=True)]
            summary["partitioned_vs_plain_summary"] = round(ratios[0], 2)
            summary["partitioned_vs_plain_tenant_summary"] = round(ratios[1], 2)
            summary["partitioned_vs_plain_export"] = round(ratios[2], 2)

            with db.connect(parted_url, autocommit=True) as parted:
                for month in OLD_MONTHS:
                    console.print(f"adding {args.month_rows:,} events in {month:%Y-%m}")
                    add_month(parted, month, args.month_rows, subjects)
                partitions.move_out_of_default(parted)
                parted.execute("vacuum analyze public.usage_events")
                delete_window = {"start": OLD_MONTHS[1], "end": datetime(2025, 7, 1, tzinfo=UTC)}
                started = time.perf_counter()
                with parted.transaction(force_rollback=True):
                    deleted = parted.execute(DELETE_MONTH, delete_window).rowcount
                delete_s = time.perf_counter() - started
                assert deleted == args.month_rows
                with tempfile.TemporaryDirectory(prefix="usagemeter-archive-") as archive_dir:
                    started = time.perf_counter()
                    archived = retention.Retention(
                        parted, keep_months=keep_from(OLD_MONTHS[1]), archive_dir=Path(archive_dir)
                    ).run()
                    archive_s = time.perf_counter() - started
                    archive_bytes = sum(f.stat().st_size for f in Path(archive_dir).iterdir())
                steps = TimedRetention(parted, keep_months=keep_from(OLD_MONTHS[1]) - 1, archive_dir=None)
                started = time.perf_counter()
                dropped = steps.run()
                drop_s = time.perf_counter() - started
                assert [o.month.start for o in archived] == [OLD_MONTHS[0]]
                assert [o.month.start for o in dropped] == [OLD_MONTHS[1]]
                size = parted.execute(
                    "select sum(pg_total_relation_size(c.oid)) from pg_inherits as i join pg_class as c"
                    " on c.oid = i.inhrelid where i.inhparent = 'public.usage_events'::regclass"
                ).fetchone()
                rows = parted.execute("select count(*) from public.usage_events").fetchone()
                assert size is not None
                assert rows is not None
            summary.update({
                "delete_month_s": round(delete_s, 2),
                "retention_drop_s": round(drop_s, 3),
                "drop_vs_delete_speedup": round(delete_s / drop_s, 1),
                "retention_detach_s": round(steps.seconds["detach"], 3),
                "retention_keys_s": round(steps.seconds["free_keys"], 3),
                "retention_table_drop_s": round(steps.seconds["drop"], 3),
                "retention_archive_s": round(archive_s, 2),
                "archive_rows_per_s": round(args.month_rows / archive_s),
                "archive_bytes_per_event": round(archive_bytes / args.month_rows, 1),
                "table_bytes_per_event": round(int(size[0]) / int(rows[0]), 1),
            })  # fmt: skip
        finally:
            with db.connect(server_url, autocommit=True) as admin:
                for name in (plain_name, parted_name):
                    admin.execute(pgsql.SQL("drop database if exists {} with (force)").format(pgsql.Identifier(name)))

    harness.print_timings(f"one month of {args.rows:,} events over 2026 ({description})", timings, console)
    console.print(
        f"DELETE of a month of {args.month_rows:,} events {summary['delete_month_s']} s; retention dropping it"
        f" {summary['retention_drop_s']} s ({summary['drop_vs_delete_speedup']}x: detach"
        f" {summary['retention_detach_s']} s, keys released {summary['retention_keys_s']} s, drop"
        f" {summary['retention_table_drop_s']} s); archiving one to Parquet first"
        f" {summary['retention_archive_s']} s ({summary['archive_rows_per_s']:,} rows/s,"
        f" {summary['archive_bytes_per_event']} bytes per event; {summary['table_bytes_per_event']} in PostgreSQL)"
    )
    summary.update(cluster_figures(args.cluster_events, args.repeat, args.citus_dir, console))
    harness.print_summary(summary)


def cluster_figures(events: int, repeat: int, citus_dir: Path | None, console: Console) -> dict[str, Any]:
    """(c), or its key null with the reason when it is not measured."""
    if events <= 0:
        return {"cluster_vs_single_ingest": None, "cluster_skipped": "--cluster-events 0"}
    found = citus_dir or citus_cluster.citus_dir(Path(__file__).resolve().parents[1])
    return scale_cluster.measure(events=events, repeat=repeat, citus_dir=found, console=console)


if __name__ == "__main__":
    main()
