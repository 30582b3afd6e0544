"""Ingest speed: our write paths against COPY (the raw limit) and a naive per-event commit, in one run.

    python bench/ingest.py [--rows N] [--json] [--database-url URL]

Same table, same indexes, emptied before each phase:
(a) COPY of pre-built rows as the table owner (the raw limit);
(b) naive: one INSERT + commit per event, what a spec-level recordUsage does;
(c) record_many in batches of 1000 as a signed-in user (RLS on);
(d) 32 threads calling record() as that user, sharing commits (group commit);
(d') 256 asyncio tasks awaiting AsyncRecorder.record() as that user (the HTTP server's path);
(e) enqueue(): throughput until flushed, and the caller's cost per call;
(f) 32 connections, each its own user signed in (role authenticated), committing one-event
    inserts for a fixed time: all into one tenant, then each into its own tenant
    (single_tenant_vs_spread), and both again without the rollup trigger (the raw limit);
(g) budgets: (c) and (d) again, each with three hard budgets on the tenant (events per month,
    tokens per day, cost per month; limits never reached) and with no budget at all, in turns,
    with a token price for the events' model loaded on both sides (batch_budgets_vs_none,
    single_budgets_vs_none).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg
from psycopg import sql as pgsql
from rich.console import Console
from rich.table import Table

from bench import harness
from usagemeter import db
from usagemeter.billing import budgets
from usagemeter.recording.recorder import AsyncRecorder, EnqueueOptions, Recorder

COLUMNS = ("tenant_id", "user_id", "action", "module_id", "tokens_input", "tokens_output", "metadata")
NAIVE_INSERT = (
    "insert into public.usage_events (tenant_id, user_id, action, module_id, tokens_input, tokens_output, metadata)"
    " values (%s, %s, %s, %s, %s, %s, %s)"
)
DIRECT_INSERT = (
    "insert into public.usage_events (tenant_id, user_id, action, tokens_input, tokens_output)"
    " values (%s, %s, %s, %s, %s)"
)
SIGN_IN = "select set_config('role', 'authenticated', false), set_config('request.jwt.claims', %s, false)"
ROLLUP_TRIGGER = "usage_rollup_after_insert"
ACTION = "agency:scope:generate"
METADATA = {"model": "gpt-bench", "request": "r-000000"}
PRICE_INSERT = (
    "insert into public.usage_prices (model, currency, input_per_million, output_per_million, effective_from)"
    " values (%s, 'USD', 3, 15, '2000-01-01T00:00:00Z')"
)
BUDGET_TOTALS = (
    "select b.metric, coalesce(sum(k.used), 0) from public.usage_budgets as b"
    " left join public.usage_budget_counters as k on k.budget_id = b.id where b.tenant_id = %s group by b.metric"
)
NEVER_REACHED = Decimal(10) ** 13
BUDGET_TARGET = 0.7


def empty_table(conn: psycopg.Connection[Any]) -> None:
    conn.execute(
        "truncate public.usage_events, public.usage_rollup_deltas, public.usage_rollup_hourly,"
        " public.usage_rollup_daily, public.usage_rollup_tenant_daily"
    )
    conn.execute("checkpoint")


def rows_per_s(rows: int, work: Callable[[], None]) -> float:
    started = time.perf_counter()
    work()
    return rows / (time.perf_counter() - started)


def copy_rows(conn: psycopg.Connection[Any], tenant: uuid.UUID, user: uuid.UUID, rows: int) -> float:
    prebuilt = [(tenant, user, ACTION, "agency", i % 4000, i % 1500, json.dumps(METADATA)) for i in range(rows)]

    def work() -> None:
        with (
            conn.transaction(),
            conn.cursor() as cur,
            cur.copy(f"copy public.usage_events ({', '.join(COLUMNS)}) from stdin") as copy,
        ):
            for row in prebuilt:
                copy.write_row(row)

    return rows_per_s(rows, work)


def naive_inserts(url: str, tenant: uuid.UUID, user: uuid.UUID, rows: int) -> float:
    with db.connect(url, autocommit=True) as conn:

        def work() -> None:
            for i in range(rows):
                conn.execute(NAIVE_INSERT, (tenant, user, ACTION, "agency", i % 4000, i % 1500, json.dumps(METADATA)))

        return rows_per_s(rows, work)


def event(tenant: uuid.UUID, i: int) -> dict[str, Any]:
    return {"action": ACTION, "tenant_id": tenant, "tokens_input": i % 4000, "tokens_output": i % 1500,
            "metadata": METADATA}  # fmt: skip


def batches_as_user(recorder: Recorder, tenant: uuid.UUID, rows: int, batch: int = 1000) -> float:
    events = [event(tenant, i) for i in range(rows)]

    def work() -> None:
        for start in range(0, rows, batch):
            recorder.record_many(events[start : start + batch])

    return rows_per_s(rows, work)


def group_commit(recorder: Recorder, tenant: uuid.UUID, rows: int, threads: int = 32) -> float:
    per_thread = rows // threads

    def caller() -> None:
        for i in range(per_thread):
            recorder.record(user_id=None, **event(tenant, i))

    def work() -> None:
        workers = [threading.Thread(target=caller) for _ in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()

    return rows_per_s(per_thread * threads, work)


def async_group_commit(url: str, user: uuid.UUID, tenant: uuid.UUID, rows: int, tasks: int = 256) -> float:
    """AsyncRecorder.record() from `tasks` concurrent tasks of one event loop, after a warm-up."""
    per_task = rows // tasks

    async def scenario() -> float:
        async with AsyncRecorder(url) as recorder:
            me = recorder.as_user(user)
            await me.record(user_id=None, **event(tenant, 0))

            async def caller() -> None:
                for i in range(per_task):
                    await me.record(user_id=None, **event(tenant, i))

            started = time.perf_counter()
            await asyncio.gather(*(caller() for _ in range(tasks)))
            return per_task * tasks / (time.perf_counter() - started)

    return asyncio.run(scenario())


def enqueue(recorder: Recorder, tenant: uuid.UUID, user: uuid.UUID, rows: int) -> tuple[float, float]:
    caller_s = 0.0
    started = time.perf_counter()
    for i in range(rows):
        before = time.perf_counter()
        recorder.enqueue(action=ACTION, user_id=user, tenant_id=tenant, tokens_input=i % 4000, metadata=METADATA)
        caller_s += time.perf_counter() - before
    if not recorder.flush(timeout=600):
        raise RuntimeError("enqueued events were not flushed within 10 minutes")
    return rows / (time.perf_counter() - started), caller_s / rows * 1e6


def direct_writers(url: str, writers: list[tuple[uuid.UUID, uuid.UUID]], seconds: float) -> tuple[int, float]:
    """Events committed, and seconds: a connection per (tenant, user), signed in as the user, one insert per commit."""
    started = threading.Barrier(len(writers) + 1)
    stop = threading.Event()
    written = [0] * len(writers)

    def writer(index: int, tenant: uuid.UUID, user: uuid.UUID) -> None:
        with db.connect(url, autocommit=True) as conn:
            conn.execute(SIGN_IN, (json.dumps({"sub": str(user), "role": "authenticated"}),))
            started.wait()
            while not stop.is_set():
                conn.execute(DIRECT_INSERT, (tenant, user, ACTION, written[index] % 4000, 100))
                written[index] += 1

    threads = [threading.Thread(target=writer, args=(i, *pair)) for i, pair in enumerate(writers)]
    for thread in threads:
        thread.start()
    started.wait()
    began = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join()
    return sum(written), time.perf_counter() - began


def add_writers(owner: psycopg.Connection[Any], count: int) -> tuple[list[uuid.UUID], list[uuid.UUID]]:
    """`count` users, a tenant for each (they are its members), and one more tenant all of them belong to."""
    users = [
        row[0]
        for row in owner.execute(
            "insert into auth.users (id) select gen_random_uuid() from generate_series(1, %s) returning id", (count,)
        )
    ]
    tenants = [row[0] for row in owner.execute(
        "insert into public.tenants (name, slug) select 'Writer ' || i, 'writer-' || i from generate_series(0, %s) as i"
        " returning id", (count,))]  # fmt: skip
    with owner.cursor() as cur:
        cur.executemany(
            "insert into public.tenant_members (tenant_id, user_id) values (%s, %s)",
            [(tenant, user) for tenant, user in zip(tenants, users, strict=False)]
            + [(tenants[-1], user) for user in users],
        )
    return users, tenants


def contention(url: str, owner: psycopg.Connection[Any], writers: int, seconds: float, rounds: int) -> dict[str, float]:
    """Direct writers into one tenant and spread over `writers` tenants, with and without the rollup trigger.

    The four sides take turns for `rounds` rounds (`seconds` per side in all), so load from
    elsewhere on the machine falls on every side alike.
    """
    users, tenants = add_writers(owner, writers)
    sides = {
        "single_tenant": [(tenants[-1], user) for user in users],
        "spread": list(zip(tenants, users, strict=False)),
    }
    events: dict[str, float] = defaultdict(float)
    elapsed: dict[str, float] = defaultdict(float)
    for _ in range(rounds):
        for rollups in (True, False):
            toggle = "enable" if rollups else "disable"
            owner.execute(
                pgsql.SQL("alter table public.usage_events {} trigger {}").format(
                    pgsql.SQL(toggle), pgsql.Identifier(ROLLUP_TRIGGER)
                )
            )
            for side, pairs in sides.items():
                empty_table(owner)
                key = side if rollups else f"{side}_raw"
                written, took = direct_writers(url, pairs, seconds / rounds)
                events[key] += written
                elapsed[key] += took
    return {key: events[key] / elapsed[key] for key in events}


def hard_budgets(tenant: uuid.UUID) -> list[budgets.BudgetSpec]:
    """Three hard budgets a tenant might have, with limits no bench run reaches (a refusal would end the run)."""
    return [
        budgets.BudgetSpec(tenant_id=tenant, metric="events", limit=NEVER_REACHED, period="month", mode="hard"),
        budgets.BudgetSpec(tenant_id=tenant, metric="tokens", limit=NEVER_REACHED, period="day", mode="hard"),
        budgets.BudgetSpec(
            tenant_id=tenant, metric="cost", limit=NEVER_REACHED, currency="USD", period="month", mode="hard"
        ),
    ]


def budget_totals(owner: psycopg.Connection[Any], tenant: uuid.UUID) -> dict[str, Decimal]:
    """What each of the tenant's budgets has counted, over all its windows (proof the triggers did the work)."""
    return {metric: used for metric, used in owner.execute(BUDGET_TOTALS, (tenant,))}


