"""The rollups on the cluster: distributed with the ledger by owner, summaries equal to one node's and to the raw
events, one shard per one-tenant summary, tenant deletion, RLS, and the fold (docs/distributed.md, "Rollups")."""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from tests import factories
from tests.citus.conftest import DistributedDatabase
from usagemeter import Recorder, db
from usagemeter.billing import corrections
from usagemeter.db import Identity, acting_as
from usagemeter.reporting import rollup_check, summaries

ROLLUPS = ("usage_rollup_hourly", "usage_rollup_daily", "usage_rollup_tenant_daily", "usage_rollup_deltas")
START = datetime(2026, 12, 1, tzinfo=UTC)
END = datetime(2026, 12, 5, tzinfo=UTC)


@dataclass(frozen=True)
class World:
    """One tenant (Alice and Bob members), Carol's Personal usage, and the events of each, same ids on both sides."""

    tenant: uuid.UUID
    alice: uuid.UUID
    bob: uuid.UUID
    carol: uuid.UUID
    voided: uuid.UUID
    amended: uuid.UUID


def _arrange(conn: psycopg.Connection[Any], world: World | None, *, distributed: bool) -> World:
    """The same tenant, users and events (ids and times included) on either database."""
    if world is None:
        world = World(*(uuid.uuid4() for _ in range(6)))
    for person in (world.alice, world.bob, world.carol):
        factories.add_user(conn, person)
    slug = f"t-{world.tenant.hex[:12]}"
    conn.execute("insert into public.tenants (id, name, slug) values (%s, %s, %s)", (world.tenant, slug, slug))
    factories.add_member(conn, world.tenant, world.alice)
    factories.add_member(conn, world.tenant, world.bob)
    rows = []
    for n in range(60):
        # a quarter Carol's Personal events, the rest the tenant's: Alice's, Bob's and system events (no user)
        tenant: uuid.UUID | None = world.tenant if n % 4 else None
        user: uuid.UUID | None = (world.alice, world.bob, None)[n % 3] if n % 4 else world.carol
        action = ("agency:scope:generate", "chat:message:send")[n % 2]
        created = START + timedelta(minutes=97 * n + 13)  # hours and days apart, partial hours at the edges
        event_id = world.voided if n == 7 else world.amended if n == 9 else uuid.uuid4()
        model = json.dumps({"model": ("gpt", "claude", "")[n % 5 % 3]})  # model comes from the metadata
        rows.append((event_id, tenant or user, tenant, user, action, model, n, 2 * n, created))
    insert = (
        "insert into public.usage_events (id, owner_id, tenant_id, user_id, action, metadata, tokens_input,"
        " tokens_output, created_at) values (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
        if distributed
        else "insert into public.usage_events (id, tenant_id, user_id, action, metadata, tokens_input,"
        " tokens_output, created_at) values (%s, %s, %s, %s, %s, %s, %s, %s)"
    )
    with conn.cursor() as cur:
        cur.executemany(insert, [row if distributed else (row[0], *row[2:]) for row in rows])
    corrections.void(conn, event_id=world.voided, reason="duplicate")
    corrections.amend(conn, event_id=world.amended, tokens_input=1, tokens_output=1, reason="recount")
    return world


def _queries(world: World) -> list[summaries.SummaryQuery]:
    """Tenant, Personal and everything-visible summaries, grouped and bucketed every way the rollups serve."""
    start, end = START + timedelta(minutes=20), END - timedelta(minutes=5)
    common: dict[str, Any] = {"start": start, "end": end}
    tenant: dict[str, Any] = {"scope": "tenant", "tenant_id": world.tenant, **common}
    return [
        summaries.SummaryQuery(**tenant),
        summaries.SummaryQuery(**tenant, group_by=("action", "model")),
        summaries.SummaryQuery(**tenant, group_by=("user",), bucket="hour"),
        summaries.SummaryQuery(**tenant, group_by=("module",), bucket="day"),
        summaries.SummaryQuery(**tenant, bucket="day", tz="Europe/Paris"),
        summaries.SummaryQuery(scope="user", user_id=world.carol, group_by=("action",), bucket="day", **common),
        summaries.SummaryQuery(scope="user", user_id=world.carol, **common),
        summaries.SummaryQuery(scope="all", group_by=("user", "model"), **common),
    ]


