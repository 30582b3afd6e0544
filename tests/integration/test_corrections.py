"""Corrections on real PostgreSQL: voids and amendments as ledger entries, who may write them, and races."""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import errors as pgerrors

from tests import factories
from usagemeter import db, errors
from usagemeter.billing import corrections
from usagemeter.db import Identity, acting_as
from usagemeter.reporting import rollup_check, summaries

AT = datetime(2026, 6, 1, 12, tzinfo=UTC)
MODEL = "gpt-test"


@dataclass(frozen=True)
class World:
    tenant: uuid.UUID
    alice: uuid.UUID  # a member of tenant
    bob: uuid.UUID  # a member of another tenant


@pytest.fixture
def world(owner: psycopg.Connection[Any]) -> World:
    return make_world(owner)


def make_world(owner: psycopg.Connection[Any]) -> World:
    """A tenant with its member Alice, Bob in another tenant, and a token price for MODEL from 2026-01-01."""
    tenant, other = factories.add_tenant(owner), factories.add_tenant(owner)
    alice, bob = factories.add_user(owner), factories.add_user(owner)
    factories.add_member(owner, tenant, alice)
    factories.add_member(owner, other, bob)
    load_price(owner, effective_from=datetime(2026, 1, 1, tzinfo=UTC), input_per_million=3, output_per_million=15)
    return World(tenant=tenant, alice=alice, bob=bob)


def load_price(
    owner: psycopg.Connection[Any], *, effective_from: datetime, input_per_million: int, output_per_million: int
) -> None:
    owner.execute(
        "insert into public.usage_prices (model, currency, input_per_million, output_per_million, effective_from)"
        " values (%s, 'USD', %s, %s, %s)",
        (MODEL, input_per_million, output_per_million, effective_from),
    )


def add_event(
    owner: psycopg.Connection[Any], world: World, *, tokens_input: int, tokens_output: int, at: datetime = AT
) -> uuid.UUID:
    row = owner.execute(
        "insert into public.usage_events"
        " (tenant_id, user_id, action, tokens_input, tokens_output, metadata, created_at)"
        " values (%s, %s, 'agency:scope:generate', %s, %s, jsonb_build_object('model', %s::text), %s) returning id",
        (world.tenant, world.alice, tokens_input, tokens_output, MODEL, at),
    ).fetchone()
    assert row is not None
    event_id: uuid.UUID = row[0]
    return event_id


