"""Budgets on real PostgreSQL: hard limits hold under races, windows follow the calendar, alerts fire once, RLS.

Races use one real connection per writer (the `authenticator` login acting as a member, as the
API does), so the counters' row locks, not the test, decide who gets the last unit of a budget.
"""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import psycopg
import pydantic
import pytest
from psycopg import errors as pgerrors

import usagemeter
from tests import factories
from usagemeter import db, errors
from usagemeter.billing import budget_sql, budgets, corrections
from usagemeter.db import Identity, acting_as, refusals

MODEL = "gpt-test"
ACTION = "agency:scope:generate"
SPRING_2026 = datetime(2026, 3, 20, tzinfo=UTC)  # counters of the windows under test start after it
INSERT_EVENT = (
    "insert into public.usage_events (tenant_id, user_id, action, tokens_input, tokens_output, metadata)"
    " values (%s, %s, %s, %s, %s, %s)"
)


@dataclass(frozen=True)
class World:
    tenant: uuid.UUID
    alice: uuid.UUID  # a member of tenant
    other: uuid.UUID  # another tenant
    bob: uuid.UUID  # a member of other only


@pytest.fixture
def world(owner: psycopg.Connection[Any]) -> World:
    tenant, other = factories.add_tenant(owner), factories.add_tenant(owner)
    alice, bob = factories.add_user(owner), factories.add_user(owner)
    factories.add_member(owner, tenant, alice)
    factories.add_member(owner, other, bob)
    return World(tenant=tenant, alice=alice, other=other, bob=bob)


def set_budget(owner: psycopg.Connection[Any], **fields: Any) -> budgets.BudgetStatus:
    return budgets.set_budget(owner, budgets.BudgetSpec(**fields))


def load_price(owner: psycopg.Connection[Any], *, input_per_million: int, output_per_million: int) -> None:
    owner.execute(
        "insert into public.usage_prices (model, currency, input_per_million, output_per_million, effective_from)"
        " values (%s, 'USD', %s, %s, '2020-01-01')",
        (MODEL, input_per_million, output_per_million),
    )


def insert_as(
    conn: psycopg.Connection[Any],
    identity: Identity,
    *,
    tenant: uuid.UUID | None,
    user: uuid.UUID,
    tokens_input: int = 1,
    tokens_output: int = 0,
    model: str | None = MODEL,
) -> None:
    """One event by a plain SQL insert as `identity` (no Recorder), in its own transaction."""
    metadata = json.dumps({"model": model} if model else {})
    with acting_as(conn, identity):
        conn.execute(INSERT_EVENT, (tenant, user, ACTION, tokens_input, tokens_output, metadata))


def insert_at(owner: psycopg.Connection[Any], *, tenant: uuid.UUID, user: uuid.UUID, at: datetime) -> None:
    """An event at a given moment, as the service role (the only one that may set created_at)."""
    with acting_as(owner, Identity.service()):
        owner.execute(
            "insert into public.usage_events (tenant_id, user_id, action, created_at) values (%s, %s, %s, %s)",
            (tenant, user, ACTION, at),
        )


def scalar(owner: psycopg.Connection[Any], query: str, params: tuple[Any, ...] | dict[str, Any] = ()) -> Any:
    row = owner.execute(query.encode(), params).fetchone()
    assert row is not None
    return row[0]


def tenant_events(owner: psycopg.Connection[Any], tenant: uuid.UUID) -> int:
    return int(scalar(owner, "select count(*) from public.usage_events where tenant_id = %s", (tenant,)))


def counters(owner: psycopg.Connection[Any], budget_id: uuid.UUID) -> list[tuple[datetime, datetime, Decimal]]:
    rows = owner.execute(
        "select window_start, window_end, used from public.usage_budget_counters where budget_id = %s"
        " order by window_start",
        (budget_id,),
    ).fetchall()
    return [(r[0], r[1], r[2]) for r in rows]


