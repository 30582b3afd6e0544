"""Prices on real PostgreSQL: loads are all or nothing, reads follow RLS, and events are rated at their created_at."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from psycopg import errors as pgerrors

from tests import factories
from usagemeter import db, errors
from usagemeter.billing import price_files, prices
from usagemeter.db import Identity, acting_as

MARCH_1 = datetime(2026, 3, 1, tzinfo=UTC)
MARCH_15 = datetime(2026, 3, 15, tzinfo=UTC)
GENERATE = "agency:scope:generate"


def price(**fields: Any) -> prices.PriceRow:
    return prices.PriceRow.model_validate({"currency": "USD", "effective_from": MARCH_1, **fields})


def tokens(model: str, input_rate: str, output_rate: str, **fields: Any) -> prices.PriceRow:
    return price(model=model, input_per_million=input_rate, output_per_million=output_rate, **fields)


def price_count(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("select count(*) from public.usage_prices").fetchone()
    assert row is not None
    return int(row[0])


def add_event_at(
    conn: psycopg.Connection[Any],
    created_at: datetime,
    *,
    tenant_id: uuid.UUID | None,
    user_id: uuid.UUID,
    action: str = GENERATE,
    tokens_input: int = 0,
    tokens_output: int = 0,
    metadata: dict[str, Any] | None = None,
) -> uuid.UUID:
    """An event written as the owner at a given time (factories.add_event writes at now())."""
    row = conn.execute(
        "insert into public.usage_events"
        " (tenant_id, user_id, action, tokens_input, tokens_output, metadata, created_at)"
        " values (%s, %s, %s, %s, %s, %s, %s) returning id",
        (tenant_id, user_id, action, tokens_input, tokens_output, json.dumps(metadata or {}), created_at),
    ).fetchone()
    assert row is not None
    event_id: uuid.UUID = row[0]
    return event_id


def cost_of(conn: psycopg.Connection[Any], event_id: uuid.UUID) -> Decimal:
    row = conn.execute("select cost from public.usage_events where id = %s", (event_id,)).fetchone()
    assert row is not None
    cost: Decimal = row[0]
    return cost


@pytest.fixture
def app(app_database_url: str) -> Iterator[psycopg.Connection[Any]]:
    """The app login (authenticator), as user-facing code connects: RLS applies to whoever it acts as."""
    with db.connect_app(app_database_url, autocommit=True) as conn:
        yield conn


def test_load_then_list_every_price_or_those_in_effect(owner: psycopg.Connection[Any]) -> None:
    later = tokens("gpt-4o", "5", "20", effective_from=MARCH_15)
    first = tokens("gpt-4o", "2.50", "10", cached_input_per_million="1.25")
    action = price(action=GENERATE, per_event="0.50")
    future = tokens("gpt-4o", "1", "4", effective_from=datetime(2999, 1, 1, tzinfo=UTC))
    assert prices.load_prices(owner, [later, first, action, future]) == 4

    # Ordered by model (none first), action, tenant, effective_from: the same every time.
    assert prices.list_prices(owner, Identity.service()) == [action, first, later, future]
    assert prices.list_prices(owner, Identity.service(), datetime(2026, 3, 10, tzinfo=UTC)) == [action, first]
    assert prices.list_prices(owner, Identity.service(), MARCH_15) == [action, later]  # effective_from <= at
    assert prices.list_prices(owner, Identity.service(), MARCH_1 - timedelta(microseconds=1)) == []


def test_a_member_reads_the_general_prices_and_their_tenants_not_anothers(
    owner: psycopg.Connection[Any], app: psycopg.Connection[Any]
) -> None:
    world = factories.two_tenants_with_an_event_each(owner)
    general = tokens("gpt-4o", "2.50", "10")
    mine = tokens("gpt-4o", "2", "8", tenant_id=world["mine"])
    foreign = tokens("gpt-4o", "1", "4", tenant_id=world["foreign"])
    foreign_action = price(action=GENERATE, per_event="0.10", tenant_id=world["foreign"])
    prices.load_prices(owner, [general, mine, foreign, foreign_action])

    alice = Identity.user(world["alice"])
    assert prices.list_prices(app, alice) == [general, mine]
    assert prices.list_prices(app, alice, MARCH_15) == [general, mine]
    assert prices.list_prices(app, alice, tenant_id=world["foreign"]) == [general]  # asking is no way round RLS
    assert prices.list_prices(app, Identity.user(factories.add_user(owner))) == [general]  # no tenant: general only
    assert prices.list_prices(app, Identity.service(), tenant_id=world["mine"]) == [general, mine]
    assert len(prices.list_prices(app, Identity.service())) == 4


@pytest.mark.parametrize(
    "statement",
    [
        "insert into public.usage_prices (model, currency, input_per_million, output_per_million, effective_from)"
        " values ('gpt-4o', 'USD', 0, 0, '2026-01-01')",
        "delete from public.usage_prices",
    ],
)
def test_a_user_can_neither_insert_nor_delete_a_price(
    owner: psycopg.Connection[Any], app: psycopg.Connection[Any], statement: str
) -> None:
    user = factories.add_user(owner)
    prices.load_prices(owner, [tokens("gpt-4o", "2.50", "10", effective_from=datetime(2999, 1, 1, tzinfo=UTC))])
    with pytest.raises(pgerrors.InsufficientPrivilege), acting_as(app, Identity.user(user)):
        app.execute(statement)
    assert price_count(owner) == 1


def test_only_a_price_not_yet_in_effect_can_be_deleted(owner: psycopg.Connection[Any]) -> None:
    in_effect = tokens("gpt-4o", "2.50", "10")
    pending = tokens("gpt-4o", "5", "20", effective_from=datetime.now(UTC) + timedelta(days=30))
    prices.load_prices(owner, [in_effect, pending])
    with acting_as(owner, Identity.service()):
        deleted = owner.execute(
            "delete from public.usage_prices where effective_from > now() returning model"
        ).fetchall()
    assert deleted == [("gpt-4o",)]
    with (
        pytest.raises(pgerrors.InsufficientPrivilege, match="prices in effect are kept"),
        acting_as(owner, Identity.service()),
    ):
        owner.execute("delete from public.usage_prices")
    assert prices.list_prices(owner, Identity.service()) == [in_effect]


def negative_price() -> prices.PriceRow:
    """A negative price that skipped validation (model_construct): the database's check is the last word."""
    return prices.PriceRow.model_construct(
        model="gpt-4o-mini", currency="USD", input_per_million=Decimal(-1), output_per_million=Decimal(1),
        effective_from=MARCH_1,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("bad", "field", "sqlstate", "message"),
    [
        (lambda tenant: negative_price(), None, "23514", "usage_prices_nonnegative"),
        (
            lambda tenant: tokens("gpt-4o", "9", "9"),
            "effective_from",
            "23505",
            "two prices for the same model, action, tenant and currency with the same effective_from: model gpt-4o,"
            " all tenants, USD, effective_from 2026-03-01T00:00:00+00:00 is already stored",
        ),
        (lambda tenant: tokens("gpt-4o", "9", "9", tenant_id=tenant), "tenant_id", "23503", "unknown tenant"),
        (lambda tenant: tokens("o3", "9", "9", currency="EUR"), "currency", "22023", "every price must be in one"),
    ],
    ids=["negative", "duplicate", "unknown-tenant", "second-currency"],
)
def test_a_refused_price_stores_nothing_of_its_load(
    owner: psycopg.Connection[Any], bad: Any, field: str | None, sqlstate: str, message: str
) -> None:
    prices.load_prices(owner, [tokens("gpt-4o", "2.50", "10")])
    before = price_count(owner)
    refused = bad(uuid.uuid4())
    fine = tokens("gpt-4.1", "2", "8", currency=refused.currency)  # a list in one currency passes the list check
    with pytest.raises(errors.PriceRefused) as caught:
        prices.load_prices(owner, [fine, refused])
    row = 1 if refused.currency != "USD" else 2  # the first row in EUR is already one too many currencies
    assert (caught.value.row, caught.value.field, caught.value.sqlstate) == (row, field, sqlstate)
    assert str(caught.value).startswith(f"row {row}: {field + ': ' if field else ''}")
    assert message in str(caught.value)
    assert price_count(owner) == before  # not even the fine first row


