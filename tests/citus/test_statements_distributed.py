"""Statements on the cluster: prices applied on the shards, a month's statement equal to its events,
closing it, late entries booked into the next month, and the closed rows held (docs/distributed.md)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from psycopg import errors as pgerrors

from tests import factories
from tests.citus.conftest import DistributedDatabase
from usagemeter import db, errors
from usagemeter.billing import statements
from usagemeter.db import Identity, acting_as

# Months of their own in the tier's shared database (other tests write now, or in 2023-2024).
CLOSED, CLOSED_START = "2025-03", datetime(2025, 3, 1, tzinfo=UTC)
NEXT, NEXT_START = "2025-04", datetime(2025, 4, 1, tzinfo=UTC)
MODEL = f"cluster-model-{uuid.uuid4().hex[:8]}"
ACTION = "agency:scope:generate"


def _record(app: psycopg.Connection[Any], owner_id: uuid.UUID, tenant_id: uuid.UUID | None, user_id: uuid.UUID,
            at: datetime, tokens_input: int, tokens_output: int) -> uuid.UUID:  # fmt: skip
    """An event written as the service role (which may date it), naming its owner as the cluster wants."""
    event_id = uuid.uuid4()
    with acting_as(app, Identity.service()):
        app.execute(
            "insert into public.usage_events (id, owner_id, tenant_id, user_id, action, tokens_input, tokens_output,"
            " metadata, created_at) values (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (event_id, owner_id, tenant_id, user_id, ACTION, tokens_input, tokens_output,
             json.dumps({"model": MODEL}), at),
        )  # fmt: skip
    return event_id


def test_a_statement_is_priced_closed_and_final_on_the_cluster(distributed: DistributedDatabase) -> None:
    with db.connect(distributed.url, autocommit=True) as owner:
        tenant, alice = factories.add_tenant(owner), factories.add_user(owner)
        factories.add_member(owner, tenant, alice)
        for effective_from, input_rate, output_rate in ((CLOSED_START, 2, 8), (NEXT_START, 3, 12)):
            owner.execute(
                "insert into public.usage_prices (model, tenant_id, currency, input_per_million, output_per_million,"
                " effective_from) values (%s, null, 'USD', %s, %s, %s)",
                (MODEL, input_rate, output_rate, effective_from),
            )
    with db.connect(distributed.app_url, autocommit=True) as app:
        for day in range(20):
            _record(app, tenant, tenant, alice, CLOSED_START + timedelta(days=day, hours=3), 1000 * (day + 1), 500)
        personal = _record(app, alice, None, alice, CLOSED_START + timedelta(days=2), 4000, 4000)
        open_before = statements.statement(app, Identity.service(), tenant_id=tenant, month=CLOSED)
        closed = statements.close_statement(app, tenant_id=tenant, month=CLOSED)
        shown = statements.statement(app, Identity.user(alice), tenant_id=tenant, month=CLOSED)
        happened = CLOSED_START + timedelta(days=14, hours=12)
        late = _record(app, tenant, tenant, alice, happened, 1_000_000, 1_000_000)
        after = statements.statement(app, Identity.service(), tenant_id=tenant, month=CLOSED)
        april = statements.statement(app, Identity.service(), tenant_id=tenant, month=NEXT)
        personal_statement = statements.statement(app, Identity.user(alice), personal_user_id=alice, month=CLOSED)
        with pytest.raises(errors.StatementError, match="already closed"):
            statements.close_statement(app, tenant_id=tenant, month=CLOSED)
        with (
            pytest.raises(pgerrors.InsufficientPrivilege, match="closed statement"),
            acting_as(app, Identity.service()),
        ):
            app.execute("delete from public.usage_events where owner_id = %s and created_at < %s", (tenant, NEXT_START))
    with db.connect(distributed.url, autocommit=True) as owner:
        raw = owner.execute(
            "select count(*), sum(cost) from public.usage_events where owner_id = %s and created_at >= %s"
            " and created_at < %s",
            (tenant, CLOSED_START, NEXT_START),
        ).fetchone()
        booked = owner.execute(
            "select created_at, occurred_at, cost from public.usage_events where owner_id = %s and id = %s",
            (tenant, late),
        ).fetchone()
        personal_cost = owner.execute(
            "select cost from public.usage_events where owner_id = %s and id = %s", (alice, personal)
        ).fetchone()
    # March's price, applied on the shards: 2 per million input, 8 per million output.
    expected = sum(Decimal(1000 * (day + 1)) * 2 / 1_000_000 + Decimal(500) * 8 / 1_000_000 for day in range(20))
    assert raw == (20, expected)
    assert not open_before.final
    assert open_before.total == expected
    assert closed.final
    assert (closed.lines, closed.total) == (open_before.lines, open_before.total)
    assert shown.final  # a member reads the stored statement under RLS
    assert (shown.lines, shown.total) == (closed.lines, closed.total)
    assert booked == (NEXT_START, happened, Decimal("15.000000"))  # April's price: 3 + 12
    assert (after.lines, after.total) == (closed.lines, closed.total)
    assert [a["kind"] for a in april.adjustments] == ["late"]
    assert april.total == Decimal("15.000000")
    assert personal_cost == (Decimal("0.040000"),)
    assert personal_statement.total == Decimal("0.040000")
