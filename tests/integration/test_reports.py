"""Summaries and listings equal an independent computation, per scope, across DST, with zero-filled buckets."""

from __future__ import annotations

import itertools
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import errors as pgerrors

from tests import factories
from usagemeter.db import Identity
from usagemeter.reporting import filters, listing, summaries

ACTIONS = ["agency:scope:generate", "agency:scope:revise", "agency:proposal:generate", "chat:message:send"]
# Both 2026 DST changes of Europe/Paris and America/New_York fall inside this window.
WINDOW_START = datetime(2026, 3, 1, tzinfo=UTC)
WINDOW_DAYS = 270


@dataclass(frozen=True)
class Event:
    tenant: int | None
    user: int
    action: str
    tokens_input: int
    tokens_output: int
    created_at: datetime


@st.composite
def event_sets(draw: st.DrawFn) -> list[Event]:
    return draw(
        st.lists(
            st.builds(
                Event,
                tenant=st.one_of(st.none(), st.integers(0, 2)),
                user=st.integers(0, 3),
                action=st.sampled_from(ACTIONS),
                tokens_input=st.integers(0, 5000),
                tokens_output=st.integers(0, 2000),
                created_at=st.integers(0, WINDOW_DAYS * 24 * 60).map(lambda m: WINDOW_START + timedelta(minutes=m)),
            ),
            max_size=40,
        )
    )


@dataclass
class World:
    tenants: list[uuid.UUID]
    users: list[uuid.UUID]
    members_of: dict[uuid.UUID, set[uuid.UUID]]
    rows: list[tuple[uuid.UUID | None, uuid.UUID, Event]]


def build(conn: psycopg.Connection[Any], events: list[Event]) -> World:
    tenants = [factories.add_tenant(conn) for _ in range(3)]
    users = [factories.add_user(conn) for _ in range(4)]
    members_of: dict[uuid.UUID, set[uuid.UUID]] = {u: set() for u in users}
    for t, u in [(0, 0), (1, 0), (1, 1), (2, 2)]:  # user 3 belongs to no tenant
        factories.add_member(conn, tenants[t], users[u])
        members_of[users[u]].add(tenants[t])
    rows = []
    for e in events:
        tenant = None if e.tenant is None else tenants[e.tenant]
        conn.execute(
            "insert into public.usage_events (tenant_id, user_id, action, tokens_input, tokens_output, created_at)"
            " values (%s, %s, %s, %s, %s, %s)",
            (tenant, users[e.user], e.action, e.tokens_input, e.tokens_output, e.created_at),
        )
        rows.append((tenant, users[e.user], e))
    return World(tenants, users, members_of, rows)


def truncate(moment: datetime, bucket: str, tz: str) -> datetime:
    local = moment.astimezone(ZoneInfo(tz))
    if bucket == "hour":
        return local.replace(minute=0, second=0, microsecond=0)
    day = local.date()
    if bucket == "week":
        day -= timedelta(days=day.weekday())
    elif bucket == "month":
        day = day.replace(day=1)
    return datetime(day.year, day.month, day.day, tzinfo=ZoneInfo(tz))