def test_a_list_with_a_duplicate_or_two_currencies_is_refused_before_the_database(
    owner: psycopg.Connection[Any],
) -> None:
    for rows in (
        [tokens("gpt-4o", "2.50", "10"), tokens("gpt-4.1", "2", "8"), tokens("gpt-4o", "3", "12")],
        [tokens("gpt-4o", "2.50", "10"), tokens("gpt-4.1", "2", "8", currency="EUR")],
    ):
        with pytest.raises(errors.InvalidPrice, match=r"^row [23]: "):
            prices.load_prices(owner, rows)
    assert price_count(owner) == 0


@pytest.fixture
def world(owner: psycopg.Connection[Any]) -> dict[str, uuid.UUID]:
    """Tenant `override` has its own gpt-4o and action prices; tenant `plain` pays the general ones."""
    override, plain, user = factories.add_tenant(owner), factories.add_tenant(owner), factories.add_user(owner)
    prices.load_prices(
        owner,
        [
            tokens("gpt-4o", "2.50", "10", cached_input_per_million="1.25", cache_write_per_million="3.125"),
            tokens("gpt-4o", "5", "20", cached_input_per_million="2.5", effective_from=MARCH_15),  # mid-month change
            tokens("gpt-4o", "2", "8", tenant_id=override),  # no cache rates: cached tokens at its input rate
            price(action=GENERATE, per_event="0.50"),
            price(action=GENERATE, model="gpt-4o", per_event="0.25"),  # narrowed to a model: beats any-model
            price(action=GENERATE, tenant_id=override, per_event="0.40"),  # tenant's: beats the general ones
        ],
    )
    return {"override": override, "plain": plain, "user": user}