def budget_overhead(
    owner: psycopg.Connection[Any], paths: dict[str, tuple[int, Callable[[], float]]], tenant: uuid.UUID, rounds: int
) -> dict[str, float]:
    """Rows/s of each path with the tenant's three hard budgets (key `<path>_budgets`) and with none (`<path>_none`).

    The sides take turns, starting with each in alternate rounds, so load from elsewhere on the
    machine falls on both alike. "None" means no budget in the database at all, the state every
    deployment starts in: the triggers return at their first check, so the ratio is the full
    price of enforcement. Each budgeted side is checked to have counted every event it wrote.
    """
    rows: dict[str, float] = defaultdict(float)
    elapsed: dict[str, float] = defaultdict(float)
    for turn in range(rounds):
        for with_budgets in (True, False) if turn % 2 == 0 else (False, True):
            empty_table(owner)  # a budget starts from the usage stored in its window: none
            ids = [budgets.set_budget(owner, spec).id for spec in hard_budgets(tenant)] if with_budgets else []
            for path, (expected, run) in paths.items():
                empty_table(owner)
                rate = run()
                stored = count(owner)
                assert stored == expected, f"{path} stored {stored} rows, expected {expected}"
                key = f"{path}_{'budgets' if with_budgets else 'none'}"
                rows[key] += expected
                elapsed[key] += expected / rate
            if with_budgets:
                totals = budget_totals(owner, tenant)
                written = sum(expected for expected, _ in paths.values())
                assert totals["events"] == written, f"the events budget counted {totals['events']}, not {written}"
                assert totals["tokens"] > 0, f"the tokens budget counted nothing: {totals}"
                assert totals["cost"] > 0, f"the cost budget counted nothing (no price applied?): {totals}"
            for budget_id in ids:
                budgets.delete_budget(owner, budget_id)
    return {key: rows[key] / elapsed[key] for key in rows}