def next_bucket(bucket_start: datetime, bucket: str, tz: str) -> datetime:
    if bucket == "hour":
        return (bucket_start.astimezone(UTC) + timedelta(hours=1)).astimezone(ZoneInfo(tz))
    day = bucket_start.date()
    if bucket == "day":
        day += timedelta(days=1)
    elif bucket == "week":
        day += timedelta(days=7)
    else:
        day = date(day.year + day.month // 12, day.month % 12 + 1, 1)
    return datetime(day.year, day.month, day.day, tzinfo=ZoneInfo(tz))


def expected_summary(world: World, viewer: uuid.UUID | None, query: summaries.SummaryQuery) -> list[dict[str, Any]]:
    """The same report computed in Python from the inserted rows: an oracle independent of the SQL."""
    key_names = {"action": "action", "domain": "domain", "module": "module_id", "user": "user_id"}
    groups: dict[tuple[Any, ...], list[int]] = defaultdict(lambda: [0, 0, 0])
    for tenant, user, e in world.rows:
        visible = viewer is None or (tenant in world.members_of[viewer]) or (tenant is None and user == viewer)
        in_scope = {
            "all": True,
            "tenant": tenant == query.tenant_id,
            "user": tenant is None and user == query.user_id,
        }[query.scope]
        if not (visible and in_scope and query.start <= e.created_at < query.end):
            continue
        values = {
            "action": e.action,
            "domain": ":".join(e.action.split(":")[:2]),
            "module": e.action.split(":")[0],
            "user": user,
        }
        key = tuple(values[k] for k in query.group_by)
        if query.bucket:
            key += (truncate(e.created_at, query.bucket, query.tz),)
        totals = groups[key]
        totals[0] += 1
        totals[1] += e.tokens_input
        totals[2] += e.tokens_output
    names = [key_names[k] for k in query.group_by] + (["bucket"] if query.bucket else [])
    if query.bucket:
        assert query.bucket is not None
        buckets = []
        moment = truncate(query.start, query.bucket, query.tz)
        while moment < query.end:
            buckets.append(moment)
            moment = next_bucket(moment, query.bucket, query.tz)
        series = {key[:-1] for key in groups}
        if not query.group_by:
            series = {()}  # one series, zeros and all, even without events: a chart needs its axis
        for s, b in itertools.product(series, buckets):
            groups.setdefault((*s, b), [0, 0, 0])
    elif not query.group_by and not groups:
        groups[()] = [0, 0, 0]
    return sorted(
        (
            {
                **dict(zip(names, key, strict=True)),
                "events": t[0],
                "tokens_input": t[1],
                "tokens_output": t[2],
                "tokens_total": t[1] + t[2],
                "cost": Decimal(0),  # no prices: every event costs 0 (tests/integration/test_costs.py prices them)
                "currency": None,
            }
            for key, t in groups.items()
        ),
        key=repr,
    )


def normalised(rows: list[summaries.SummaryRow]) -> list[dict[str, Any]]:
    return sorted(
        ({k: (v.astimezone(UTC) if isinstance(v, datetime) else v) for k, v in row.as_dict().items()} for row in rows),
        key=lambda d: repr({k: v for k, v in d.items()}),
    )


def as_utc(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(
        ({k: (v.astimezone(UTC) if isinstance(v, datetime) else v) for k, v in row.items()} for row in rows),
        key=lambda d: repr({k: v for k, v in d.items()}),
    )


queries = st.fixed_dictionaries(
    {
        "group_by": st.lists(st.sampled_from(["action", "domain", "module", "user"]), unique=True, max_size=2),
        "bucket": st.sampled_from([None, "day", "week", "month"]),
        "tz": st.sampled_from(["UTC", "Europe/Paris", "America/New_York", "Asia/Kolkata"]),
        "start_day": st.integers(0, 200),
        "days": st.one_of(st.integers(1, 60), st.just(WINDOW_DAYS)),
        "viewer": st.sampled_from(["service", 0, 1, 3]),
        "scope": st.sampled_from(["all", "tenant", "user"]),
        "tenant": st.integers(0, 2),
        "user": st.integers(0, 3),
    }
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(events=event_sets(), q=queries)
def test_summaries_equal_an_independent_aggregation(
    owner: psycopg.Connection[Any], events: list[Event], q: dict[str, Any]
) -> None:
    with owner.transaction(force_rollback=True):
        world = build(owner, events)
        start = WINDOW_START + timedelta(days=q["start_day"])
        query = summaries.SummaryQuery(
            scope=q["scope"],
            tenant_id=world.tenants[q["tenant"]],
            user_id=world.users[q["user"]],
            start=start,
            end=start + timedelta(days=q["days"]),
            group_by=tuple(q["group_by"]),
            bucket=q["bucket"],
            tz=q["tz"],
        )
        viewer = None if q["viewer"] == "service" else world.users[q["viewer"]]
        identity = Identity.service() if viewer is None else Identity.user(viewer)
        got = normalised(summaries.summarize(owner, identity, query))
        assert got == as_utc(expected_summary(world, viewer, query))
        if query.bucket and not query.group_by:
            assert len(got) == summaries.bucket_count(query)  # what the cap counts is what the SQL returns


@pytest.mark.parametrize("tz", ["UTC", "Asia/Kolkata"])
def test_hour_buckets_are_zero_filled_in_the_zone(owner: psycopg.Connection[Any], tz: str) -> None:
    user = factories.add_user(owner)
    at = datetime(2026, 6, 1, 10, 20, tzinfo=UTC)
    factories.add_event(owner, tenant_id=None, user_id=user)
    owner.execute("update public.usage_events set created_at = %s", (at,))
    query = summaries.SummaryQuery(
        scope="user", user_id=user, start=at - timedelta(hours=3), end=at + timedelta(hours=3), bucket="hour", tz=tz
    )
    rows = summaries.summarize(owner, Identity.user(user), query)
    assert len(rows) == 7 if tz == "Asia/Kolkata" else 6  # +05:30 splits the range into one more hour
    assert len(rows) == summaries.bucket_count(query)
    assert sum(r.events for r in rows) == 1
    hot = next(r for r in rows if r.events)
    assert hot.keys["bucket"].astimezone(ZoneInfo(tz)).minute == 0
    assert hot.keys["bucket"] <= at < hot.keys["bucket"] + timedelta(hours=1)


def test_a_member_never_sees_another_tenants_numbers(owner: psycopg.Connection[Any]) -> None:
    tenant_a, tenant_b = factories.add_tenant(owner), factories.add_tenant(owner)
    alice, bob = factories.add_user(owner), factories.add_user(owner)
    factories.add_member(owner, tenant_a, alice)
    factories.add_member(owner, tenant_b, bob)
    factories.add_event(owner, tenant_id=tenant_a, user_id=alice, tokens_input=1)
    factories.add_event(owner, tenant_id=tenant_b, user_id=bob, tokens_input=1000)
    factories.add_event(owner, tenant_id=None, user_id=bob, tokens_input=500)
    now = datetime.now(UTC)
    span: dict[str, Any] = {"start": now - timedelta(days=1), "end": now + timedelta(days=1)}
    alice_id = Identity.user(alice)

    foreign = summaries.summarize(owner, alice_id, summaries.SummaryQuery(scope="tenant", tenant_id=tenant_b, **span))
    assert [r.events for r in foreign] == [0]
    personal = summaries.summarize(owner, alice_id, summaries.SummaryQuery(scope="user", user_id=bob, **span))
    assert [r.tokens_total for r in personal] == [0]
    everything = summaries.summarize(owner, alice_id, summaries.SummaryQuery(scope="all", **span))
    assert [(r.events, r.tokens_input) for r in everything] == [(1, 1)]
    page = listing.list_events(owner, alice_id, listing.ListQuery(scope="all", **span))
    assert {e.tenant_id for e in page.events} == {tenant_a}
    with pytest.raises(pgerrors.InsufficientPrivilege):
        summaries.summarize(owner, Identity.anon(), summaries.SummaryQuery(scope="all", **span))


def test_personal_scope_is_only_rows_without_a_tenant(owner: psycopg.Connection[Any]) -> None:
    tenant, alice = factories.add_tenant(owner), factories.add_user(owner)
    factories.add_member(owner, tenant, alice)
    factories.add_event(owner, tenant_id=tenant, user_id=alice, tokens_input=100, tokens_output=0)
    factories.add_event(owner, tenant_id=None, user_id=alice, tokens_input=7, tokens_output=0)
    now = datetime.now(UTC)
    query = summaries.SummaryQuery(
        scope="user", user_id=alice, start=now - timedelta(days=1), end=now + timedelta(days=1)
    )
    for identity in (Identity.user(alice), Identity.service()):
        assert [r.tokens_total for r in summaries.summarize(owner, identity, query)] == [7]


def test_keyset_pages_concatenate_to_the_full_result_despite_inserts(owner: psycopg.Connection[Any]) -> None:
    tenant, alice = factories.add_tenant(owner), factories.add_user(owner)
    factories.add_member(owner, tenant, alice)
    base = datetime(2026, 5, 1, tzinfo=UTC)
    for i in range(230):
        owner.execute(
            "insert into public.usage_events (tenant_id, user_id, action, created_at) values (%s, %s, 'a:b:c', %s)",
            (tenant, alice, base + timedelta(minutes=i // 3)),  # equal times: the id breaks ties
        )
    query = listing.ListQuery(
        scope="tenant", tenant_id=tenant, start=base, end=datetime(2027, 1, 1, tzinfo=UTC), limit=40
    )
    identity = Identity.user(alice)
    full = [
        row[0]
        for row in owner.execute("select id from public.usage_events order by created_at desc, id desc").fetchall()
    ]
    seen: list[uuid.UUID] = []
    cursor: str | None = None
    while True:
        page = listing.list_events(owner, identity, query, cursor=cursor)
        seen += [e.id for e in page.events]
        factories.add_event(owner, tenant_id=tenant, user_id=alice)  # a newer event arrives between pages
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == full


def test_listing_filters(owner: psycopg.Connection[Any]) -> None:
    user = factories.add_user(owner)
    factories.add_event(owner, tenant_id=None, user_id=user, action="agency:scope:generate", metadata={"model": "a"})
    factories.add_event(owner, tenant_id=None, user_id=user, action="agency:proposal:generate", metadata={"model": "b"})
    factories.add_event(owner, tenant_id=None, user_id=user, action="chat:message:send", metadata={"model": "a"})
    factories.add_event(
        owner, tenant_id=None, user_id=user, action="notes:text:add", metadata={"n": "\\u0000 \U0001f600"}
    )
    now = datetime.now(UTC)
    span: dict[str, Any] = {
        "scope": "user",
        "user_id": user,
        "start": now - timedelta(days=1),
        "end": now + timedelta(days=1),
    }

    def actions(**filters: Any) -> set[str]:
        page = listing.list_events(owner, Identity.user(user), listing.ListQuery(**span, **filters))
        return {e.action for e in page.events}

    assert actions(action_prefix="agency:") == {"agency:scope:generate", "agency:proposal:generate"}
    assert actions(action_prefix="agency:scope:") == {"agency:scope:generate"}
    assert actions(action_prefix="agency%") == set()  # a prefix, not a LIKE pattern
    assert actions(module="chat") == {"chat:message:send"}
    assert actions(metadata={"model": "a"}) == {"agency:scope:generate", "chat:message:send"}
    assert actions(action="chat:message:send", metadata={"model": "b"}) == set()
    assert actions(metadata={"n": "\\u0000 \U0001f600"}) == {"notes:text:add"}  # escapes as text, not a NUL


def test_top_keeps_the_biggest_groups(owner: psycopg.Connection[Any]) -> None:
    user = factories.add_user(owner)
    for action, tokens in [("a:b:c", 5), ("a:b:d", 50), ("a:b:e", 500), ("a:b:e", 1)]:
        factories.add_event(owner, tenant_id=None, user_id=user, action=action, tokens_input=tokens, tokens_output=0)
    now = datetime.now(UTC)
    query = summaries.SummaryQuery(
        scope="user",
        user_id=user,
        start=now - timedelta(days=1),
        end=now + timedelta(days=1),
        group_by=("action",),
        top=2,
    )
    rows = summaries.summarize(owner, Identity.user(user), query)
    assert sorted((r.keys["action"], r.tokens_total) for r in rows) == [("a:b:d", 50), ("a:b:e", 501)]


def test_top_keeps_the_biggest_groups_in_every_bucket(owner: psycopg.Connection[Any]) -> None:
    user = factories.add_user(owner)
    day = datetime(2026, 6, 1, tzinfo=UTC)
    for action, tokens, days_later in [("a:b:c", 5, 0), ("a:b:d", 50, 1), ("a:b:e", 500, 2), ("a:b:e", 1, 0)]:
        owner.execute(
            "insert into public.usage_events (user_id, action, tokens_input, created_at) values (%s, %s, %s, %s)",
            (user, action, tokens, day + timedelta(days=days_later)),
        )
    query = summaries.SummaryQuery(
        scope="user", user_id=user, start=day, end=day + timedelta(days=3), group_by=("action",), bucket="day", top=2
    )
    rows = summaries.summarize(owner, Identity.user(user), query)
    assert [(r.keys["action"], r.keys["bucket"].day, r.tokens_total) for r in rows] == [
        ("a:b:d", 1, 0), ("a:b:d", 2, 50), ("a:b:d", 3, 0), ("a:b:e", 1, 1), ("a:b:e", 2, 0), ("a:b:e", 3, 500),
    ]  # fmt: skip


def test_too_many_buckets_are_refused_before_the_database_is_asked(database_url: str) -> None:
    query = summaries.SummaryQuery(
        scope="all", start=datetime(1990, 1, 1, tzinfo=UTC), end=datetime(2030, 1, 1, tzinfo=UTC), bucket="hour"
    )
    with psycopg.connect(database_url) as conn:
        pass  # closed: a query would fail with OperationalError, the cap answers first
    with pytest.raises(
        filters.ReportError, match=r"^bucket: the range spans 350,640 hour buckets, more than the 10,000"
    ):
        summaries.summarize(conn, Identity.service(), query)
    with pytest.raises(filters.ReportError, match=r"spans 1,461 day buckets, more than the 1,000 allowed"):
        summaries.summarize(conn, Identity.service(), query.model_copy(update={"bucket": "day",
            "start": datetime(2026, 1, 1, tzinfo=UTC)}), max_buckets=1000)  # fmt: skip


def test_too_many_rows_are_refused_after_reading_one_more_than_allowed(owner: psycopg.Connection[Any]) -> None:
    user = factories.add_user(owner)
    for action in ("a:b:c", "a:b:d", "a:b:e"):
        factories.add_event(owner, tenant_id=None, user_id=user, action=action, tokens_input=len(action))
    now = datetime.now(UTC)
    query = summaries.SummaryQuery(
        scope="user", user_id=user, start=now - timedelta(days=5), end=now + timedelta(days=5), group_by=("action",),
        bucket="day",
    )  # fmt: skip
    identity = Identity.user(user)
    assert len(summaries.summarize(owner, identity, query, max_rows=33)) == 33  # 11 days x 3 actions
    too_many = r"^summary: more than the 32 rows allowed \(max_rows; 11 buckets x more than 2 groups\)"
    with pytest.raises(filters.ReportError, match=too_many):
        summaries.summarize(owner, identity, query, max_rows=32)
    assert len(summaries.summarize(owner, identity, query.model_copy(update={"top": 2}), max_rows=32)) == 22
    totals = query.model_copy(update={"bucket": None})
    with pytest.raises(filters.ReportError, match=r"^summary: more than the 2 rows allowed \(max_rows\): use a"):
        summaries.summarize(owner, identity, totals, max_rows=2)
    assert len(summaries.summarize(owner, identity, totals.model_copy(update={"top": 2}), max_rows=2)) == 2


def test_a_zone_the_server_refuses_is_a_report_error(owner: psycopg.Connection[Any]) -> None:
    now = datetime.now(UTC)
    query = summaries.SummaryQuery(scope="all", start=now - timedelta(days=1), end=now)
    leap_seconds = query.model_copy(update={"tz": "right/UTC"})  # past validation, as a zone the server lacks
    with pytest.raises(filters.ReportError, match=r"^tz: the database does not accept time zone 'right/UTC'"):
        summaries.summarize(owner, Identity.service(), leap_seconds)
    assert summaries.summarize(owner, Identity.service(), query)  # the connection is still usable
    unknown = query.model_copy(update={"tz": "Mars/Olympus", "bucket": "day"})  # refused before the server
    with pytest.raises(filters.ReportError, match=r"^tz: unknown time zone 'Mars/Olympus'"):
        summaries.summarize(owner, Identity.service(), unknown)


def test_listing_reaches_back_to_the_earliest_reportable_time(owner: psycopg.Connection[Any]) -> None:
    user = factories.add_user(owner)
    factories.add_event(owner, tenant_id=None, user_id=user)
    query = listing.ListQuery(scope="user", user_id=user, start=filters.EARLIEST, end=filters.LATEST)
    assert len(listing.list_events(owner, Identity.user(user), query).events) == 1
    year_one = query.model_copy(update={"start": datetime(1, 1, 1, tzinfo=UTC)})  # past validation
    assert len(listing.list_events(owner, Identity.user(user), year_one).events) == 1


def test_a_forged_far_future_cursor_is_a_report_error(owner: psycopg.Connection[Any]) -> None:
    query = listing.ListQuery(scope="all", start=datetime(2026, 1, 1, tzinfo=UTC), end=filters.LATEST)
    forged = listing.encode_cursor(datetime.max.replace(tzinfo=UTC), uuid.uuid4())
    with pytest.raises(filters.ReportError, match=r"^cursor: malformed cursor"):
        listing.list_events(owner, Identity.service(), query, cursor=forged)
    latest = listing.encode_cursor(filters.LATEST, uuid.uuid4())  # at the end of the range: read from its end
    assert listing.list_events(owner, Identity.service(), query, cursor=latest).events == []