def ledger(owner: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    """Every row of usage_events, as the owner sees it: to show that a refusal changed nothing."""
    return owner.execute("select * from public.usage_events order by id").fetchall()


def summary(owner: psycopg.Connection[Any], world: World) -> tuple[int, int, int]:
    """The tenant's (events, tokens_input, tokens_output) in June 2026, from summaries as the service role."""
    query = summaries.SummaryQuery(
        scope="tenant",
        tenant_id=world.tenant,
        start=datetime(2026, 6, 1, tzinfo=UTC),
        end=datetime(2026, 7, 1, tzinfo=UTC),
    )
    [row] = summaries.summarize(owner, Identity.service(), query)
    return row.events, row.tokens_input, row.tokens_output


def total_cost(owner: psycopg.Connection[Any], world: World) -> Decimal:
    row = owner.execute(
        "select coalesce(sum(cost), 0) from public.usage_events where tenant_id = %s", (world.tenant,)
    ).fetchone()
    assert row is not None
    cost: Decimal = row[0]
    return cost


def test_a_void_takes_the_event_back_and_keeps_it_for_audit(owner: psycopg.Connection[Any], world: World) -> None:
    event = add_event(owner, world, tokens_input=1_000_000, tokens_output=100_000)
    kept = add_event(owner, world, tokens_input=10, tokens_output=1)
    [original] = owner.execute("select * from public.usage_events where id = %s", (event,)).fetchall()
    assert summary(owner, world) == (2, 1_000_010, 100_001)
    assert total_cost(owner, world) == Decimal("4.500045")

    entry = corrections.void(owner, event_id=event, reason="  a duplicate of a retried call ")

    assert entry.kind == "void"
    assert (entry.event_id, entry.event_count, entry.reason) == (event, -1, "a duplicate of a retried call")
    assert (entry.tokens_input, entry.tokens_output, entry.cost) == (-1_000_000, -100_000, Decimal("-4.5"))
    assert summary(owner, world) == (1, 10, 1)
    assert total_cost(owner, world) == Decimal("0.000045")
    assert rollup_check.differences(owner) == 0
    rollup_check.fold(owner)
    assert rollup_check.differences(owner) == 0
    assert owner.execute("select * from public.usage_events where id = %s", (event,)).fetchall() == [original]

    seen = corrections.history(owner, Identity.user(world.alice), event)  # a member reads both, under RLS
    assert seen.event.id == event
    assert (seen.event.tokens_input, seen.event.tokens_output, seen.event.cost) == (1_000_000, 100_000, Decimal("4.5"))
    assert seen.event.created_at == AT
    assert seen.corrections == (entry,)
    assert (seen.events, seen.tokens_input, seen.tokens_output, seen.cost, seen.void) == (0, 0, 0, Decimal(0), True)
    assert corrections.history(owner, Identity.user(world.alice), entry.entry_id) == seen  # from the entry's id too
    assert corrections.history(owner, Identity.user(world.alice), kept).corrections == ()
    with acting_as(owner, Identity.user(world.alice)):
        rows = owner.execute(
            "select id, corrects_event_id, correction_kind, event_count, created_at from public.usage_events"
            " where id = %s or corrects_event_id = %s order by event_count desc",
            (event, event),
        ).fetchall()
    assert rows == [(event, None, None, 1, AT), (entry.entry_id, event, "void", -1, AT)]


def test_another_tenants_member_sees_no_history(owner: psycopg.Connection[Any], world: World) -> None:
    event = add_event(owner, world, tokens_input=1, tokens_output=1)
    corrections.void(owner, event_id=event, reason="test")
    with pytest.raises(errors.EventNotFound, match=str(event)):
        corrections.history(owner, Identity.user(world.bob), event)
    with pytest.raises(errors.EventNotFound):
        corrections.history(owner, Identity.service(), uuid.uuid4())


def test_an_amendment_sets_the_counts_and_reprices_them_at_the_events_time(
    owner: psycopg.Connection[Any], world: World
) -> None:
    event = add_event(owner, world, tokens_input=1_000_000, tokens_output=0)  # 3 at June's price
    load_price(owner, effective_from=datetime(2026, 6, 15, tzinfo=UTC), input_per_million=100, output_per_million=500)
    assert total_cost(owner, world) == Decimal(3)

    entry = corrections.amend(
        owner, event_id=event, tokens_input=2_000_000, tokens_output=1_000_000, reason="undercount"
    )

    # 2M in at 3 and 1M out at 15 (the price of June 1st, not the later one): 21, so the entry carries +18.
    assert (entry.kind, entry.event_count) == ("amend", 0)
    assert (entry.tokens_input, entry.tokens_output, entry.cost) == (1_000_000, 1_000_000, Decimal(18))
    assert summary(owner, world) == (1, 2_000_000, 1_000_000)
    assert total_cost(owner, world) == Decimal(21)
    assert rollup_check.differences(owner) == 0

    lower = corrections.amend(owner, event_id=event, tokens_input=5, tokens_output=0, reason="overcount after all")
    assert (lower.tokens_input, lower.tokens_output, lower.cost) == (-1_999_995, -1_000_000, Decimal("-20.999985"))
    assert summary(owner, world) == (1, 5, 0)
    assert total_cost(owner, world) == Decimal("0.000015")
    history = corrections.history(owner, Identity.service(), event)
    assert history.corrections == (entry, lower)
    assert (history.events, history.tokens_input, history.tokens_output, history.cost) == (1, 5, 0, Decimal("0.000015"))


def test_an_amendment_repeated_after_a_lost_answer_changes_nothing_more(
    owner: psycopg.Connection[Any], world: World
) -> None:
    event = add_event(owner, world, tokens_input=10, tokens_output=10)
    corrections.amend(owner, event_id=event, tokens_input=20, tokens_output=5, reason="fix")
    again = corrections.amend(owner, event_id=event, tokens_input=20, tokens_output=5, reason="fix")
    assert (again.tokens_input, again.tokens_output, again.cost) == (0, 0, Decimal(0))
    assert summary(owner, world) == (1, 20, 5)


def test_a_void_amended_event_is_taken_back_whole(owner: psycopg.Connection[Any], world: World) -> None:
    event = add_event(owner, world, tokens_input=10, tokens_output=10)
    corrections.amend(owner, event_id=event, tokens_input=1_000_000, tokens_output=10, reason="fix")
    entry = corrections.void(owner, event_id=event, reason="not ours after all")
    assert (entry.tokens_input, entry.tokens_output, entry.cost) == (-1_000_000, -10, Decimal("-3.000150"))
    assert summary(owner, world) == (0, 0, 0)
    assert total_cost(owner, world) == 0


@pytest.mark.parametrize(
    ("first", "then", "message"),
    [
        ("void", "void", "is already void"),
        ("void", "amend", "is void; it cannot be amended"),
    ],
)
def test_a_void_event_takes_no_more_corrections(
    owner: psycopg.Connection[Any], world: World, first: str, then: str, message: str
) -> None:
    event = add_event(owner, world, tokens_input=10, tokens_output=10)
    correct(owner, first, event)
    before = ledger(owner)
    with pytest.raises(errors.CorrectionRefused, match=message) as refused:
        correct(owner, then, event)
    assert refused.value.sqlstate == "22023"
    assert ledger(owner) == before


@pytest.mark.parametrize("kind", ["void", "amend"])
def test_a_correction_entry_is_never_corrected(owner: psycopg.Connection[Any], world: World, kind: str) -> None:
    event = add_event(owner, world, tokens_input=10, tokens_output=10)
    entry = corrections.amend(owner, event_id=event, tokens_input=1, tokens_output=1, reason="fix")
    before = ledger(owner)
    with pytest.raises(errors.CorrectionRefused, match="correct the event itself"):
        correct(owner, kind, entry.entry_id)
    assert ledger(owner) == before


@pytest.mark.parametrize("kind", ["void", "amend"])
def test_an_unknown_event_is_not_found_and_nothing_changes(
    owner: psycopg.Connection[Any], world: World, kind: str
) -> None:
    add_event(owner, world, tokens_input=10, tokens_output=10)
    before, unknown = ledger(owner), uuid.uuid4()
    with pytest.raises(errors.EventNotFound, match=f"no usage event has id {unknown}") as missing:
        correct(owner, kind, unknown)
    assert missing.value.event_id == unknown
    assert ledger(owner) == before


@pytest.mark.parametrize("kind", ["void", "amend"])
@pytest.mark.parametrize("who", ["member", "anon"])
def test_only_the_service_role_corrects(owner: psycopg.Connection[Any], world: World, kind: str, who: str) -> None:
    event = add_event(owner, world, tokens_input=10, tokens_output=10)
    identity = Identity.user(world.alice) if who == "member" else Identity.anon()
    before = ledger(owner)
    with pytest.raises(errors.PermissionDenied, match=r"^only the service role may void or amend usage$"):
        correct(owner, kind, event, identity=identity)
    assert ledger(owner) == before
    assert factories.count_events(owner) == 1


def test_a_user_cannot_write_corrections_or_change_events_directly(
    owner: psycopg.Connection[Any], world: World
) -> None:
    event = add_event(owner, world, tokens_input=10, tokens_output=10)
    before = ledger(owner)
    statements = [
        (
            "insert into public.usage_events (tenant_id, user_id, action, tokens_input, tokens_output,"
            " corrects_event_id, correction_kind, correction_reason)"
            " values (%(tenant)s, %(alice)s, 'agency:scope:generate', 0, 0, %(event)s, 'void', 'mine')"
        ),
        "insert into public.usage_events (tenant_id, user_id, action, correction_kind)"
        " values (%(tenant)s, %(alice)s, 'agency:scope:generate', 'amend')",
        "update public.usage_events set tokens_input = 0 where id = %(event)s",
        "update public.usage_events set correction_kind = 'void' where id = %(event)s",
        "delete from public.usage_events where id = %(event)s",
    ]
    for statement in statements:
        with (
            pytest.raises(pgerrors.InsufficientPrivilege, match="permission denied for table usage_events"),
            acting_as(owner, Identity.user(world.alice)),
        ):
            owner.execute(statement, {"tenant": world.tenant, "alice": world.alice, "event": event})
    assert ledger(owner) == before


def test_through_the_app_login_as_the_service_role(app_database_url: str, owner: psycopg.Connection[Any]) -> None:
    world = make_world(owner)
    event = add_event(owner, world, tokens_input=10, tokens_output=10)
    with db.connect_app(app_database_url) as conn:
        entry = corrections.void(conn, event_id=event, reason="app login")
        with pytest.raises(errors.PermissionDenied):
            corrections.amend(
                conn, event_id=event, tokens_input=1, tokens_output=1, reason="x", identity=Identity.user(world.alice)
            )
        assert corrections.history(conn, Identity.user(world.alice), event).corrections == (entry,)


def test_ten_racing_voids_store_exactly_one(app_database_url: str, owner: psycopg.Connection[Any]) -> None:
    world = make_world(owner)
    event = add_event(owner, world, tokens_input=10, tokens_output=10)
    racers = 10
    start = threading.Barrier(racers)
    outcomes: list[object] = []
    lock = threading.Lock()

    def race(conn: psycopg.Connection[Any]) -> None:
        start.wait(timeout=30)
        try:
            outcome: object = corrections.void(conn, event_id=event, reason="race")
        except errors.UsagemeterError as failure:
            outcome = failure
        with lock:
            outcomes.append(outcome)

    connections = [db.connect_app(app_database_url) for _ in range(racers)]
    try:
        threads = [threading.Thread(target=race, args=(conn,)) for conn in connections]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert not any(thread.is_alive() for thread in threads)
    finally:
        for conn in connections:
            conn.close()

    voids = [o for o in outcomes if isinstance(o, corrections.Correction)]
    refused = [o for o in outcomes if isinstance(o, errors.CorrectionRefused)]
    assert (len(voids), len(refused)) == (1, racers - 1), outcomes
    assert all("is already void" in str(r) for r in refused)
    row = owner.execute(
        "select count(*) from public.usage_events where corrects_event_id = %s and correction_kind = 'void'", (event,)
    ).fetchone()
    assert row == (1,)
    assert summary(owner, world) == (0, 0, 0)
    assert rollup_check.differences(owner) == 0


def correct(
    conn: psycopg.Connection[Any], kind: str, event_id: uuid.UUID, *, identity: Identity | None = None
) -> corrections.Correction:
    if kind == "void":
        return corrections.void(conn, event_id=event_id, reason="test", identity=identity)
    return corrections.amend(conn, event_id=event_id, tokens_input=7, tokens_output=3, reason="test", identity=identity)


# Property: any sequence of amendments and voids leaves summaries and costs at the hand-computed net totals.

token_counts = st.integers(0, 5_000_000)
operations = st.lists(
    st.one_of(
        st.tuples(st.just("void"), st.integers(0, 2), st.just(0), st.just(0)),
        st.tuples(st.just("amend"), st.integers(0, 2), token_counts, token_counts),
    ),
    max_size=12,
)


def cost_of(tokens_input: int, tokens_output: int) -> Decimal:
    """At the fixture's price (3 and 15 per million), exact in 6 decimal places."""
    return (Decimal(tokens_input) * 3 + Decimal(tokens_output) * 15) / 1_000_000


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    initial=st.lists(st.tuples(token_counts, token_counts), min_size=3, max_size=3),
    ops=operations,
)
def test_summaries_and_costs_equal_the_net_of_any_corrections(
    owner: psycopg.Connection[Any], initial: list[tuple[int, int]], ops: list[tuple[str, int, int, int]]
) -> None:
    with owner.transaction(force_rollback=True):
        world = make_world(owner)
        events = [add_event(owner, world, tokens_input=i, tokens_output=o) for i, o in initial]
        now: list[tuple[int, int] | None] = list(initial)  # None: void
        for kind, index, tokens_input, tokens_output in ops:
            if now[index] is None:
                with pytest.raises(errors.CorrectionRefused):
                    correct_to(owner, kind, events[index], tokens_input, tokens_output)
                continue
            correct_to(owner, kind, events[index], tokens_input, tokens_output)
            now[index] = None if kind == "void" else (tokens_input, tokens_output)

        alive = [counts for counts in now if counts is not None]
        assert summary(owner, world) == (len(alive), sum(i for i, _ in alive), sum(o for _, o in alive))
        assert total_cost(owner, world) == sum((cost_of(i, o) for i, o in alive), Decimal(0))
        assert rollup_check.differences(owner) == 0
        for event, counts in zip(events, now, strict=True):
            history = corrections.history(owner, Identity.user(world.alice), event)
            expected = (0, 0, 0, Decimal(0)) if counts is None else (1, *counts, cost_of(*counts))
            assert (history.events, history.tokens_input, history.tokens_output, history.cost) == expected


