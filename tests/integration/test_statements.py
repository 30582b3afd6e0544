"""Statements on real PostgreSQL: totals equal a hand computation, reproducible bytes, zones, closing, RLS."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import errors as pgerrors

from tests import factories
from usagemeter import db, errors
from usagemeter.billing import statements
from usagemeter.db import Identity, acting_as
from usagemeter.reporting import summaries

MODELS = ("model-a", "model-b")
ACTIONS = ("agency:scope:generate", "chat:message:send")
# The property test's month; closing needs a month that has ended, so those tests use months before now.
MONTH, MONTH_START, MONTH_END = "2026-05", datetime(2026, 5, 1, tzinfo=UTC), datetime(2026, 6, 1, tzinfo=UTC)
MONTH_HOURS = 31 * 24
BEFORE_ANY_MONTH = datetime(2026, 1, 1, tzinfo=UTC)
CLOSED, CLOSED_START = "2026-09", datetime(2026, 9, 1, tzinfo=UTC)
NEXT, NEXT_START = "2026-10", datetime(2026, 10, 1, tzinfo=UTC)
MICRO = Decimal("0.000001")


# Arranging ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Price:
    model: str
    tenant_id: uuid.UUID | None
    effective_from: datetime
    input_per_million: Decimal
    output_per_million: Decimal
    cached_input_per_million: Decimal | None = None
    cache_write_per_million: Decimal | None = None


def load_price(owner: psycopg.Connection[Any], price: Price) -> None:
    owner.execute(
        "insert into public.usage_prices (model, tenant_id, currency, input_per_million, output_per_million,"
        " cached_input_per_million, cache_write_per_million, effective_from)"
        " values (%s, %s, 'USD', %s, %s, %s, %s, %s)",
        (price.model, price.tenant_id, price.input_per_million, price.output_per_million,
         price.cached_input_per_million, price.cache_write_per_million, price.effective_from),
    )  # fmt: skip


def record(
    conn: psycopg.Connection[Any],
    *,
    tenant_id: uuid.UUID | None,
    user_id: uuid.UUID | None,
    at: datetime,
    tokens_input: int,
    tokens_output: int,
    model: str = MODELS[0],
    action: str = ACTIONS[0],
    cached: int = 0,
    cache_write: int = 0,
) -> uuid.UUID:
    """An event written as the service role (which may date it), as a backend records usage."""
    metadata: dict[str, Any] = {"model": model}
    if cached:
        metadata["tokens_cached_input"] = cached
    if cache_write:
        metadata["tokens_cache_write"] = cache_write
    # The id is chosen here: an entry booked into another month is written again by the database,
    # so RETURNING would not show it.
    event_id = uuid.uuid4()
    with acting_as(conn, Identity.service()):
        conn.execute(
            "insert into public.usage_events"
            " (id, tenant_id, user_id, action, tokens_input, tokens_output, metadata, created_at)"
            " values (%s, %s, %s, %s, %s, %s, %s, %s)",
            (event_id, tenant_id, user_id, action, tokens_input, tokens_output, json.dumps(metadata), at),
        )
    return event_id


def void(conn: psycopg.Connection[Any], event_id: uuid.UUID) -> uuid.UUID:
    with acting_as(conn, Identity.service()):
        row = conn.execute("select public.void_usage_event_v1(%s, 'test void')", (event_id,)).fetchone()
    assert row is not None
    entry: uuid.UUID = row[0]
    return entry


def amend(conn: psycopg.Connection[Any], event_id: uuid.UUID, tokens_input: int, tokens_output: int) -> uuid.UUID:
    with acting_as(conn, Identity.service()):
        row = conn.execute(
            "select public.amend_usage_event_v1(%s, %s, %s, 'test amend')", (event_id, tokens_input, tokens_output)
        ).fetchone()
    assert row is not None
    entry: uuid.UUID = row[0]
    return entry


def month_summary_cost(
    conn: psycopg.Connection[Any], *, tenant_id: uuid.UUID | None = None, user_id: uuid.UUID | None = None,
    start: datetime, end: datetime,
) -> tuple[int, Decimal]:  # fmt: skip
    """(events, cost) of the scope over [start, end) from summaries, as the service role, no grouping."""
    query = summaries.SummaryQuery(
        scope="tenant" if tenant_id else "user", tenant_id=tenant_id, user_id=user_id, start=start, end=end
    )
    rows = summaries.summarize(conn, Identity.service(), query)
    return sum(r.events for r in rows), sum((r.cost for r in rows), Decimal(0))


# The hand computation ---------------------------------------------------------------------------------


def price_in_effect(prices: list[Price], *, tenant_id: uuid.UUID | None, model: str, at: datetime) -> Price | None:
    """The tenant's own latest price at `at` when it has one, else the latest general one."""
    applicable = [p for p in prices if p.model == model and p.effective_from <= at]
    own = [p for p in applicable if tenant_id is not None and p.tenant_id == tenant_id]
    general = [p for p in applicable if p.tenant_id is None]
    chosen = own or general
    return max(chosen, key=lambda p: p.effective_from) if chosen else None


