"""The rollups plus their deltas stay equal to the raw events through any writes and folds, without deadlocks."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import errors as pgerrors
from psycopg import sql

from tests import factories
from usagemeter import db
from usagemeter.db import Identity, acting_as
from usagemeter.recording.recorder import Recorder
from usagemeter.reporting import filters, rollup_check, summaries

T0 = datetime(2026, 6, 1, tzinfo=UTC)

operations = st.lists(
    st.one_of(
        st.tuples(st.just("insert"), st.integers(0, 1), st.integers(0, 2000), st.integers(0, 72 * 60)),
        st.tuples(st.just("update"), st.integers(0, 1), st.integers(0, 50), st.integers(0, 72 * 60)),
        st.tuples(st.just("delete"), st.integers(0, 1), st.integers(0, 3), st.integers(0, 72 * 60)),
        st.tuples(st.just("delete_tenant"), st.integers(0, 1), st.just(0), st.just(0)),
        st.tuples(st.just("fold"), st.just(0), st.just(0), st.just(0)),
    ),
    max_size=25,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=operations)
def test_rollup_equals_raw_events_after_any_writes(owner: psycopg.Connection[Any], ops: list[Any]) -> None:
    with owner.transaction(force_rollback=True):
        tenants = [factories.add_tenant(owner), factories.add_tenant(owner)]
        user = factories.add_user(owner)
        for op, tenant_index, amount, minutes in ops:
            tenant = tenants[tenant_index]
            at = T0 + timedelta(minutes=minutes)  # late events too: any time in three days
            if op == "insert":
                owner.execute(
                    "insert into public.usage_events (tenant_id, user_id, action, tokens_input, created_at)"
                    " select %s, %s, 'agency:scope:generate', %s, %s from generate_series(1, 3)",
                    (tenant, user, amount, at),
                )
            elif op == "update":
                owner.execute(
                    "update public.usage_events set tokens_input = tokens_input + %s, created_at = %s"
                    " where tenant_id = %s and ctid in (select ctid from public.usage_events limit 2)",
                    (amount, at, tenant),
                )
            elif op == "delete":
                owner.execute(
                    "delete from public.usage_events where ctid in"
                    " (select ctid from public.usage_events where tenant_id = %s limit %s)",
                    (tenant, amount),
                )
            elif op == "delete_tenant":
                owner.execute("delete from public.tenants where id = %s", (tenant,))
                tenants[tenant_index] = factories.add_tenant(owner)
            else:
                assert rollup_check.fold(owner) is not None
            assert rollup_check.differences(owner) == 0  # exact after every statement, folded or not
        rollup_check.fold(owner)
        assert rollup_check.differences(owner) == 0
        assert count_rows(owner, "usage_rollup_deltas") == 0
        for table in ROLLUP_TABLES[1:]:  # a fold leaves no group without events behind
            assert owner.execute(sql.SQL("select count(*) from {} where events = 0").format(table)).fetchone() == (0,)


ROLLUP_TABLES = [
    sql.Identifier("public", name)
    for name in ("usage_rollup_deltas", "usage_rollup_hourly", "usage_rollup_daily", "usage_rollup_tenant_daily")
]


def count_rows(conn: psycopg.Connection[Any], table: str) -> int:
    row = conn.execute(sql.SQL("select count(*) from {}").format(sql.Identifier("public", table))).fetchone()
    assert row is not None
    return int(row[0])


def test_rollup_rows_follow_the_same_visibility(owner: psycopg.Connection[Any]) -> None:
    tenant_a, tenant_b = factories.add_tenant(owner), factories.add_tenant(owner)
    alice, bob = factories.add_user(owner), factories.add_user(owner)
    factories.add_member(owner, tenant_a, alice)
    factories.add_event(owner, tenant_id=tenant_a, user_id=alice)
    factories.add_event(owner, tenant_id=tenant_b, user_id=bob)
    factories.add_event(owner, tenant_id=None, user_id=bob)
    for table in ("usage_rollup_deltas", "usage_rollup_hourly"):  # before and after the fold
        with acting_as(owner, Identity.user(alice)):
            seen = owner.execute(sql.SQL("select tenant_id, user_id from {}").format(sql.Identifier(table))).fetchall()
        assert seen == [(tenant_a, alice)]
        with pytest.raises(pgerrors.InsufficientPrivilege), acting_as(owner, Identity.user(alice)):
            owner.execute(sql.SQL("update {} set events = 0").format(sql.Identifier(table)))
        with pytest.raises(pgerrors.InsufficientPrivilege), acting_as(owner, Identity.anon()):
            owner.execute(sql.SQL("select * from {}").format(sql.Identifier(table)))
        assert rollup_check.fold(owner) is not None
    with pytest.raises(pgerrors.InsufficientPrivilege), acting_as(owner, Identity.user(alice)):
        owner.execute("select usagemeter_private.fold_usage_rollups_v1()")


def test_summaries_use_the_rollup_and_add_partial_hours_from_raw_events(
    app_database_url: str, owner: psycopg.Connection[Any]
) -> None:
    tenant, alice = factories.add_tenant(owner), factories.add_user(owner)
    factories.add_member(owner, tenant, alice)
    with Recorder(app_database_url) as recorder:  # late events, as a backfill would write them
        recorder.record_many(
            [
                {
                    "action": "agency:scope:generate",
                    "tenant_id": tenant,
                    "user_id": alice,
                    "tokens_input": 10 * i,
                    "created_at": T0 + timedelta(minutes=17 * i),
                }
                for i in range(200)
            ]
        )
    start, end = T0 + timedelta(minutes=20), T0 + timedelta(hours=30, minutes=40)  # partial first and last hours
    query = summaries.SummaryQuery(
        scope="tenant", tenant_id=tenant, start=start, end=end, bucket="day", tz="Europe/Paris"
    )
    assert summaries.summary_source(query) == "hourly"  # Paris days are not UTC days
    raw_query = query.model_copy(update={"metadata": {}})  # a metadata filter forces raw events ({} matches all)
    assert summaries.summary_source(raw_query) == "raw"
    identity = Identity.user(alice)
    from_rollup = summaries.summarize(owner, identity, query)
    assert from_rollup == summaries.summarize(owner, identity, raw_query)
    expected = owner.execute(
        "select count(*), sum(tokens_input) from public.usage_events where created_at >= %s and created_at < %s",
        (start, end),
    ).fetchone()
    assert (sum(r.events for r in from_rollup), sum(r.tokens_input for r in from_rollup)) == expected


@pytest.mark.parametrize(
    ("bucket", "tz", "source"),
    [
        ("day", "Asia/Kolkata", "raw"),  # +05:30: its days are not made of whole UTC hours
        (None, "Asia/Kolkata", "daily"),  # without buckets the zone does not matter
        ("day", "UTC", "daily"),
        ("month", "UTC", "daily"),
        ("hour", "UTC", "hourly"),
        ("day", "Europe/London", "hourly"),  # +01:00 in summer
    ],
)
def test_the_coarsest_exact_source_is_chosen(bucket: summaries.Bucket | None, tz: str, source: str) -> None:
    query = summaries.SummaryQuery(
        scope="all", start=T0 + timedelta(minutes=30), end=T0 + timedelta(days=3, minutes=30), bucket=bucket, tz=tz
    )
    assert summaries.summary_source(query) == source


@pytest.mark.parametrize("scope", ["all", "tenant"])
@pytest.mark.parametrize("bucket", [None, "day", "week"])
def test_daily_rollup_summaries_equal_raw_ones(
    app_database_url: str, owner: psycopg.Connection[Any], bucket: summaries.Bucket | None, scope: filters.Scope
) -> None:
    tenant, alice = factories.add_tenant(owner), factories.add_user(owner)
    factories.add_member(owner, tenant, alice)
    with Recorder(app_database_url) as recorder:
        recorder.record_many(
            [
                {
                    "action": ["agency:scope:generate", "chat:message:send"][i % 2],
                    "tenant_id": tenant if i % 5 else None,
                    "user_id": alice,
                    "tokens_input": i,
                    "created_at": T0 + timedelta(minutes=97 * i),
                }
                for i in range(300)
            ]
        )
    start, end = T0 + timedelta(hours=5, minutes=10), T0 + timedelta(days=19, hours=7, minutes=45)
    query = summaries.SummaryQuery(
        scope=scope, tenant_id=tenant, start=start, end=end, bucket=bucket, group_by=("action",), tz="UTC"
    )
    assert summaries.summary_source(query) == "daily"
    tenant_wide = "tenant_days" in summaries.source_plan(query).parts
    assert tenant_wide is (scope == "tenant")  # one tenant, users not distinguished: the smallest table
    raw_query = query.model_copy(update={"metadata": {}})
    identity = Identity.user(alice)
    assert summaries.summarize(owner, identity, query) == summaries.summarize(owner, identity, raw_query)


def test_rebuild_repairs_a_rollup_made_wrong(owner: psycopg.Connection[Any]) -> None:
    user = factories.add_user(owner)
    factories.add_event(owner, tenant_id=None, user_id=user)
    assert rollup_check.fold(owner) == 1
    owner.execute("update public.usage_rollup_hourly set events = events + 5")
    assert rollup_check.differences(owner) == 1
    assert rollup_check.rebuild(owner) == 1
    assert rollup_check.differences(owner) == 0


def test_a_fold_keeps_summaries_exact_and_drops_groups_without_events(owner: psycopg.Connection[Any]) -> None:
    tenant, alice = factories.add_tenant(owner), factories.add_user(owner)
    factories.add_member(owner, tenant, alice)
    factories.add_event(owner, tenant_id=tenant, user_id=alice, tokens_input=7)
    gone = factories.add_event(owner, tenant_id=tenant, user_id=alice, action="chat:message:send")
    query = summaries.SummaryQuery(scope="tenant", tenant_id=tenant, start=T0, end=T0 + timedelta(days=3650))
    before = summaries.summarize(owner, Identity.user(alice), query)
    assert rollup_check.fold(owner) == 2
    assert count_rows(owner, "usage_rollup_deltas") == 0
    assert summaries.summarize(owner, Identity.user(alice), query) == before
    owner.execute("delete from public.usage_events where id = %s", (gone,))
    assert rollup_check.fold(owner) == 1
    for table in ("usage_rollup_hourly", "usage_rollup_daily", "usage_rollup_tenant_daily"):
        actions = owner.execute(sql.SQL("select action from {}").format(sql.Identifier("public", table))).fetchall()
        assert actions == [("agency:scope:generate",)], table  # the emptied chat group is gone
    assert rollup_check.differences(owner) == 0


def test_deleting_a_tenant_leaves_nothing_of_it(owner: psycopg.Connection[Any]) -> None:
    doomed, other = factories.add_tenant(owner), factories.add_tenant(owner)
    alice = factories.add_user(owner)
    for tenant in (doomed, other):
        factories.add_event(owner, tenant_id=tenant, user_id=alice)
    rollup_check.fold(owner)  # folded rows ...
    for tenant in (doomed, other):
        factories.add_event(owner, tenant_id=tenant, user_id=alice, action="chat:message:send")  # ... and deltas
    owner.execute("delete from public.tenants where id = %s", (doomed,))
    for table in ROLLUP_TABLES:
        mentions = owner.execute(
            sql.SQL("select count(*) from {} as r where strpos(r::text, %s) > 0").format(table), (str(doomed),)
        ).fetchone()
        assert mentions == (0,), table
    rollup_check.fold(owner)
    assert count_rows(owner, "usage_rollup_tenant_daily") == 2  # the other tenant's two actions remain
    assert rollup_check.differences(owner) == 0


def test_writes_succeed_with_every_table_in_a_publication(owner: psycopg.Connection[Any]) -> None:
    tables = [
        sql.Identifier("public", row[0])
        for row in owner.execute("select tablename from pg_tables where schemaname = 'public' order by 1")
    ]
    owner.execute(sql.SQL("create publication usagemeter_everything for table {}").format(sql.SQL(", ").join(tables)))
    tenant, alice = factories.add_tenant(owner), factories.add_user(owner)
    event = factories.add_event(owner, tenant_id=tenant, user_id=alice)
    assert rollup_check.fold(owner) == 1
    factories.add_event(owner, tenant_id=tenant, user_id=alice)
    owner.execute("update public.usage_events set tokens_input = 99 where id = %s", (event,))
    owner.execute("delete from public.usage_events where id = %s", (event,))
    assert rollup_check.fold(owner) == 3
    owner.execute("delete from public.tenants where id = %s", (tenant,))
    assert rollup_check.differences(owner) == 0


def in_threads(*steps: Callable[[], None]) -> list[BaseException]:
    """Run each callable in its own thread; the exceptions they raised."""
    failures: list[BaseException] = []

    def guarded(step: Callable[[], None]) -> None:
        try:
            step()
        except BaseException as failure:
            failures.append(failure)

    threads = [threading.Thread(target=guarded, args=(step,)) for step in steps]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads), "a writer is still waiting after 60 s"
    return failures


def test_two_transactions_writing_two_tenants_in_opposite_order_do_not_deadlock(
    database_url: str, owner: psycopg.Connection[Any]
) -> None:
    tenants, alice = [factories.add_tenant(owner), factories.add_tenant(owner)], factories.add_user(owner)
    both_wrote_once = threading.Barrier(2, timeout=30)

    def writer(order: list[uuid.UUID]) -> Callable[[], None]:
        def write() -> None:
            with db.connect(database_url) as conn, conn.transaction():
                for position, tenant in enumerate(order):
                    factories.add_event(conn, tenant_id=tenant, user_id=alice)  # same hour, user and action
                    if position == 0:
                        both_wrote_once.wait()

        return write

    assert in_threads(writer(tenants), writer(tenants[::-1])) == []
    assert factories.count_events(owner) == 4
    assert rollup_check.differences(owner) == 0


def test_concurrent_record_many_batches_do_not_deadlock(app_database_url: str, owner: psycopg.Connection[Any]) -> None:
    tenants, alice = [factories.add_tenant(owner) for _ in range(4)], factories.add_user(owner)

    def batches(order: list[uuid.UUID]) -> Callable[[], None]:
        events = [  # chunks of 100 are separate statements: each touches one tenant, in this order
            {"action": "agency:scope:generate", "tenant_id": tenant, "user_id": alice, "tokens_input": 1}
            for tenant in order
            for _ in range(100)
        ]

        def write() -> None:
            with Recorder(app_database_url, pool_size=1) as recorder:
                for _ in range(15):
                    recorder.record_many(events)

        return write

    orders = [tenants, tenants[::-1], tenants[1:] + tenants[:1], tenants[2:] + tenants[:2]]
    assert in_threads(*(batches(order) for order in orders)) == []
    assert factories.count_events(owner) == 4 * 15 * 400
    assert rollup_check.differences(owner) == 0


DELETE_ONE_EVENT = (
    "delete from public.usage_events where ctid in (select ctid from public.usage_events where tenant_id = %s limit 1)"
)


def test_every_snapshot_is_exact_while_writers_and_folds_run(database_url: str, owner: psycopg.Connection[Any]) -> None:
    tenants, alice = [factories.add_tenant(owner), factories.add_tenant(owner)], factories.add_user(owner)
    writing = threading.Event()
    writing.set()
    checked: list[int] = []
    folded: list[int | None] = []

    def writer(tenant: uuid.UUID) -> Callable[[], None]:
        def write() -> None:
            with db.connect(database_url, autocommit=True) as conn:
                for i in range(300):
                    factories.add_event(conn, tenant_id=tenant, user_id=alice, tokens_input=i)
                    if i % 7 == 0:  # corrections too
                        conn.execute(DELETE_ONE_EVENT, (tenant,))

        return write

    def folder() -> None:
        with db.connect(database_url, autocommit=True) as conn:
            while writing.is_set():
                folded.append(rollup_check.fold(conn))

    def checker() -> None:
        with db.connect(database_url, autocommit=True) as conn:
            while writing.is_set():
                checked.append(rollup_check.differences(conn))  # one statement: one snapshot

    def writers() -> None:
        try:
            assert in_threads(*(writer(tenant) for tenant in tenants + tenants)) == []
        finally:
            writing.clear()

    assert in_threads(writers, folder, checker) == []
    assert len(checked) > 3
    assert set(checked) == {0}
    assert sum(n or 0 for n in folded) > 0  # folds ran between the checks
    assert rollup_check.differences(owner) == 0