def write_waiting_at_most(conn: psycopg.Connection[Any], wait: str, *, tenant: uuid.UUID, user: uuid.UUID) -> None:
    """One event as `user`, giving up (LockNotAvailable) if a lock is not granted within `wait`."""
    with acting_as(conn, Identity.user(user)):
        conn.execute("select set_config('lock_timeout', %s, true)", (wait,))
        conn.execute(INSERT_EVENT, (tenant, user, ACTION, 1, 0, "{}"))


def as_refusal(failure: psycopg.Error) -> errors.UsagemeterError:
    return refusals.refusal(failure, index=0)


@pytest.fixture
def app_connections(app_database_url: str) -> Iterator[Callable[[int], list[psycopg.Connection[Any]]]]:
    opened: list[psycopg.Connection[Any]] = []

    def open_(n: int) -> list[psycopg.Connection[Any]]:
        new = [db.connect_app(app_database_url) for _ in range(n)]
        opened.extend(new)
        return new

    yield open_
    for conn in opened:
        conn.close()


def race(connections: list[psycopg.Connection[Any]], work: Callable[[int, psycopg.Connection[Any]], None]) -> None:
    """Run `work(i, conn)` in one thread per connection, started together; fails if any thread raised."""
    start = threading.Barrier(len(connections))
    crashes: list[BaseException] = []

    def run(index: int, conn: psycopg.Connection[Any]) -> None:
        try:
            start.wait(timeout=30)
            work(index, conn)
        except BaseException as crash:  # reported below, in the test's thread
            crashes.append(crash)

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    assert not crashes, crashes


# -- hard limits under races -------------------------------------------------------------------


def test_fifty_racing_connections_store_exactly_the_event_limit(
    owner: psycopg.Connection[Any], world: World, app_connections: Callable[[int], list[psycopg.Connection[Any]]]
) -> None:
    budget = set_budget(owner, tenant_id=world.tenant, metric="events", limit=1000, period="month", mode="hard")
    refused: list[errors.UsagemeterError] = []
    stored = [0] * 50

    def write_until_refused(index: int, conn: psycopg.Connection[Any]) -> None:
        while True:
            try:
                insert_as(conn, Identity.user(world.alice), tenant=world.tenant, user=world.alice)
            except psycopg.Error as failure:
                refused.append(as_refusal(failure))
                return
            stored[index] += 1

    race(app_connections(50), write_until_refused)

    assert tenant_events(owner, world.tenant) == 1000 == sum(stored)
    assert len(refused) == 50
    for failure in refused:
        assert isinstance(failure, errors.QuotaExceeded), failure
        assert failure.sqlstate == "UMQ01"
        assert failure.budget_id == str(budget.id)
        assert (failure.metric, failure.limit, failure.used, failure.requested) == (
            "events",
            Decimal(1000),
            Decimal(1000),
            Decimal(1),
        )
        assert failure.window_start
        assert failure.window_end
    [status] = budgets.list_budgets(owner, Identity.service(), budget_id=budget.id)
    assert (status.used, status.remaining) == (Decimal(1000), Decimal(0))


def test_racing_token_writers_never_pass_the_token_limit(
    owner: psycopg.Connection[Any], world: World, app_connections: Callable[[int], list[psycopg.Connection[Any]]]
) -> None:
    budget = set_budget(owner, tenant_id=world.tenant, metric="tokens", limit=10_000, period="month", mode="hard")
    refused: list[tuple[int, errors.UsagemeterError]] = []
    lock = threading.Lock()

    def write_random_sizes(index: int, conn: psycopg.Connection[Any]) -> None:
        sizes = random.Random(index)
        misses = 0
        while misses < 3:
            size = sizes.randint(1, 400)
            try:
                insert_as(conn, Identity.user(world.alice), tenant=world.tenant, user=world.alice, tokens_input=size)
            except psycopg.Error as failure:
                with lock:
                    refused.append((size, as_refusal(failure)))
                misses += 1

    race(app_connections(50), write_random_sizes)

    total = scalar(owner, "select sum(tokens_total) from public.usage_events where tenant_id = %s", (world.tenant,))
    assert total <= 10_000
    assert counters(owner, budget.id)[-1][2] == total
    assert len(refused) == 150
    for size, failure in refused:
        assert isinstance(failure, errors.QuotaExceeded), failure
        assert failure.requested == size
        assert failure.used + failure.requested > failure.limit == 10_000  # it would have passed the limit
        assert failure.used <= total