def hand_cost(price: Price | None, *, tokens_input: int, tokens_output: int, cached: int, cache_write: int) -> Decimal:
    """Tokens times the price per million, cached parts at their rates, rounded half away from zero to 6 dp."""
    if price is None:
        return Decimal(0)
    cached = min(max(cached, 0), tokens_input)
    cache_write = min(max(cache_write, 0), tokens_input - cached)
    cached_rate = price.input_per_million if price.cached_input_per_million is None else price.cached_input_per_million
    write_rate = price.input_per_million if price.cache_write_per_million is None else price.cache_write_per_million
    exact = (
        (tokens_input - cached - cache_write) * price.input_per_million
        + cached * cached_rate
        + cache_write * write_rate
        + tokens_output * price.output_per_million
    ) / Decimal(1_000_000)
    return exact.quantize(MICRO, rounding=ROUND_HALF_UP)


# 1. Property: the statement's total is the hand-computed sum --------------------------------------------

money = st.integers(0, 30_000_000).map(lambda n: Decimal(n).scaleb(-6))
hour_in_month = st.integers(0, MONTH_HOURS - 1)


@st.composite
def price_lists(draw: st.DrawFn, tenant_id: uuid.UUID) -> list[Price]:
    """General prices of both models from before the month plus 1-3 changes inside it; a tenant override of one."""
    prices: list[Price] = []

    def priced(model: str, tenant: uuid.UUID | None, at: datetime) -> Price:
        return Price(model, tenant, at, draw(money), draw(money), draw(st.none() | money), draw(st.none() | money))

    for model in MODELS:
        prices.append(priced(model, None, BEFORE_ANY_MONTH))
        for hour in draw(st.lists(hour_in_month, min_size=1, max_size=3, unique=True)):
            prices.append(priced(model, None, MONTH_START + timedelta(hours=hour)))
    overridden = draw(st.sampled_from(MODELS))
    override_hours = draw(st.lists(st.none() | hour_in_month, min_size=1, max_size=2, unique=True))
    for override_hour in override_hours:  # None: in effect from before the month
        at = BEFORE_ANY_MONTH if override_hour is None else MONTH_START + timedelta(hours=override_hour)
        prices.append(priced(overridden, tenant_id, at))
    return prices


@dataclass(frozen=True)
class PlannedEvent:
    model: str
    action: str
    at: datetime
    tokens_input: int
    tokens_output: int
    cached: int
    cache_write: int
    noise: bool  # in another tenant: never on the statement


@st.composite
def planned_events(draw: st.DrawFn) -> PlannedEvent:
    tokens_input = draw(st.integers(0, 2_000_000))
    cached = draw(st.integers(0, tokens_input))
    cache_write = draw(st.integers(0, tokens_input - cached))
    minute = draw(st.sampled_from([0, 0, 17, 59]))  # on the hour often: prices change on the hour
    return PlannedEvent(
        model=draw(st.sampled_from(MODELS)),
        action=draw(st.sampled_from(ACTIONS)),
        at=MONTH_START + timedelta(hours=draw(hour_in_month), minutes=minute),
        tokens_input=tokens_input,
        tokens_output=draw(st.integers(0, 500_000)),
        cached=cached,
        cache_write=cache_write,
        noise=draw(st.integers(0, 4)) == 0,
    )