def correct_to(
    conn: psycopg.Connection[Any], kind: str, event_id: uuid.UUID, tokens_input: int, tokens_output: int
) -> corrections.Correction:
    if kind == "void":
        return corrections.void(conn, event_id=event_id, reason="property")
    return corrections.amend(
        conn, event_id=event_id, tokens_input=tokens_input, tokens_output=tokens_output, reason="property"
    )


def test_a_summary_window_sees_corrections_at_the_events_time(owner: psycopg.Connection[Any], world: World) -> None:
    """An entry is dated at its event's created_at, so a past month's summary shows the correction."""
    event = add_event(owner, world, tokens_input=10, tokens_output=10, at=AT - timedelta(days=40))
    corrections.void(owner, event_id=event, reason="old")
    query = summaries.SummaryQuery(scope="tenant", tenant_id=world.tenant, start=AT - timedelta(days=60), end=AT)
    [row] = summaries.summarize(owner, Identity.service(), query)
    assert (row.events, row.tokens_input) == (0, 0)


def test_a_summary_read_from_raw_events_counts_a_void(owner: psycopg.Connection[Any], world: World) -> None:
    """A range that starts and ends inside hours reads raw events there: a void counts -1 there too."""
    event = add_event(owner, world, tokens_input=10, tokens_output=10, at=AT + timedelta(minutes=30))
    corrections.void(owner, event_id=event, reason="raw")
    query = summaries.SummaryQuery(
        scope="tenant", tenant_id=world.tenant, start=AT + timedelta(minutes=10), end=AT + timedelta(minutes=50)
    )
    assert summaries.source_plan(query).parts == ["raw"]
    [row] = summaries.summarize(owner, Identity.service(), query)
    assert (row.events, row.tokens_input, row.tokens_output) == (0, 0, 0)