def _results(conn: psycopg.Connection[Any], world: World, *, raw: bool = False) -> list[list[dict[str, Any]]]:
    """Every query's rows, as Alice (member) or, for Carol's, as Carol; `raw` reads raw events only."""
    out = []
    for query in _queries(world):
        if raw:  # a metadata filter every event matches: the raw source
            query = query.model_copy(update={"metadata": {}})
        who = world.carol if query.scope == "user" else world.alice
        out.append([row.as_dict() for row in summaries.summarize(conn, Identity.user(who), query)])
    return out


@pytest.fixture
def worlds(distributed: DistributedDatabase, database_url: str) -> tuple[World, str]:
    """The same world on the cluster and on one node (the `database_url` of the single-node tier)."""
    with db.connect(distributed.url, autocommit=True) as cluster:
        world = _arrange(cluster, None, distributed=True)
    with db.connect(database_url, autocommit=True) as node:
        _arrange(node, world, distributed=False)
    return world, database_url


def test_rollups_are_distributed_with_the_ledger(distributed: DistributedDatabase) -> None:
    with db.connect(distributed.url, autocommit=True) as conn:
        layout = dict(
            conn.execute(
                "select logicalrelid::regclass::text, column_to_column_name(logicalrelid, partkey) || ' '"
                " || (colocationid = (select colocationid from pg_dist_partition"
                "                    where logicalrelid = 'public.usage_events'::regclass))::text"
                " from pg_dist_partition where logicalrelid::regclass::text like 'usage_rollup%%'"
            ).fetchall()
        )
    assert layout == dict.fromkeys(ROLLUPS, "owner_id true")


def test_summaries_equal_one_node_and_the_raw_events(
    distributed: DistributedDatabase, worlds: tuple[World, str]
) -> None:
    world, node_url = worlds
    with db.connect(distributed.url, autocommit=True) as cluster, db.connect(node_url, autocommit=True) as node:
        unfolded = _results(cluster, world)
        assert unfolded == _results(node, world)
        assert unfolded == _results(cluster, world, raw=True)
        assert unfolded[0][0]["events"] == 44  # 45 tenant events, one voided
        assert rollup_check.fold(cluster) is not None
        rollup_check.fold(node)
        assert _results(cluster, world) == unfolded
        assert _results(node, world) == unfolded
        folded_rows = cluster.execute(
            "select count(*) from public.usage_rollup_hourly where owner_id = %s", (world.tenant,)
        ).fetchone()
        pending = cluster.execute(
            "select count(*) from public.usage_rollup_deltas where owner_id in (%s, %s)", (world.tenant, world.carol)
        ).fetchone()
        differences = rollup_check.differences(cluster)
    assert folded_rows is not None
    assert folded_rows[0] > 0
    assert pending == (0,)
    assert differences == 0


def test_a_one_tenant_summary_is_one_task_on_one_shard(distributed: DistributedDatabase) -> None:
    with db.connect(distributed.url, autocommit=True) as conn:
        world = _arrange(conn, None, distributed=True)
        query = summaries.SummaryQuery(
            scope="tenant", tenant_id=world.tenant, start=START, end=END, group_by=("action",), bucket="day"
        )
        plans, timings = {}, {}
        for routed in (True, False):
            statement, params = summaries.summary_statement(query, routed=routed)
            # the plan as the member under RLS; over every shard as the owner (Citus's EXPLAIN of a query in
            # distributed subplans fails as a request role, while the query itself runs)
            with acting_as(conn, Identity.user(world.alice)) if routed else contextlib.nullcontext():
                plans[routed] = "\n".join(r[0] for r in conn.execute(psycopg.sql.SQL("explain ") + statement, params))
            with acting_as(conn, Identity.user(world.alice)):
                rows = conn.execute(statement, params).fetchall()
                started = time.perf_counter()
                for _ in range(5):
                    assert conn.execute(statement, params).fetchall() == rows
                timings[routed] = (time.perf_counter() - started) / 5 * 1000
            assert len(rows) == 2 * 4  # two actions, four days
    print(f"one-tenant summary: {timings[True]:.1f} ms routed, {timings[False]:.1f} ms over every shard")
    task_counts = re.findall(r"Task Count: (\d+)", plans[True])
    assert task_counts == ["1"], plans[True]  # one task, on the tenant's shard
    assert "Subplan" not in plans[True], plans[True]
    assert "Task Count: 32" in plans[False], plans[False]  # every shard of the rollups and deltas