def test_racing_cost_writers_store_exactly_the_cost_limit(
    owner: psycopg.Connection[Any], world: World, app_connections: Callable[[int], list[psycopg.Connection[Any]]]
) -> None:
    load_price(owner, input_per_million=1000, output_per_million=2000)  # 100 input tokens cost 0.1 USD
    budget = set_budget(
        owner, tenant_id=world.tenant, metric="cost", limit=Decimal(20), currency="USD", period="month", mode="hard"
    )
    refused: list[errors.UsagemeterError] = []

    def write_until_refused(index: int, conn: psycopg.Connection[Any]) -> None:
        while True:
            try:
                insert_as(conn, Identity.user(world.alice), tenant=world.tenant, user=world.alice, tokens_input=100)
            except psycopg.Error as failure:
                refused.append(as_refusal(failure))
                return

    race(app_connections(50), write_until_refused)

    row = owner.execute(
        "select count(*), sum(cost) from public.usage_events where tenant_id = %s", (world.tenant,)
    ).fetchone()
    assert row == (200, Decimal("20.000000"))
    assert len(refused) == 50
    for failure in refused:
        assert isinstance(failure, errors.QuotaExceeded), failure
        assert (failure.budget_id, failure.metric, failure.currency) == (str(budget.id), "cost", "USD")
        assert (failure.used, failure.requested) == (Decimal(20), Decimal("0.1"))


def test_recorder_writes_are_refused_with_quota_exceeded(
    owner: psycopg.Connection[Any], world: World, app_database_url: str
) -> None:
    budget = set_budget(owner, tenant_id=world.tenant, metric="events", limit=2, period="month", mode="hard")
    with usagemeter.Recorder(app_database_url) as recorder:
        alice = recorder.as_user(world.alice)
        alice.record(action=ACTION, user_id=None, tenant_id=world.tenant)
        alice.record(action=ACTION, user_id=None, tenant_id=world.tenant)
        with pytest.raises(errors.QuotaExceeded) as refused:
            alice.record(action=ACTION, user_id=None, tenant_id=world.tenant)
    assert refused.value.budget_id == str(budget.id)
    assert (refused.value.used, refused.value.requested, refused.value.limit) == (Decimal(2), Decimal(1), Decimal(2))
    assert tenant_events(owner, world.tenant) == 2


def test_direct_inserts_as_authenticated_are_held_to_a_hard_budget(
    owner: psycopg.Connection[Any], world: World, app_database_url: str
) -> None:
    budget = set_budget(owner, tenant_id=world.tenant, metric="tokens", limit=100, period="day", mode="hard")
    with db.connect_app(app_database_url) as conn:
        insert_as(conn, Identity.user(world.alice), tenant=world.tenant, user=world.alice, tokens_input=60)
        with pytest.raises(psycopg.Error) as refused:
            insert_as(conn, Identity.user(world.alice), tenant=world.tenant, user=world.alice, tokens_input=41)
        assert refused.value.sqlstate == "UMQ01"
        detail = json.loads(refused.value.diag.message_detail or "")
        assert (detail["budget_id"], detail["used"], detail["requested"]) == (str(budget.id), 60, 41)
        insert_as(conn, Identity.user(world.alice), tenant=world.tenant, user=world.alice, tokens_input=40)
    assert scalar(owner, "select sum(tokens_total) from public.usage_events") == 100


