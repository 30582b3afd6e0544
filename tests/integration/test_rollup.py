"""The hourly rollup stays equal to the raw events through inserts, late events, corrections and deletions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import errors as pgerrors

from tests import factories
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
            else:
                owner.execute("delete from public.tenants where id = %s", (tenant,))
                tenants[tenant_index] = factories.add_tenant(owner)
        assert rollup_check.differences(owner) == 0


def test_rollup_rows_follow_the_same_visibility(owner: psycopg.Connection[Any]) -> None:
    tenant_a, tenant_b = factories.add_tenant(owner), factories.add_tenant(owner)
    alice, bob = factories.add_user(owner), factories.add_user(owner)
    factories.add_member(owner, tenant_a, alice)
    factories.add_event(owner, tenant_id=tenant_a, user_id=alice)
    factories.add_event(owner, tenant_id=tenant_b, user_id=bob)
    factories.add_event(owner, tenant_id=None, user_id=bob)
    with acting_as(owner, Identity.user(alice)):
        seen = owner.execute("select tenant_id, user_id from public.usage_rollup_hourly").fetchall()
    assert seen == [(tenant_a, alice)]
    with pytest.raises(pgerrors.InsufficientPrivilege), acting_as(owner, Identity.user(alice)):
        owner.execute("update public.usage_rollup_hourly set events = 0")
    with pytest.raises(pgerrors.InsufficientPrivilege), acting_as(owner, Identity.anon()):
        owner.execute("select * from public.usage_rollup_hourly")


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
    owner.execute("update public.usage_rollup_hourly set events = events + 5")
    assert rollup_check.differences(owner) == 1
    assert rollup_check.rebuild(owner) == 1
    assert rollup_check.differences(owner) == 0