corrections_planned = st.lists(
    st.one_of(
        st.tuples(st.just("void"), st.integers(0, 14), st.just(0), st.just(0)),
        st.tuples(st.just("amend"), st.integers(0, 14), st.integers(0, 2_000_000), st.integers(0, 500_000)),
    ),
    max_size=8,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), events=st.lists(planned_events(), min_size=1, max_size=15), ops=corrections_planned)
def test_the_total_is_the_hand_computed_sum_of_the_events(
    owner: psycopg.Connection[Any],
    data: st.DataObject,
    events: list[PlannedEvent],
    ops: list[tuple[str, int, int, int]],
) -> None:
    with owner.transaction(force_rollback=True):
        tenant, other = factories.add_tenant(owner), factories.add_tenant(owner)
        user = factories.add_user(owner)
        factories.add_member(owner, tenant, user)
        prices = data.draw(price_lists(tenant))
        for price in prices:
            load_price(owner, price)

        ids = []
        for e in events:
            ids.append(record(owner, tenant_id=other if e.noise else tenant, user_id=user, at=e.at, model=e.model,
                              action=e.action, tokens_input=e.tokens_input, tokens_output=e.tokens_output,
                              cached=e.cached, cache_write=e.cache_write))  # fmt: skip
        counts: list[tuple[int, int] | None] = [(e.tokens_input, e.tokens_output) for e in events]  # None: void
        for kind, index, tokens_input, tokens_output in ops:
            if index >= len(events):
                continue
            if counts[index] is None:  # a void event takes no further correction
                with pytest.raises(pgerrors.InvalidParameterValue):
                    (void(owner, ids[index]) if kind == "void" else amend(owner, ids[index], 1, 1))
                continue
            if kind == "void":
                void(owner, ids[index])
                counts[index] = None
            else:
                amend(owner, ids[index], tokens_input, tokens_output)
                counts[index] = (tokens_input, tokens_output)

        expected, alive = Decimal(0), 0
        for e, now in zip(events, counts, strict=True):
            if e.noise or now is None:
                continue
            alive += 1
            in_effect = price_in_effect(prices, tenant_id=tenant, model=e.model, at=e.at)
            expected += hand_cost(in_effect, tokens_input=now[0], tokens_output=now[1], cached=e.cached,
                                  cache_write=e.cache_write)  # fmt: skip

        found = statements.statement(owner, Identity.service(), tenant_id=tenant, month=MONTH)
        assert found.total == expected
        assert found.total == sum((line.amount for line in found.lines), Decimal(0))
        assert Decimal(found.as_json()["total"]) == expected
        assert month_summary_cost(owner, tenant_id=tenant, start=MONTH_START, end=MONTH_END) == (alive, expected)
        assert sum(line.events for line in found.lines) == alive
        voids = sum(1 for e, now in zip(events, counts, strict=True) if not e.noise and now is None)
        assert alive == sum(1 for e in events if not e.noise) - voids
        assert not found.final


# 2. Reproducible bytes ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class World:
    tenant: uuid.UUID
    alice: uuid.UUID  # a member of tenant
    bob: uuid.UUID  # a member of another tenant only
    personal: uuid.UUID  # a user with personal usage only


@pytest.fixture
def world(owner: psycopg.Connection[Any]) -> World:
    tenant, other = factories.add_tenant(owner), factories.add_tenant(owner)
    alice, bob, personal = factories.add_user(owner), factories.add_user(owner), factories.add_user(owner)
    factories.add_member(owner, tenant, alice)
    factories.add_member(owner, other, bob)
    load_price(owner, Price(MODELS[0], None, BEFORE_ANY_MONTH, Decimal("2.5"), Decimal("10"), Decimal("1.25")))
    load_price(owner, Price(MODELS[1], None, BEFORE_ANY_MONTH, Decimal("0.15"), Decimal("0.6")))
    load_price(owner, Price(MODELS[0], None, NEXT_START, Decimal("3"), Decimal("12")))  # dearer from October
    return World(tenant, alice, bob, personal)


def fill_month(owner: psycopg.Connection[Any], world: World, start: datetime) -> list[uuid.UUID]:
    """A month of varied usage for the tenant (both models, both actions, cached input), one void, one amendment."""
    ids = [
        record(owner, tenant_id=world.tenant, user_id=world.alice, at=start + timedelta(days=day, hours=day % 24),
               model=MODELS[day % 2], action=ACTIONS[day % 3 % 2], tokens_input=1_000 * day + 7,
               tokens_output=333 * day, cached=100 * day)
        for day in range(1, 25)
    ]  # fmt: skip
    void(owner, ids[3])
    amend(owner, ids[5], 12_345, 678)
    return ids