def test_a_batch_that_would_cross_the_limit_stores_nothing(
    owner: psycopg.Connection[Any], world: World, app_database_url: str
) -> None:
    budget = set_budget(owner, tenant_id=world.tenant, metric="events", limit=5, period="month", mode="hard")
    batch = [{"action": ACTION, "user_id": None, "tenant_id": world.tenant}] * 3
    with usagemeter.Recorder(app_database_url) as recorder:
        alice = recorder.as_user(world.alice)
        assert len(alice.record_many(batch)) == 3
        with pytest.raises(errors.QuotaExceeded) as refused:
            alice.record_many(batch)
        assert tenant_events(owner, world.tenant) == 3
        assert refused.value.budget_id == str(budget.id)
        assert str(budget.id) in str(refused.value)
        assert (refused.value.used, refused.value.requested) == (Decimal(3), Decimal(3))
        assert len(alice.record_many(batch[:2])) == 2
    assert tenant_events(owner, world.tenant) == 5


def test_writers_of_tenants_sharing_no_budget_do_not_wait(
    owner: psycopg.Connection[Any], world: World, app_connections: Callable[[int], list[psycopg.Connection[Any]]]
) -> None:
    set_budget(owner, tenant_id=world.tenant, metric="events", limit=100, period="month", mode="hard")
    set_budget(owner, tenant_id=world.other, metric="events", limit=100, period="month", mode="hard")
    holder, other_tenant, same_tenant = app_connections(3)

    with acting_as(holder, Identity.user(world.alice)):
        holder.execute(INSERT_EVENT, (world.tenant, world.alice, ACTION, 1, 0, "{}"))  # tenant's counter now locked

        started = time.monotonic()
        write_waiting_at_most(other_tenant, "1s", tenant=world.other, user=world.bob)
        assert time.monotonic() - started < 1.0

        with pytest.raises(pgerrors.LockNotAvailable):  # the same tenant's writer does wait for the holder
            write_waiting_at_most(same_tenant, "200ms", tenant=world.tenant, user=world.alice)

    assert tenant_events(owner, world.tenant) == 1
    assert tenant_events(owner, world.other) == 1


# -- windows -----------------------------------------------------------------------------------


def test_a_month_window_in_paris_starts_at_local_midnight(owner: psycopg.Connection[Any], world: World) -> None:
    budget = set_budget(
        owner, tenant_id=world.tenant, metric="events", limit=10, period="month", time_zone="Europe/Paris", mode="soft"
    )
    insert_at(owner, tenant=world.tenant, user=world.alice, at=datetime(2026, 3, 31, 21, 59, tzinfo=UTC))
    insert_at(owner, tenant=world.tenant, user=world.alice, at=datetime(2026, 3, 31, 22, 0, tzinfo=UTC))
    insert_at(owner, tenant=world.tenant, user=world.alice, at=datetime(2026, 4, 30, 21, 59, tzinfo=UTC))
    march = (datetime(2026, 2, 28, 23, tzinfo=UTC), datetime(2026, 3, 31, 22, tzinfo=UTC), Decimal(1))
    april = (datetime(2026, 3, 31, 22, tzinfo=UTC), datetime(2026, 4, 30, 22, tzinfo=UTC), Decimal(2))
    found = [c for c in counters(owner, budget.id) if c[0] in (march[0], april[0])]
    assert found == [march, april]


def test_a_day_window_across_the_spring_dst_change_lasts_23_hours(owner: psycopg.Connection[Any], world: World) -> None:
    budget = set_budget(
        owner, tenant_id=world.tenant, metric="events", limit=10, period="day", time_zone="Europe/Paris", mode="hard"
    )
    insert_at(owner, tenant=world.tenant, user=world.alice, at=datetime(2026, 3, 28, 22, 59, tzinfo=UTC))
    insert_at(owner, tenant=world.tenant, user=world.alice, at=datetime(2026, 3, 28, 23, 0, tzinfo=UTC))
    insert_at(owner, tenant=world.tenant, user=world.alice, at=datetime(2026, 3, 29, 21, 59, tzinfo=UTC))
    insert_at(owner, tenant=world.tenant, user=world.alice, at=datetime(2026, 3, 29, 22, 0, tzinfo=UTC))
    found = [c for c in counters(owner, budget.id) if SPRING_2026 < c[0] < datetime(2026, 4, 1, tzinfo=UTC)]
    assert found == [
        (datetime(2026, 3, 27, 23, tzinfo=UTC), datetime(2026, 3, 28, 23, tzinfo=UTC), Decimal(1)),  # 24 h, CET
        (datetime(2026, 3, 28, 23, tzinfo=UTC), datetime(2026, 3, 29, 22, tzinfo=UTC), Decimal(2)),  # 23 h
        (datetime(2026, 3, 29, 22, tzinfo=UTC), datetime(2026, 3, 30, 22, tzinfo=UTC), Decimal(1)),  # 24 h, CEST
    ]