def count(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("select count(*) from public.usage_events").fetchone()
    return int(row[0]) if row else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000, help="rows for COPY, batches and enqueue")
    parser.add_argument("--naive-rows", type=int, default=2_000)
    parser.add_argument("--group-rows", type=int, default=19_200)
    parser.add_argument("--writers", type=int, default=32, help="direct writers for single_tenant_vs_spread")
    parser.add_argument("--contention-seconds", type=float, default=8.0, help="duration of each direct-writer side")
    parser.add_argument("--contention-rounds", type=int, default=4, help="turns the direct-writer sides take")
    parser.add_argument("--budget-rounds", type=int, default=2, help="turns of the with/without budgets sides")
    parser.add_argument("--json", action="store_true", help="print only the JSON summary")
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    console = Console(stderr=True, quiet=args.json)
    results: dict[str, float] = {}

    with (
        harness.server(args.database_url) as server_url,
        harness.scratch_database(server_url) as url,
        db.connect(url, autocommit=True) as owner,
    ):
        description = harness.server_description(owner)
        tenant = owner.execute(
            "insert into public.tenants (name, slug) values ('Bench', 'bench') returning id"
        ).fetchone()
        user = owner.execute("insert into auth.users (id) values (gen_random_uuid()) returning id").fetchone()
        assert tenant is not None
        assert user is not None
        tenant_id, user_id = tenant[0], user[0]
        owner.execute("insert into public.tenant_members (tenant_id, user_id) values (%s, %s)", (tenant_id, user_id))
        spool_dir = Path(tempfile.mkdtemp(prefix="usagemeter-bench-spool-"))
        with Recorder(harness.app_url(url), enqueue_options=EnqueueOptions(spool_dir=spool_dir)) as recorder:
            me = recorder.as_user(user_id)
            phases: list[tuple[str, int, Callable[[], float]]] = [
                ("copy", args.rows, lambda: copy_rows(owner, tenant_id, user_id, args.rows)),
                ("naive", args.naive_rows, lambda: naive_inserts(url, tenant_id, user_id, args.naive_rows)),
                ("batch", args.rows, lambda: batches_as_user(me, tenant_id, args.rows)),
                ("group_commit", args.group_rows, lambda: group_commit(me, tenant_id, args.group_rows)),
                (
                    "async_group_commit",
                    args.group_rows // 256 * 256 + 1,  # and the warm-up
                    lambda: async_group_commit(harness.app_url(url), user_id, tenant_id, args.group_rows),
                ),
            ]
            for name, expected, run in phases:
                empty_table(owner)
                console.print(f"{name}: {expected:,} rows")
                results[name] = run()
                assert count(owner) == expected, f"{name} stored {count(owner)} rows, expected {expected}"
            empty_table(owner)
            console.print(f"enqueue: {args.rows:,} rows")
            results["enqueue"], results["enqueue_us"] = enqueue(recorder, tenant_id, user_id, args.rows)
            assert count(owner) == args.rows
            owner.execute(PRICE_INSERT, (METADATA["model"],))
            console.print(f"budgets: batch {args.rows:,} rows and 32 threads {args.group_rows:,} rows, 3 hard or none")
            budget_paths: dict[str, tuple[int, Callable[[], float]]] = {
                "batch": (args.rows, lambda: batches_as_user(me, tenant_id, args.rows)),
                "single": (args.group_rows, lambda: group_commit(me, tenant_id, args.group_rows)),
            }
            results.update(budget_overhead(owner, budget_paths, tenant_id, args.budget_rounds))
        console.print(f"direct writers: {args.writers} connections, {args.contention_seconds:g} s per side")
        results.update(contention(url, owner, args.writers, args.contention_seconds, args.contention_rounds))

    table = Table(title=f"Ingest ({description})", title_justify="left")
    for column in ("path", "rows/s", "vs COPY", "vs naive"):
        table.add_column(column, justify="right" if column != "path" else "left")
    labels = {
        "copy": "(a) COPY as owner",
        "naive": "(b) INSERT + commit per event",
        "batch": "(c) record_many x1000 as user (RLS)",
        "group_commit": "(d) 32 threads record(), group commit",
        "async_group_commit": "(d') 256 tasks AsyncRecorder.record()",
        "enqueue": "(e) enqueue until flushed",
    }
    for key, label in labels.items():
        rate = results[key]
        table.add_row(label, f"{rate:,.0f}", f"{rate / results['copy']:.2f}x", f"{rate / results['naive']:.1f}x")
    console.print(table)
    console.print(f"enqueue caller cost: {results['enqueue_us']:.1f} µs per call")
    direct = Table(title=f"(f) {args.writers} direct writers, one event per commit", title_justify="left")
    for column in ("tenants", "rows/s with rollups", "rows/s raw limit (no rollup trigger)", "vs raw"):
        direct.add_column(column, justify="right" if column != "tenants" else "left")
    for side, label in (("single_tenant", "one tenant"), ("spread", f"{args.writers} tenants")):
        rate, raw = results[side], results[f"{side}_raw"]
        direct.add_row(label, f"{rate:,.0f}", f"{raw:,.0f}", f"{rate / raw:.2f}x")
    console.print(direct)
    console.print(
        f"single_tenant_vs_spread: {results['single_tenant'] / results['spread']:.2f}"
        f" (raw limit: {results['single_tenant_raw'] / results['spread_raw']:.2f})"
    )
    budget_table = Table(title="(g) three hard budgets on the tenant against none", title_justify="left")
    for column in ("path", "rows/s with budgets", "rows/s without", "with / without"):
        budget_table.add_column(column, justify="right" if column != "path" else "left")
    paths = {"batch": "record_many x1000 as user", "single": "32 threads record(), group commit"}
    for path, label in paths.items():
        rate, none = results[f"{path}_budgets"], results[f"{path}_none"]
        budget_table.add_row(label, f"{rate:,.0f}", f"{none:,.0f}", f"{rate / none:.2f}x")
    console.print(budget_table)
    for path in paths:
        ratio = results[f"{path}_budgets"] / results[f"{path}_none"]
        verdict = "met" if ratio >= BUDGET_TARGET else "missed"
        console.print(f"{path}_budgets_vs_none: {ratio:.2f} (target ≥ {BUDGET_TARGET}: {verdict})")
    harness.print_summary(
        {
            "server": description,
            "rows": args.rows,
            "copy_rows_per_s": round(results["copy"]),
            "naive_rows_per_s": round(results["naive"]),
            "batch_rows_per_s": round(results["batch"]),
            "group_commit_rows_per_s": round(results["group_commit"]),
            "enqueue_rows_per_s": round(results["enqueue"]),
            "batch_vs_copy": round(results["batch"] / results["copy"], 3),
            "group_commit_vs_naive": round(results["group_commit"] / results["naive"], 2),
            "async_group_commit_rows_per_s": round(results["async_group_commit"]),
            "async_group_commit_vs_naive": round(results["async_group_commit"] / results["naive"], 2),
            "enqueue_us_per_call": round(results["enqueue_us"], 2),
            "single_tenant_rows_per_s": round(results["single_tenant"]),
            "spread_rows_per_s": round(results["spread"]),
            "single_tenant_raw_rows_per_s": round(results["single_tenant_raw"]),
            "spread_raw_rows_per_s": round(results["spread_raw"]),
            "single_tenant_vs_spread": round(results["single_tenant"] / results["spread"], 3),
            "single_tenant_vs_spread_raw": round(results["single_tenant_raw"] / results["spread_raw"], 3),
            "batch_budgets_rows_per_s": round(results["batch_budgets"]),
            "batch_no_budgets_rows_per_s": round(results["batch_none"]),
            "single_budgets_rows_per_s": round(results["single_budgets"]),
            "single_no_budgets_rows_per_s": round(results["single_none"]),
            "batch_budgets_vs_none": round(results["batch_budgets"] / results["batch_none"], 3),
            "single_budgets_vs_none": round(results["single_budgets"] / results["single_none"], 3),
        }
    )


if __name__ == "__main__":
    main()