@pytest.fixture
def app(app_database_url: str) -> Iterator[psycopg.Connection[Any]]:
    """A connection as `authenticator`, as the CLI and the API make statements."""
    with db.connect(app_database_url, autocommit=True) as conn:
        yield conn


def test_the_same_data_gives_the_same_bytes_before_and_after_a_fold(
    owner: psycopg.Connection[Any], app: psycopg.Connection[Any], world: World
) -> None:
    fill_month(owner, world, CLOSED_START)
    first = statements.statement(app, Identity.service(), tenant_id=world.tenant, month=CLOSED)
    again = statements.statement(app, Identity.service(), tenant_id=world.tenant, month=CLOSED)
    assert len(first.lines) == 4
    assert first.adjustments
    assert (first.to_json(), first.to_csv()) == (again.to_json(), again.to_csv())

    folded = owner.execute("select usagemeter_private.fold_usage_rollups_v1()").fetchone()
    assert folded is not None
    assert folded[0] > 0
    assert owner.execute("select count(*) from public.usage_rollup_deltas").fetchone() == (0,)
    after = statements.statement(app, Identity.service(), tenant_id=world.tenant, month=CLOSED)
    assert (after.to_json(), after.to_csv()) == (first.to_json(), first.to_csv())


def test_the_bytes_do_not_depend_on_the_session_time_zone(
    owner: psycopg.Connection[Any], app_database_url: str, world: World
) -> None:
    fill_month(owner, world, CLOSED_START)
    texts = []
    for zone in ("UTC", "Asia/Tokyo"):
        with db.connect(app_database_url, autocommit=True) as conn:
            conn.execute("select set_config('TimeZone', %s, false)", (zone,))
            texts.append(statements.statement(conn, Identity.service(), tenant_id=world.tenant, month=CLOSED).to_json())
    assert texts[0] == texts[1]


# 3. Local month bounds ------------------------------------------------------------------------------------


def test_a_statement_in_a_zone_covers_the_local_month(owner: psycopg.Connection[Any], world: World) -> None:
    """2026-03-31T22:30Z is 00:30 on 1 April in Paris (CEST): April there, March in UTC."""
    record(owner, tenant_id=world.tenant, user_id=world.alice, at=datetime(2026, 3, 31, 22, 30, tzinfo=UTC),
           tokens_input=1_000_000, tokens_output=0)  # fmt: skip

    def events(month: str, tz: str) -> int:
        found = statements.statement(owner, Identity.service(), tenant_id=world.tenant, month=month, tz=tz)
        return sum(line.events for line in found.lines)

    assert (events("2026-03", "UTC"), events("2026-04", "UTC")) == (1, 0)
    assert (events("2026-03", "Europe/Paris"), events("2026-04", "Europe/Paris")) == (0, 1)
    april = statements.statement(owner, Identity.service(), tenant_id=world.tenant, month="2026-04", tz="Europe/Paris")
    assert april.as_json()["period"] == {"from": "2026-04-01T00:00:00+02:00", "to": "2026-05-01T00:00:00+02:00"}
    assert april.total == Decimal("2.500000")
    march = statements.statement(owner, Identity.service(), tenant_id=world.tenant, month="2026-03", tz="Europe/Paris")
    assert march.as_json()["period"] == {"from": "2026-03-01T00:00:00+01:00", "to": "2026-04-01T00:00:00+02:00"}


@pytest.mark.parametrize(
    ("month", "tz", "message"),
    [("2026-13", "UTC", "YYYY-MM"), ("2026-1", "UTC", "YYYY-MM"), ("2026-05", "Mars/Olympus", "Mars/Olympus")],
)
def test_a_bad_month_or_zone_is_a_statement_error(
    owner: psycopg.Connection[Any], world: World, month: str, tz: str, message: str
) -> None:
    with pytest.raises(errors.StatementError, match=message):
        statements.statement(owner, Identity.service(), tenant_id=world.tenant, month=month, tz=tz)
    with pytest.raises(errors.StatementError, match=message):
        statements.close_statement(owner, tenant_id=world.tenant, month=month, tz=tz)


