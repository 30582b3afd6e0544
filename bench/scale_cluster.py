"""Scale (c): ingest and one-tenant summaries on a three-node Citus cluster against one node.

    python bench/scale_cluster.py [--events N] [--repeat K] [--citus-dir DIR]

A coordinator and two workers of the embedded PostgreSQL 18 with the Citus build in DIR
($USAGEMETER_CITUS_DIR, or ../shared/citus beside the clone), all on this machine (tests/citus_cluster.py
starts them). The single node is a database of the coordinator's own server without the Citus
extension: the same binaries, settings and machine, so the ratio is the cost of distribution alone.
Both databases are migrated alike; the cluster's is then laid out by `db distribute`.

- Ingest: the recorder's `record_many` through the app login, batches of 500 events spread over 50
  tenants and their members (plus Personal events), from 4 threads; events per second.
- One-tenant summary: the product's summary of the current month for one tenant, grouped by action
  and model, as a member under RLS; p50 of `repeat` runs.

On 2 cores the three servers share the CPUs the single node has alone: no speed-up is expected; the
figures are the overhead. Its last line is JSON with cluster_vs_single_ingest (cluster events/s /
single events/s) and cluster_vs_single_tenant_summary (single p50 / cluster p50).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from psycopg import sql as pgsql
from rich.console import Console

from bench import harness
from tests import citus_cluster, factories
from usagemeter import Recorder, db
from usagemeter.db import Identity
from usagemeter.ops import distribute, migrate
from usagemeter.reporting import summaries

TENANTS = 50
THREADS = 4
BATCH = 500
ACTIONS = ("agency:scope:generate", "chat:message:send", "docs:page:translate")


@dataclass(frozen=True)
class Layout:
    """A migrated database to measure: its owner URL, app URL, and its tenants with one member each."""

    url: str
    app_url: str
    members: list[tuple[uuid.UUID, uuid.UUID]]


def prepare(cluster: citus_cluster.CitusCluster, database: str, *, distributed: bool) -> Layout:
    """Migrate (and distribute) `database` on the coordinator's server and add the tenants and members."""
    url = cluster.url(database)
    with db.connect(url, autocommit=True) as conn:
        migrate.migrate(conn)
        cluster.coordinator.enable_app_login(conn)  # roles are the server's: propagated to the workers under Citus
        if distributed:
            distribute.distribute(conn)
        members = []
        for _ in range(TENANTS):
            tenant, user = factories.add_tenant(conn), factories.add_user(conn)
            factories.add_member(conn, tenant, user)
            members.append((tenant, user))
    return Layout(url, cluster.app_url(database), members)