def test_a_week_window_starts_monday_at_local_midnight(owner: psycopg.Connection[Any], world: World) -> None:
    budget = set_budget(
        owner, tenant_id=world.tenant, metric="events", limit=10, period="week", time_zone="Europe/Paris", mode="soft"
    )
    insert_at(owner, tenant=world.tenant, user=world.alice, at=datetime(2026, 5, 31, 21, 59, tzinfo=UTC))  # Sun 23:59
    insert_at(owner, tenant=world.tenant, user=world.alice, at=datetime(2026, 5, 31, 22, 0, tzinfo=UTC))  # Mon 00:00
    insert_at(owner, tenant=world.tenant, user=world.alice, at=datetime(2026, 6, 3, 12, tzinfo=UTC))  # Wednesday
    insert_at(owner, tenant=world.tenant, user=world.alice, at=datetime(2026, 6, 7, 21, 59, tzinfo=UTC))  # Sun 23:59
    found = [c for c in counters(owner, budget.id) if SPRING_2026 < c[0] < datetime(2026, 6, 10, tzinfo=UTC)]
    assert found == [
        (datetime(2026, 5, 24, 22, tzinfo=UTC), datetime(2026, 5, 31, 22, tzinfo=UTC), Decimal(1)),
        (datetime(2026, 5, 31, 22, tzinfo=UTC), datetime(2026, 6, 7, 22, tzinfo=UTC), Decimal(3)),
    ]


def insert_budget(owner: psycopg.Connection[Any], **fields: Any) -> uuid.UUID:
    """A budget inserted as the service role by SQL, bypassing set_budget (which cannot read a total budget back)."""
    spec = budgets.BudgetSpec(**fields)
    params = spec.model_dump()
    params["thresholds"] = list(spec.thresholds)
    with acting_as(owner, Identity.service()):
        budget_id: uuid.UUID = scalar(owner, budget_sql.INSERT_BUDGET, params)
    return budget_id


def test_a_total_budget_counts_only_from_its_creation(
    owner: psycopg.Connection[Any], world: World, app_database_url: str
) -> None:
    for _ in range(5):
        factories.add_event(owner, tenant_id=world.tenant, user_id=world.alice)
    budget_id = insert_budget(owner, tenant_id=world.tenant, metric="events", limit=2, period="total", mode="hard")
    created = scalar(owner, "select created_at from public.usage_budgets where id = %s", (budget_id,))
    insert_at(owner, tenant=world.tenant, user=world.alice, at=datetime(2020, 1, 1, tzinfo=UTC))  # before: not counted
    with db.connect_app(app_database_url) as conn:
        for _ in range(2):
            insert_as(conn, Identity.user(world.alice), tenant=world.tenant, user=world.alice)
        with pytest.raises(psycopg.Error) as refused:
            insert_as(conn, Identity.user(world.alice), tenant=world.tenant, user=world.alice)
    assert refused.value.sqlstate == "UMQ01"
    assert json.loads(refused.value.diag.message_detail or "")["window_end"] == "infinity"
    assert tenant_events(owner, world.tenant) == 8
    rows = owner.execute(
        "select window_start, window_end::text, used from public.usage_budget_counters where budget_id = %s",
        (budget_id,),
    ).fetchall()
    assert rows == [(created, "infinity", 2)]


