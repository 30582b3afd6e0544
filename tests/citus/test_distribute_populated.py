"""`db distribute` on a database already in use: every row, cost, booking, correction and summary as before."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg

from tests import citus_cluster, factories
from tests.citus.conftest import DistributedDatabase
from usagemeter import db
from usagemeter.billing import statements
from usagemeter.db import Identity, acting_as
from usagemeter.ops import distribute, migrate
from usagemeter.reporting import summaries

ACTION = "agency:scope:generate"
MODEL = "populated-model"
CLOSED, CLOSED_START, NEXT_START = "2025-02", datetime(2025, 2, 1, tzinfo=UTC), datetime(2025, 3, 1, tzinfo=UTC)
LEDGER = (
    "select id, tenant_id, user_id, action, tokens_input, tokens_output, metadata, created_at, occurred_at, cost,"
    " corrects_event_id, correction_kind, idempotency_key from public.usage_events order by id"
)


def _record(app: psycopg.Connection[Any], tenant_id: uuid.UUID | None, user_id: uuid.UUID, at: datetime,
            tokens: int) -> uuid.UUID:  # fmt: skip
    event_id = uuid.uuid4()
    with acting_as(app, Identity.service()):
        app.execute(
            "insert into public.usage_events (id, tenant_id, user_id, action, tokens_input, tokens_output, metadata,"
            " created_at, idempotency_key) values (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (event_id, tenant_id, user_id, ACTION, tokens, tokens // 2, json.dumps({"model": MODEL}), at,
             f"populated-{event_id}"),
        )  # fmt: skip
    return event_id


def _summaries(app: psycopg.Connection[Any], tenant: uuid.UUID, alice: uuid.UUID) -> list[Any]:
    """The tenant's and Alice's Personal totals by month, action and model, as the service role."""
    start, end = CLOSED_START - timedelta(days=31), datetime.now(UTC) + timedelta(days=1)
    found: list[Any] = []
    for query in (
        summaries.SummaryQuery(
            scope="tenant", tenant_id=tenant, group_by=("action", "model"), bucket="month", start=start, end=end
        ),
        summaries.SummaryQuery(
            scope="user", user_id=alice, group_by=("action", "model"), bucket="month", start=start, end=end
        ),
    ):
        rows = summaries.summarize(app, Identity.service(), query)
        found += sorted(((r.keys, r.events, r.tokens_total, r.cost) for r in rows), key=repr)
    return found


def test_distributing_a_database_in_use_changes_no_row_and_no_answer(
    citus: citus_cluster.CitusCluster, distributed: DistributedDatabase
) -> None:
    name = f"um_populated_{uuid.uuid4().hex[:8]}"
    url = citus.create_database(name)
    try:
        with db.connect(url, autocommit=True) as owner:
            migrate.migrate(owner)
            citus.coordinator.enable_app_login(owner)
            tenant, alice = factories.add_tenant(owner), factories.add_user(owner)
            factories.add_member(owner, tenant, alice)
            owner.execute(
                "insert into public.usage_prices (model, tenant_id, currency, input_per_million, output_per_million,"
                " effective_from) values (%s, null, 'USD', 2, 8, %s)",
                (MODEL, CLOSED_START - timedelta(days=60)),
            )
        with db.connect(citus.app_url(name), autocommit=True) as app:
            ids = [_record(app, tenant, alice, CLOSED_START + timedelta(days=n), 1000 * (n + 1)) for n in range(10)]
            _record(app, None, alice, CLOSED_START + timedelta(days=3), 700)
            statements.close_statement(app, tenant_id=tenant, month=CLOSED)
            late = _record(app, tenant, alice, CLOSED_START + timedelta(days=20), 5000)  # booked into March
            with acting_as(app, Identity.service()):
                app.execute("select public.void_usage_event_v1(%s, 'populated void')", (ids[3],))
            _record(app, tenant, alice, datetime.now(UTC) - timedelta(minutes=5), 900)
        with db.connect(url, autocommit=True) as owner:
            owner.execute("select usagemeter_private.fold_usage_rollups_v1()")
        with db.connect(citus.app_url(name), autocommit=True) as app:
            _record(app, tenant, alice, datetime.now(UTC) - timedelta(minutes=4), 300)  # a pending delta
        with db.connect(url, autocommit=True) as owner:
            before_rows = owner.execute(LEDGER).fetchall()
            booked = owner.execute("select created_at from public.usage_events where id = %s", (late,)).fetchone()
        with db.connect(citus.app_url(name), autocommit=True) as app:
            before_answers = _summaries(app, tenant, alice)
            before_statement = statements.statement(app, Identity.user(alice), tenant_id=tenant, month=CLOSED)

        with db.connect(url, autocommit=True) as owner:
            distribute.distribute(owner)
            after_rows = owner.execute(LEDGER).fetchall()
        with db.connect(citus.app_url(name), autocommit=True) as app:
            after_answers = _summaries(app, tenant, alice)
            after_statement = statements.statement(app, Identity.user(alice), tenant_id=tenant, month=CLOSED)
        # The tier's first distributed database still reaches its workers as a request role: the second
        # db distribute on this server reused the node passwords the first one stored (roles are the server's).
        with db.connect(distributed.app_url, autocommit=True) as app, acting_as(app, Identity.service()):
            first_database = app.execute("select count(*) >= 0 from public.usage_events").fetchone()
    finally:
        citus.drop_database(name)
    assert first_database == (True,)
    assert booked == (NEXT_START,)
    assert len(before_rows) == 15  # 10 + 1 personal + the late one + a void entry + 2 now
    assert any(row[11] == "void" for row in before_rows)
    assert sum((row[9] for row in before_rows), Decimal(0)) > 0
    assert after_rows == before_rows
    assert after_answers == before_answers
    assert after_statement.final
    assert (after_statement.lines, after_statement.total) == (before_statement.lines, before_statement.total)