def ingest(layout: Layout, events: int) -> float:
    """Events per second of `events` recorded by THREADS threads in batches of BATCH."""
    per_thread = events // THREADS

    def work(worker: int) -> None:
        with Recorder(layout.app_url, pool_size=1) as recorder:
            for first in range(0, per_thread, BATCH):
                tenant, user = layout.members[(worker * 7 + first // BATCH) % len(layout.members)]
                batch = [
                    {
                        "action": ACTIONS[n % len(ACTIONS)],
                        "tenant_id": tenant if n % 10 else None,
                        "tokens_input": n % 4000,
                        "tokens_output": n % 1500,
                        "metadata": {"model": "bench-medium"},
                    }
                    for n in range(first, min(first + BATCH, per_thread))
                ]
                recorder.as_user(user).record_many(batch)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(THREADS)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return per_thread * THREADS / (time.perf_counter() - started)


# Bytes the ledger takes: its monthly tables (heap and indexes) and the key table, on every node.
SINGLE_BYTES = (
    "select sum(pg_total_relation_size(c.oid)) from pg_class as c"
    " join pg_namespace as n on n.oid = c.relnamespace and n.nspname = 'usagemeter_private'"
    " where c.relkind = 'r' and (c.relname like 'usage\\_events\\_%' or c.relname = 'usage_event_keys')"
)
CLUSTER_BYTES = (
    "select sum(citus_total_relation_size(logicalrelid)) from pg_dist_partition"
    " where logicalrelid::text like 'usagemeter\\_private.usage\\_events\\_%'"
    " or logicalrelid = 'usagemeter_private.usage_event_keys'::regclass"
)


def bytes_per_event(layout: Layout, query: str) -> float:
    with db.connect(layout.url, autocommit=True) as conn:
        size = conn.execute(query).fetchone()
        rows = conn.execute("select count(*) from public.usage_events").fetchone()
    assert size is not None
    assert rows is not None
    return int(size[0]) / int(rows[0])


def tenant_summary(layout: Layout, repeat: int) -> tuple[harness.Timing, list[Any]]:
    tenant, user = layout.members[0]
    start = datetime.now(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    query = summaries.SummaryQuery(
        scope="tenant", tenant_id=tenant, start=start, end=start + timedelta(days=32), group_by=("action", "model")
    )
    with db.connect(layout.app_url, autocommit=True) as conn:
        result = summaries.summarize(conn, Identity.user(user), query)
        timing = harness.measure(
            "one-tenant summary", lambda: summaries.summarize(conn, Identity.user(user), query), repeat=repeat
        )
    return timing, sorted(((row.keys, row.events, row.tokens_total) for row in result), key=repr)


def measure(*, events: int, repeat: int, citus_dir: Path, console: Console) -> dict[str, Any]:
    """The (c) figures, or nulls with the reason when the Citus build is missing."""
    reason = citus_cluster.missing(citus_dir)
    if reason is not None:
        console.print(f"(c) skipped: {reason}")
        return {"cluster_vs_single_ingest": None, "cluster_skipped": reason}
    with (
        tempfile.TemporaryDirectory(prefix="usagemeter-citus-bench-") as scratch,
        citus_cluster.citus_cluster(Path(scratch), citus_dir) as cluster,
    ):
        with db.connect(cluster.url(), autocommit=True) as admin:  # no citus extension: a plain single node
            admin.execute(pgsql.SQL("create database {}").format(pgsql.Identifier("um_single")))
        cluster.create_database("um_cluster")
        clustered = prepare(cluster, "um_cluster", distributed=True)
        single = prepare(cluster, "um_single", distributed=False)
        console.print(f"ingest: {events:,} events, {THREADS} threads, batches of {BATCH}")
        single_rate = ingest(single, events)
        cluster_rate = ingest(clustered, events)
        for layout in (single, clustered):
            with db.connect(layout.url, autocommit=True) as conn:
                conn.execute("select usagemeter_private.fold_usage_rollups_v1()")
                conn.execute("analyze")
        single_bytes, cluster_bytes = bytes_per_event(single, SINGLE_BYTES), bytes_per_event(clustered, CLUSTER_BYTES)
        single_timing, single_rows = tenant_summary(single, repeat)
        cluster_timing, cluster_rows = tenant_summary(clustered, repeat)
    if single_rows != cluster_rows:
        raise RuntimeError("the cluster's one-tenant summary differs from the single node's")
    console.print(
        f"ingest: one node {single_rate:,.0f} events/s, cluster {cluster_rate:,.0f} events/s;"
        f" one-tenant summary p50: one node {single_timing.p50:.2f} ms, cluster {cluster_timing.p50:.2f} ms"
    )
    return {
        "single_ingest_events_per_s": round(single_rate),
        "cluster_ingest_events_per_s": round(cluster_rate),
        "cluster_vs_single_ingest": round(cluster_rate / single_rate, 2),
        "single_tenant_summary_ms": round(single_timing.p50, 2),
        "cluster_tenant_summary_ms": round(cluster_timing.p50, 2),
        "cluster_vs_single_tenant_summary": round(single_timing.p50 / cluster_timing.p50, 2),
        "single_ledger_bytes_per_event": round(single_bytes),
        "cluster_ledger_bytes_per_event": round(cluster_bytes),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--citus-dir", type=Path, default=None)
    args = parser.parse_args()
    console = Console(stderr=True)
    summary = measure(
        events=args.events,
        repeat=args.repeat,
        citus_dir=args.citus_dir or citus_cluster.citus_dir(Path(__file__).resolve().parents[1]),
        console=console,
    )
    harness.print_summary(summary)


if __name__ == "__main__":
    main()