def test_a_total_budget_can_be_set_and_listed(owner: psycopg.Connection[Any], world: World) -> None:
    budget = set_budget(owner, tenant_id=world.tenant, metric="events", limit=2, period="total", mode="hard")
    assert (budget.used, budget.window_end) == (Decimal(0), None)
    assert budgets.list_budgets(owner, Identity.service(), tenant_id=world.tenant) == [budget]


def test_a_budget_set_mid_window_starts_from_the_usage_already_stored(
    owner: psycopg.Connection[Any], world: World, app_database_url: str
) -> None:
    for _ in range(3):
        factories.add_event(owner, tenant_id=world.tenant, user_id=world.alice)
    factories.add_event(owner, tenant_id=world.other, user_id=world.bob)  # another tenant's: not counted
    budget = set_budget(owner, tenant_id=world.tenant, metric="events", limit=5, period="month", mode="hard")
    assert (budget.used, budget.remaining) == (Decimal(3), Decimal(2))
    with db.connect_app(app_database_url) as conn:
        for _ in range(2):
            insert_as(conn, Identity.user(world.alice), tenant=world.tenant, user=world.alice)
        with pytest.raises(psycopg.Error) as refused:
            insert_as(conn, Identity.user(world.alice), tenant=world.tenant, user=world.alice)
    assert isinstance(as_refusal(refused.value), errors.QuotaExceeded)
    assert tenant_events(owner, world.tenant) == 5


def test_a_voided_event_frees_quota(owner: psycopg.Connection[Any], world: World, app_database_url: str) -> None:
    budget = set_budget(owner, tenant_id=world.tenant, metric="events", limit=3, period="month", mode="hard")
    first = factories.add_event(owner, tenant_id=world.tenant, user_id=world.alice)
    factories.add_event(owner, tenant_id=world.tenant, user_id=world.alice)
    with db.connect_app(app_database_url) as conn:
        insert_as(conn, Identity.user(world.alice), tenant=world.tenant, user=world.alice)
        with pytest.raises(psycopg.Error):
            insert_as(conn, Identity.user(world.alice), tenant=world.tenant, user=world.alice)
        corrections.void(conn, event_id=first, reason="duplicate")
        [status] = budgets.list_budgets(conn, Identity.user(world.alice), budget_id=budget.id)
        assert status.used == 2
        insert_as(conn, Identity.user(world.alice), tenant=world.tenant, user=world.alice)
        with pytest.raises(psycopg.Error):
            insert_as(conn, Identity.user(world.alice), tenant=world.tenant, user=world.alice)
    assert scalar(owner, "select sum(event_count) from public.usage_events where tenant_id = %s", (world.tenant,)) == 3


# -- soft budgets and alerts -------------------------------------------------------------------


def test_soft_thresholds_fire_once_each_with_twenty_concurrent_writers(
    owner: psycopg.Connection[Any], world: World, app_connections: Callable[[int], list[psycopg.Connection[Any]]]
) -> None:
    budget = set_budget(owner, tenant_id=world.tenant, metric="events", limit=100, period="month", mode="soft")

    def write_six(index: int, conn: psycopg.Connection[Any]) -> None:
        for _ in range(6):
            insert_as(conn, Identity.user(world.alice), tenant=world.tenant, user=world.alice)

    race(app_connections(20), write_six)

    assert tenant_events(owner, world.tenant) == 120  # soft: every write stored, past the limit
    rows = owner.execute(
        "select threshold, used, usage_limit from public.usage_budget_alerts where budget_id = %s order by id",
        (budget.id,),
    ).fetchall()
    assert rows == [(Decimal("0.8"), 80, 100), (Decimal("1.0"), 100, 100)]
    [status] = budgets.list_budgets(owner, Identity.service(), budget_id=budget.id)
    assert (status.used, status.remaining) == (Decimal(120), Decimal(0))