def test_members_read_only_their_tenants_rollups(distributed: DistributedDatabase) -> None:
    with db.connect(distributed.url, autocommit=True) as owner:
        world = _arrange(owner, None, distributed=True)
        rollup_check.fold(owner)
        outsider = factories.add_user(owner)
        other = factories.add_tenant(owner)
        factories.add_member(owner, other, outsider)
    with db.connect(distributed.app_url, autocommit=True) as conn:
        counts = {}
        for who in (world.alice, world.carol, outsider):
            with acting_as(conn, Identity.user(who)):
                counts[who] = [
                    conn.execute(
                        psycopg.sql.SQL("select count(*) from public.{} where owner_id in (%s, %s)").format(
                            psycopg.sql.Identifier(table)
                        ),
                        (world.tenant, world.carol),
                    ).fetchone()
                    for table in ROLLUPS[:3]
                ]
        tenant_summary = summaries.SummaryQuery(scope="tenant", tenant_id=world.tenant, start=START, end=END)
        seen_by_outsider = summaries.summarize(conn, Identity.user(outsider), tenant_summary)
        with pytest.raises(psycopg.errors.InsufficientPrivilege), acting_as(conn, Identity.anon()):
            conn.execute("select count(*) from public.usage_rollup_daily")
    assert all(c is not None and c[0] > 0 for c in counts[world.alice])
    assert all(c is not None and c[0] > 0 for c in counts[world.carol][:2])  # Personal rows; no tenant-wide ones
    assert counts[outsider] == [(0,), (0,), (0,)]
    assert [row.events for row in seen_by_outsider] == [0]  # the totals of nothing


def test_deleting_a_tenant_deletes_its_rollups(distributed: DistributedDatabase) -> None:
    with db.connect(distributed.url, autocommit=True) as conn:
        world = _arrange(conn, None, distributed=True)
        rollup_check.fold(conn)
        conn.execute(
            "insert into public.usage_events (owner_id, tenant_id, user_id, action, tokens_input)"
            " values (%s, %s, %s, 'agency:scope:generate', 3)",
            (world.tenant, world.tenant, world.alice),
        )  # a delta not folded yet
        conn.execute("delete from public.tenants where id = %s", (world.tenant,))
        left = [
            conn.execute(
                psycopg.sql.SQL("select count(*) from public.{} where owner_id = %s").format(psycopg.sql.Identifier(t)),
                (world.tenant,),
            ).fetchone()
            for t in ROLLUPS
        ]
        personal = conn.execute(
            "select count(*) from public.usage_rollup_hourly where owner_id = %s", (world.carol,)
        ).fetchone()
    assert left == [(0,)] * 4
    assert personal is not None
    assert personal[0] > 0