CACHED = {"model": "gpt-4o", "tokens_cached_input": 400, "tokens_cache_write": 100}


def test_the_stored_cost_is_the_hand_computation(owner: psycopg.Connection[Any], world: dict[str, uuid.UUID]) -> None:
    plain, override, user = world["plain"], world["override"], world["user"]
    march_10, march_20 = datetime(2026, 3, 10, 12, tzinfo=UTC), datetime(2026, 3, 20, 12, tzinfo=UTC)
    event: dict[str, Any] = {"user_id": user, "tokens_input": 1000, "tokens_output": 500, "metadata": CACHED}

    # 500 uncached x 2.50 + 400 cached x 1.25 + 100 written x 3.125 + 500 out x 10 = 7062.5 per million,
    # plus 0.25 (the action's price for gpt-4o): 0.2570625, rounded half away from zero.
    before_the_change = add_event_at(owner, march_10, tenant_id=plain, **event)
    assert cost_of(owner, before_the_change) == Decimal("0.257063")

    # After March 15: 500 x 5 + 400 x 2.5 + 100 x 5 (no cache write rate: the input rate) + 500 x 20 = 14000.
    after_the_change = add_event_at(owner, march_20, tenant_id=plain, **event)
    assert cost_of(owner, after_the_change) == Decimal("0.264000")

    # The tenant's price beats the general one, even the newer one: 1000 x 2 (cached at the input
    # rate) + 500 x 8 = 6000, plus the tenant's own action price 0.40.
    overridden = add_event_at(owner, march_20, tenant_id=override, **event)
    assert cost_of(owner, overridden) == Decimal("0.406000")

    # Personal usage pays the general prices; 1 input token costs 0.0000025, rounded to 0.000003.
    personal = add_event_at(owner, march_10, tenant_id=None, user_id=user, action="chat:message:send",
                            tokens_input=1, metadata={"model": "gpt-4o"})  # fmt: skip
    assert cost_of(owner, personal) == Decimal("0.000003")

    # A model without a price costs only the action's any-model price; neither priced: 0.
    unpriced_model = add_event_at(owner, march_10, tenant_id=plain, user_id=user, tokens_input=9999,
                                  metadata={"model": "claude-sonnet-4-0"})  # fmt: skip
    assert cost_of(owner, unpriced_model) == Decimal("0.500000")
    nothing = add_event_at(owner, march_10, tenant_id=plain, user_id=user, action="chat:message:send",
                           tokens_input=9999, metadata={"model": "gpt-4o-mini"})  # fmt: skip
    assert cost_of(owner, nothing) == 0

    # Before any price: 0.
    too_early = add_event_at(owner, MARCH_1 - timedelta(seconds=1), tenant_id=plain, **event)
    assert cost_of(owner, too_early) == 0


def test_a_price_loaded_later_never_rewrites_a_stored_cost(
    owner: psycopg.Connection[Any], world: dict[str, uuid.UUID]
) -> None:
    march_10 = datetime(2026, 3, 10, 12, tzinfo=UTC)
    event: dict[str, Any] = {"tenant_id": world["plain"], "user_id": world["user"], "tokens_input": 1000,
                             "tokens_output": 500, "metadata": CACHED}  # fmt: skip
    stored = add_event_at(owner, march_10, **event)
    assert cost_of(owner, stored) == Decimal("0.257063")

    # A new price from March 5, loaded now: it prices events written from now on, dated after March 5.
    prices.load_prices(owner, [tokens("gpt-4o", "100", "100", effective_from=datetime(2026, 3, 5, tzinfo=UTC))])
    assert cost_of(owner, stored) == Decimal("0.257063")
    written_after = add_event_at(owner, march_10, **event)
    assert cost_of(owner, written_after) == Decimal("0.400000")  # 1500 tokens x 100 per million + 0.25


def test_an_event_written_now_is_priced_by_the_model_in_its_metadata(owner: psycopg.Connection[Any]) -> None:
    tenant, user = factories.add_tenant(owner), factories.add_user(owner)
    prices.load_prices(owner, price_files.starter_prices())
    # Claude Sonnet 4: 2000 uncached x 3 + 6000 cache reads x 0.30 + 2000 cache writes x 3.75 + 1000 out x 15.
    event = factories.add_event(
        owner, tenant_id=tenant, user_id=user, tokens_input=10_000, tokens_output=1000,
        metadata={"model": "claude-sonnet-4-20250514", "tokens_cached_input": 6000, "tokens_cache_write": 2000},
    )  # fmt: skip
    assert cost_of(owner, event) == Decimal("0.030300")
    # o3 after its June 2025 price cut: 1000 x 2 + 1000 x 8.
    cut = factories.add_event(owner, tenant_id=tenant, user_id=user, tokens_input=1000, tokens_output=1000,
                              metadata={"model": "o3"})  # fmt: skip
    assert cost_of(owner, cut) == Decimal("0.010000")