def test_listeners_hear_an_alert_after_commit_and_late_ones_catch_up(
    owner: psycopg.Connection[Any], world: World, app_database_url: str
) -> None:
    budget = set_budget(owner, tenant_id=world.tenant, metric="tokens", limit=100, period="month", mode="soft")
    with db.connect(app_database_url, autocommit=True) as listener, db.connect_app(app_database_url) as writer:
        listener.execute(budget_sql.LISTEN_ALERTS)
        with acting_as(writer, Identity.user(world.alice)):
            writer.execute(INSERT_EVENT, (world.tenant, world.alice, ACTION, 85, 0, "{}"))
            assert list(listener.notifies(timeout=0.3)) == []  # not before the commit
        payloads = [json.loads(p) for p in budgets.listen_for_alerts(listener, timeout=0.5)]
    assert [(p["budget_id"], p["threshold"], p["used"], p["limit"]) for p in payloads] == [
        (str(budget.id), 0.8, 85, 100)
    ]

    factories.add_event(owner, tenant_id=world.tenant, user_id=world.alice, tokens_input=20, tokens_output=0)
    caught_up = budgets.alerts_after(owner, Identity.service())
    assert [(a["threshold"], a["used"]) for a in caught_up] == [("0.8", "85"), ("1", "105")]
    assert caught_up[0]["id"] == payloads[0]["id"]
    later = budgets.alerts_after(owner, Identity.user(world.alice), after_id=caught_up[0]["id"])
    assert [a["id"] for a in later] == [caught_up[1]["id"]]
    assert budgets.alerts_after(owner, Identity.user(world.bob)) == []


# -- check_quota -------------------------------------------------------------------------------


def test_check_quota_answers_and_shows_users_only_their_budgets(owner: psycopg.Connection[Any], world: World) -> None:
    budget = set_budget(owner, tenant_id=world.tenant, metric="events", limit=5, period="month", mode="hard")
    set_budget(owner, tenant_id=world.tenant, metric="tokens", limit=1000, period="day", mode="soft")
    for _ in range(3):
        factories.add_event(owner, tenant_id=world.tenant, user_id=world.alice, tokens_input=400, tokens_output=0)

    fits = budgets.check_quota(owner, Identity.user(world.alice), tenant_id=world.tenant, user_id=world.alice,
                               action=ACTION, events=2, tokens=500)  # fmt: skip
    assert fits.allowed
    assert sorted((b["metric"], b["used"], b["allowed"]) for b in fits.budgets) == [
        ("events", "3", True),
        ("tokens", "1200", True),  # soft: over the limit but allowed
    ]
    too_much = budgets.check_quota(owner, Identity.user(world.alice), tenant_id=world.tenant, user_id=world.alice,
                                   action=ACTION, events=3)  # fmt: skip
    assert not too_much.allowed
    [hard] = [b for b in too_much.budgets if b["metric"] == "events"]
    assert (hard["budget_id"], hard["allowed"], hard["remaining"]) == (str(budget.id), False, "2")
    assert hard["requested"] == "3"
    assert not budgets.check_quota(
        owner, Identity.service(), tenant_id=world.tenant, user_id=world.alice, action=ACTION, events=3
    ).allowed

    outsider = budgets.check_quota(owner, Identity.user(world.bob), tenant_id=world.tenant, user_id=world.alice,
                                   action=ACTION, events=3)  # fmt: skip
    assert outsider.budgets == ()  # RLS: Bob is told nothing about a tenant he is not in


# -- bad input ---------------------------------------------------------------------------------


def budgets_stored(owner: psycopg.Connection[Any]) -> int:
    return int(scalar(owner, "select count(*) from public.usage_budgets"))


def test_a_budget_on_an_unknown_tenant_names_it_and_stores_nothing(owner: psycopg.Connection[Any]) -> None:
    unknown = uuid.uuid4()
    with pytest.raises(errors.BudgetError, match=str(unknown)) as refused:
        set_budget(owner, tenant_id=unknown, metric="events", limit=1, period="month", mode="hard")
    assert "tenant" in str(refused.value)
    assert budgets_stored(owner) == 0