def test_the_fold_is_idempotent_and_one_at_a_time(distributed: DistributedDatabase) -> None:
    with db.connect(distributed.url, autocommit=True) as conn:
        world = _arrange(conn, None, distributed=True)
        before = _results(conn, world)
        with db.connect(distributed.url) as holder:  # a fold in progress, holding its lock
            assert holder.execute(report_sql_fold()).fetchone() is not None
            assert rollup_check.fold(conn) is None
            holder.rollback()
        results: list[int | None] = []

        def fold() -> None:
            with db.connect(distributed.url, autocommit=True) as c:
                results.append(rollup_check.fold(c))

        threads = [threading.Thread(target=fold) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert rollup_check.fold(conn) == 0
        after = _results(conn, world)
        pending = conn.execute(
            "select count(*) from public.usage_rollup_deltas where owner_id in (%s, %s)", (world.tenant, world.carol)
        ).fetchone()
    assert len(results) == 4
    assert any(r for r in results)  # one of them folded what the others then found done
    assert after == before
    assert pending == (0,)


def report_sql_fold() -> str:
    """The fold's query text (rollup_check's), to run it in a transaction left open."""
    return str(rollup_check.queries["fold_rollups"])


def test_recorded_events_count_at_once_and_maintain_folds_them(distributed: DistributedDatabase) -> None:
    with db.connect(distributed.url, autocommit=True) as owner:
        world = _arrange(owner, None, distributed=True)
    today = summaries.SummaryQuery(
        scope="tenant", tenant_id=world.tenant, start=datetime.now(UTC) - timedelta(hours=1),
        end=datetime.now(UTC) + timedelta(hours=1), group_by=("user",),
    )  # fmt: skip
    with Recorder(distributed.app_url) as recorder:
        recorder.as_user(world.alice).record_many(
            [{"user_id": None, "action": "agency:scope:generate", "tenant_id": world.tenant, "tokens_input": n}
             for n in range(1, 6)]
        )  # fmt: skip
    with db.connect(distributed.app_url, autocommit=True) as conn:
        recorded = summaries.summarize(conn, Identity.user(world.bob), today)
    done = subprocess.run(
        [sys.executable, "-m", "usagemeter", "maintain", "--database-url", distributed.url],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    with db.connect(distributed.url, autocommit=True) as owner:
        pending = owner.execute(
            "select count(*) from public.usage_rollup_deltas where owner_id = %s", (world.tenant,)
        ).fetchone()
        folded = summaries.summarize(owner, Identity.user(world.bob), today)
    assert [(r.keys["user_id"], r.events, r.tokens_input) for r in recorded] == [(world.alice, 5, 15)]
    assert done.returncode == 0, done.stderr
    assert "folded" in done.stdout
    assert pending == (0,)
    assert folded == recorded


def test_a_rebuild_recomputes_the_rollups_on_the_shards(distributed: DistributedDatabase) -> None:
    with db.connect(distributed.url, autocommit=True) as conn:
        world = _arrange(conn, None, distributed=True)
        before = _results(conn, world)
        rollup_check.fold(conn)
        conn.execute("delete from public.usage_rollup_hourly where owner_id = %s", (world.tenant,))  # damage
        broken = rollup_check.differences(conn)
        written = rollup_check.rebuild(conn)
        after = _results(conn, world)
        differences = rollup_check.differences(conn)
        pending = conn.execute("select count(*) from public.usage_rollup_deltas").fetchone()
    assert broken > 0
    assert written > 0
    assert after == before
    assert differences == 0
    assert pending == (0,)


def test_deleting_users_keeps_summaries_exact_and_a_fold_forgets_them(distributed: DistributedDatabase) -> None:
    with db.connect(distributed.url, autocommit=True) as conn:
        world = _arrange(conn, None, distributed=True)
        rollup_check.fold(conn)
        conn.execute("delete from auth.users where id in (%s, %s)", (world.bob, world.carol))
        tenant_total = summaries.SummaryQuery(scope="tenant", tenant_id=world.tenant, start=START, end=END)
        by_user = tenant_total.model_copy(update={"group_by": ("user",)})
        as_alice = Identity.user(world.alice)
        exact = [summaries.summarize(conn, as_alice, q) for q in (tenant_total, by_user)]
        raw = [
            summaries.summarize(conn, as_alice, q.model_copy(update={"metadata": {}})) for q in (tenant_total, by_user)
        ]
        rollup_check.fold(conn)
        kept = [
            conn.execute(
                psycopg.sql.SQL("select count(*) from public.{} where user_id in (%s, %s) or owner_id = %s").format(
                    psycopg.sql.Identifier(table)
                ),
                (world.bob, world.carol, world.carol),
            ).fetchone()
            for table in ("usage_rollup_hourly", "usage_rollup_daily", "usage_rollup_deltas")
        ]
        differences = rollup_check.differences(conn)
    assert exact == raw
    assert {row.keys["user_id"] for row in exact[1]} == {world.alice, None}  # Bob's events are the tenant's now
    assert exact[0][0].events == 44  # none of the tenant's events went with Bob
    assert kept == [(0,), (0,), (0,)]
    assert differences == 0