# 4. Closing -----------------------------------------------------------------------------------------------


def ledger(owner: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    return owner.execute("select * from public.usage_events order by id").fetchall()


def test_a_closed_month_is_final_and_late_entries_go_to_the_next(
    owner: psycopg.Connection[Any], app: psycopg.Connection[Any], world: World
) -> None:
    ids = fill_month(owner, world, CLOSED_START)
    personal = record(owner, tenant_id=None, user_id=world.alice, at=CLOSED_START + timedelta(days=2),
                      tokens_input=5, tokens_output=5)  # fmt: skip
    open_before = statements.statement(app, Identity.service(), tenant_id=world.tenant, month=CLOSED)
    assert not open_before.final

    closed = statements.close_statement(app, tenant_id=world.tenant, month=CLOSED)
    assert closed.final
    assert (closed.lines, closed.total) == (open_before.lines, open_before.total)
    stored = owner.execute(
        "select period_start, period_end, time_zone, statement from public.usage_closed_periods where tenant_id = %s",
        (world.tenant,),
    ).fetchall()
    assert [row[:3] for row in stored] == [(CLOSED_START, NEXT_START, "UTC")]
    assert stored[0][3]["final"] is True
    shown = statements.statement(app, Identity.service(), tenant_id=world.tenant, month=CLOSED)
    assert shown.final
    assert (shown.lines, shown.total) == (closed.lines, closed.total)
    before = (shown.to_json(), shown.to_csv())
    september_summary = month_summary_cost(owner, tenant_id=world.tenant, start=CLOSED_START, end=NEXT_START)

    # A late event: booked at the start of October, priced there, when it happened kept.
    happened = CLOSED_START + timedelta(days=14, hours=12)
    late = record(app, tenant_id=world.tenant, user_id=world.alice, at=happened, tokens_input=1_000_000,
                  tokens_output=1_000_000)  # fmt: skip
    row = owner.execute("select created_at, occurred_at, cost from public.usage_events where id = %s", (late,))
    assert row.fetchone() == (NEXT_START, happened, Decimal("15.000000"))  # October's price: 3 + 12

    # A void of a September event: booked in October, naming the event.
    voided = ids[10]
    entry = void(app, voided)
    row = owner.execute(
        "select created_at, occurred_at, corrects_event_id, correction_kind from public.usage_events where id = %s",
        (entry,),
    )
    original_at = CLOSED_START + timedelta(days=11, hours=11)
    assert row.fetchone() == (NEXT_START, original_at, voided, "void")

    after = statements.statement(app, Identity.service(), tenant_id=world.tenant, month=CLOSED)
    assert (after.to_json(), after.to_csv()) == before
    assert month_summary_cost(owner, tenant_id=world.tenant, start=CLOSED_START, end=NEXT_START) == september_summary

    october = statements.statement(app, Identity.service(), tenant_id=world.tenant, month=NEXT)
    assert not october.final
    kinds = {(a["kind"], a["entry_id"], a["corrects_event_id"]) for a in october.adjustments}
    assert kinds == {("late", str(late), None), ("void", str(entry), str(voided))}
    late_adjustment = next(a for a in october.adjustments if a["kind"] == "late")
    assert datetime.fromisoformat(late_adjustment["occurred_at"]) == happened
    assert late_adjustment["amount"] == "15.000000"
    voided_cost = owner.execute("select cost from public.usage_events where id = %s", (voided,)).fetchone()
    assert voided_cost is not None
    assert october.total == Decimal("15.000000") - voided_cost[0]
    assert sum(line.events for line in october.lines) == 0  # the late event +1, the void -1

    # Rows on the closed statement cannot be changed or deleted, by the service role or the owner.
    rows = ledger(owner)
    kept, service = ids[0], Identity.service()
    for statement_text in ("update public.usage_events set tokens_input = 1 where id = %s",
                           "update public.usage_events set user_id = null where id = %s",
                           "delete from public.usage_events where id = %s"):  # fmt: skip
        with pytest.raises(pgerrors.InsufficientPrivilege, match="closed statement"), acting_as(app, service):
            app.execute(statement_text, (kept,))
        with pytest.raises(pgerrors.InsufficientPrivilege, match="closed statement"):
            owner.execute(statement_text, (kept,))
    assert ledger(owner) == rows

    # Another scope's events in the month are not held: Alice's personal event can still be changed.
    with acting_as(app, Identity.service()):
        assert app.execute("update public.usage_events set tokens_input = 6 where id = %s", (personal,)).rowcount == 1

    with pytest.raises(errors.StatementError, match="already closed"):
        statements.close_statement(app, tenant_id=world.tenant, month=CLOSED)
    with pytest.raises(errors.StatementError, match="already closed"):
        statements.close_statement(app, tenant_id=world.tenant, month="2026-09", tz="Europe/Paris")  # overlaps
    with pytest.raises(errors.StatementError, match="not ended"):
        statements.close_statement(app, tenant_id=world.tenant, month=datetime.now(UTC).strftime("%Y-%m"))
    with pytest.raises(errors.StatementError, match="not ended"):
        statements.close_statement(app, tenant_id=world.tenant, month="2099-01")
    assert owner.execute("select count(*) from public.usage_closed_periods").fetchone() == (1,)

    # Erasing Alice still works: her tenant events on the closed statement lose their user (the cascade may).
    owner.execute("delete from auth.users where id = %s", (world.alice,))
    assert owner.execute(
        "select count(*) from public.usage_events where tenant_id = %s and user_id is not null", (world.tenant,)
    ).fetchone() == (0,)
    final = statements.statement(app, Identity.service(), tenant_id=world.tenant, month=CLOSED)
    assert (final.to_json(), final.to_csv()) == before


def test_a_closed_statement_reads_back_as_it_was_printed(
    owner: psycopg.Connection[Any], app: psycopg.Connection[Any], world: World
) -> None:
    """What `statement close` prints is what `statement` prints for the month afterwards, byte for byte."""
    fill_month(owner, world, CLOSED_START)  # with a void and an amendment: adjustments on the statement
    closed = statements.close_statement(app, tenant_id=world.tenant, month=CLOSED)
    shown = statements.statement(app, Identity.service(), tenant_id=world.tenant, month=CLOSED)
    assert shown.to_csv() == closed.to_csv()
    assert shown.as_json() == closed.as_json()
    assert shown.to_json() == closed.to_json()


def test_a_late_entry_skips_a_run_of_closed_months(
    owner: psycopg.Connection[Any], app: psycopg.Connection[Any], world: World
) -> None:
    statements.close_statement(app, tenant_id=world.tenant, month="2026-08")
    statements.close_statement(app, tenant_id=world.tenant, month=CLOSED)
    happened = datetime(2026, 8, 20, tzinfo=UTC)
    late = record(app, tenant_id=world.tenant, user_id=world.alice, at=happened, tokens_input=10, tokens_output=1)
    row = owner.execute("select created_at, occurred_at from public.usage_events where id = %s", (late,))
    assert row.fetchone() == (NEXT_START, happened)


# 5. Personal statements -------------------------------------------------------------------------------------


def test_a_personal_statement_is_made_and_closed_the_same_way(
    owner: psycopg.Connection[Any], app: psycopg.Connection[Any], world: World
) -> None:
    user = world.personal
    first = record(owner, tenant_id=None, user_id=user, at=CLOSED_START + timedelta(days=3), tokens_input=2_000_000,
                   tokens_output=100_000, cached=1_000_000)  # fmt: skip
    record(owner, tenant_id=None, user_id=user, at=CLOSED_START + timedelta(days=4), model=MODELS[1],
           tokens_input=1_000_000, tokens_output=1_000_000)  # fmt: skip
    # A tenant's event of the same user: on no personal statement.
    record(owner, tenant_id=world.tenant, user_id=world.alice, at=CLOSED_START + timedelta(days=4),
           tokens_input=1, tokens_output=1)  # fmt: skip
    # model-a: 1M at 2.5 + 1M cached at 1.25 + 100k out at 10 = 4.75; model-b: 0.15 + 0.6 = 0.75
    found = statements.statement(app, Identity.service(), personal_user_id=user, month=CLOSED)
    assert (found.tenant_id, found.user_id, found.total) == (None, user, Decimal("5.500000"))
    assert [(line.model, line.events, line.amount) for line in found.lines] == [
        (MODELS[0], 1, Decimal("4.750000")), (MODELS[1], 1, Decimal("0.750000"))
    ]  # fmt: skip
    assert month_summary_cost(owner, user_id=user, start=CLOSED_START, end=NEXT_START) == (2, found.total)
    mine = statements.statement(app, Identity.user(user), personal_user_id=user, month=CLOSED)
    assert mine.to_json() == found.to_json()

    closed = statements.close_statement(app, personal_user_id=user, month=CLOSED)
    assert closed.final
    assert closed.total == found.total
    before = statements.statement(app, Identity.service(), personal_user_id=user, month=CLOSED).to_json()
    assert json.loads(before)["final"] is True

    late = record(app, tenant_id=None, user_id=user, at=CLOSED_START + timedelta(days=20), tokens_input=10,
                  tokens_output=10)  # fmt: skip
    entry = void(app, first)
    booked = owner.execute(
        "select id, created_at from public.usage_events where id = any(%s) order by id", ([late, entry],)
    ).fetchall()
    assert {at for _, at in booked} == {NEXT_START}
    assert statements.statement(app, Identity.service(), personal_user_id=user, month=CLOSED).to_json() == before
    october = statements.statement(app, Identity.service(), personal_user_id=user, month=NEXT)
    assert sorted(a["kind"] for a in october.adjustments) == ["late", "void"]
    assert sum(line.events for line in october.lines) == 0
    with pytest.raises(pgerrors.InsufficientPrivilege, match="closed statement"), acting_as(app, Identity.service()):
        app.execute("delete from public.usage_events where id = %s", (first,))
    with pytest.raises(errors.StatementError, match="already closed"):
        statements.close_statement(app, personal_user_id=user, month=CLOSED)

    # The tenant's month is a different scope: still open.
    assert not statements.statement(app, Identity.service(), tenant_id=world.tenant, month=CLOSED).final

    # Erasing the user deletes their personal events, closed period and all (the cascade may).
    owner.execute("delete from auth.users where id = %s", (user,))
    assert owner.execute("select count(*) from public.usage_events where user_id = %s", (user,)).fetchone() == (0,)
    assert owner.execute("select count(*) from public.usage_closed_periods").fetchone() == (0,)


# 6. RLS: a statement is what the caller may see ---------------------------------------------------------------


def test_a_statement_runs_as_the_caller(
    owner: psycopg.Connection[Any], app: psycopg.Connection[Any], world: World
) -> None:
    fill_month(owner, world, CLOSED_START)
    service = statements.statement(app, Identity.service(), tenant_id=world.tenant, month=CLOSED)
    member = statements.statement(app, Identity.user(world.alice), tenant_id=world.tenant, month=CLOSED)
    assert member.lines
    assert member.to_json() == service.to_json()
    outsider = statements.statement(app, Identity.user(world.bob), tenant_id=world.tenant, month=CLOSED)
    assert (outsider.lines, outsider.adjustments, outsider.total) == ((), (), Decimal(0))
    stranger = statements.statement(app, Identity.user(world.personal), tenant_id=world.tenant, month=CLOSED)
    assert stranger.lines == ()

    statements.close_statement(app, tenant_id=world.tenant, month=CLOSED)
    assert statements.statement(app, Identity.user(world.alice), tenant_id=world.tenant, month=CLOSED).final
    hidden = statements.statement(app, Identity.user(world.bob), tenant_id=world.tenant, month=CLOSED)
    assert (hidden.lines, hidden.final) == ((), False)
    # Nor may another tenant's member read the stored statement directly.
    with acting_as(app, Identity.user(world.bob)):
        assert app.execute("select count(*) from public.usage_closed_periods").fetchone() == (0,)
    with acting_as(app, Identity.user(world.alice)):
        assert app.execute("select count(*) from public.usage_closed_periods").fetchone() == (1,)


def test_only_the_service_role_closes(app: psycopg.Connection[Any], world: World) -> None:
    """close_statement acts as the service role itself; members cannot insert a closed period through the API."""
    with pytest.raises(pgerrors.InsufficientPrivilege), acting_as(app, Identity.user(world.alice)):
        app.execute(
            "insert into public.usage_closed_periods (tenant_id, period_start, period_end, time_zone, statement)"
            " values (%s, %s, %s, 'UTC', '{}')",
            (world.tenant, CLOSED_START, NEXT_START),
        )