def test_an_unknown_time_zone_is_refused(owner: psycopg.Connection[Any], world: World) -> None:
    with pytest.raises(errors.BudgetError, match="Mars/Olympus_Mons"):
        set_budget(owner, tenant_id=world.tenant, metric="events", limit=1, period="day", time_zone="Mars/Olympus_Mons",
                   mode="hard")  # fmt: skip
    assert budgets_stored(owner) == 0


def test_a_cost_budget_needs_a_currency(world: World) -> None:
    with pytest.raises(pydantic.ValidationError, match="currency"):
        budgets.BudgetSpec(tenant_id=world.tenant, metric="cost", limit=Decimal(10), period="month", mode="hard")


def test_unpriced_tokens_under_a_cost_budget_are_refused_and_nothing_is_stored(
    owner: psycopg.Connection[Any], world: World, app_database_url: str
) -> None:
    load_price(owner, input_per_million=1, output_per_million=1)
    set_budget(owner, tenant_id=world.tenant, metric="cost", limit=Decimal(5), currency="USD", period="month",
               mode="hard")  # fmt: skip
    with usagemeter.Recorder(app_database_url) as recorder:
        alice = recorder.as_user(world.alice)
        with pytest.raises(errors.UnpricedUsage, match="mystery-model"):
            alice.record(action=ACTION, user_id=None, tenant_id=world.tenant, tokens_input=10,
                         metadata={"model": "mystery-model"})  # fmt: skip
        with pytest.raises(errors.UnpricedUsage, match="no model"):
            alice.record(action=ACTION, user_id=None, tenant_id=world.tenant, tokens_input=10)
    assert tenant_events(owner, world.tenant) == 0


# -- row-level security ------------------------------------------------------------------------


def test_members_of_another_tenant_see_no_budgets_counters_or_alerts(
    owner: psycopg.Connection[Any], world: World
) -> None:
    budget = set_budget(owner, tenant_id=world.tenant, metric="events", limit=1, period="month", mode="soft")
    factories.add_event(owner, tenant_id=world.tenant, user_id=world.alice)
    counts = [
        "select count(*) from public.usage_budgets",
        "select count(*) from public.usage_budget_counters",
        "select count(*) from public.usage_budget_alerts",
        "select count(*) from public.usage_budget_status",
    ]
    seen: dict[uuid.UUID, list[int]] = {}
    for user in (world.alice, world.bob):
        with acting_as(owner, Identity.user(user)):
            seen[user] = [int(scalar(owner, query)) for query in counts]
    assert seen[world.alice] == [1, 1, 2, 1]
    assert seen[world.bob] == [0, 0, 0, 0]
    assert budgets.list_budgets(owner, Identity.user(world.bob), tenant_id=world.tenant) == []
    seen_by_alice = budgets.list_budgets(owner, Identity.user(world.alice), tenant_id=world.tenant)
    assert [b.id for b in seen_by_alice] == [budget.id]


@pytest.mark.parametrize(
    "statement",
    [
        "insert into public.usage_budgets (tenant_id, metric, usage_limit, period, mode)"
        " values (%(tenant)s, 'events', 1000000, 'month', 'soft')",
        "update public.usage_budgets set usage_limit = 1000000",
        "delete from public.usage_budgets",
        "update public.usage_budget_counters set used = 0",
    ],
)
def test_users_cannot_write_budgets(owner: psycopg.Connection[Any], world: World, statement: str) -> None:
    set_budget(owner, tenant_id=world.tenant, metric="events", limit=1, period="month", mode="hard")
    with pytest.raises(pgerrors.InsufficientPrivilege), acting_as(owner, Identity.user(world.alice)):
        owner.execute(statement.encode(), {"tenant": world.tenant})
    assert scalar(owner, "select usage_limit from public.usage_budgets") == 1
    assert budgets_stored(owner) == 1
