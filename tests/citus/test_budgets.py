"""Budgets on the cluster: counters on the owner's shard, exact under a race, alerts once, RLS (docs/distributed.md)."""

from __future__ import annotations

import json
import threading
import uuid
from decimal import Decimal
from typing import Any

import psycopg

from tests import factories
from tests.citus.conftest import DistributedDatabase
from usagemeter import Recorder, db, errors
from usagemeter.billing import budgets
from usagemeter.db import Identity, acting_as, refusals

ACTION = "agency:scope:generate"
WRITERS = 16


def _member(owner: psycopg.Connection[Any]) -> tuple[uuid.UUID, uuid.UUID]:
    tenant, user = factories.add_tenant(owner), factories.add_user(owner)
    factories.add_member(owner, tenant, user)
    return tenant, user


def _insert(conn: psycopg.Connection[Any], user: uuid.UUID, tenant: uuid.UUID | None, tokens: int = 1) -> None:
    """One event as `user` under RLS, naming its owner (a transaction of its own)."""
    with acting_as(conn, Identity.user(user)):
        conn.execute(
            "insert into public.usage_events (owner_id, tenant_id, user_id, action, tokens_input, metadata)"
            " values (%s, %s, %s, %s, %s, %s)",
            (tenant or user, tenant, user, ACTION, tokens, json.dumps({"model": "m"})),
        )


def _set(owner: psycopg.Connection[Any], **fields: Any) -> budgets.BudgetStatus:
    return budgets.set_budget(owner, budgets.BudgetSpec(**fields))


def test_racing_writers_store_exactly_the_limit(distributed: DistributedDatabase) -> None:
    with db.connect(distributed.url, autocommit=True) as owner:
        tenant, alice = _member(owner)
        _insert(owner, alice, tenant)  # usage before the budget: the counter starts from it
        budget = _set(owner, tenant_id=tenant, metric="events", limit=150, period="month", mode="hard")
    refused: list[errors.UsagemeterError] = []
    stored = [0] * WRITERS
    crashes: list[BaseException] = []
    start = threading.Barrier(WRITERS)

    def write_until_refused(index: int) -> None:
        try:
            with db.connect_app(distributed.app_url) as conn:
                start.wait(timeout=30)
                while True:
                    try:
                        _insert(conn, alice, tenant)
                    except psycopg.Error as failure:
                        refused.append(refusals.refusal(failure, index=0))
                        return
                    stored[index] += 1
        except BaseException as crash:  # reported in the test's thread
            crashes.append(crash)

    threads = [threading.Thread(target=write_until_refused, args=(n,)) for n in range(WRITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    with db.connect(distributed.url, autocommit=True) as owner:
        events = owner.execute("select count(*) from public.usage_events where owner_id = %s", (tenant,)).fetchone()
        counter = owner.execute(
            "select owner_id, used from public.usage_budget_counters where budget_id = %s", (budget.id,)
        ).fetchall()
        [status] = budgets.list_budgets(owner, Identity.service(), budget_id=budget.id)
    assert crashes == []
    assert budget.used == Decimal(1)
    assert events == (150,)
    assert sum(stored) == 149
    assert counter == [(tenant, Decimal(150))]  # one counter, on the tenant's shard
    assert (status.used, status.remaining) == (Decimal(150), Decimal(0))
    assert len(refused) == WRITERS
    for failure in refused:
        assert isinstance(failure, errors.QuotaExceeded), failure
        assert (failure.budget_id, failure.used, failure.requested) == (str(budget.id), Decimal(150), Decimal(1))


def test_a_batch_over_a_personal_token_budget_stores_nothing(distributed: DistributedDatabase) -> None:
    with db.connect(distributed.url, autocommit=True) as owner:
        carol = factories.add_user(owner)
        budget = _set(owner, user_id=carol, metric="tokens", limit=1000, period="day", mode="hard")
    with Recorder(distributed.app_url) as recorder:
        as_carol = recorder.as_user(carol)
        as_carol.record_many([{"action": ACTION, "tokens_input": 300} for _ in range(3)])
        try:
            as_carol.record_many([{"action": ACTION, "tokens_input": 60} for _ in range(2)])
            over: Exception | None = None
        except errors.QuotaExceeded as failure:
            over = failure
        as_carol.record(user_id=None, action=ACTION, tokens_input=100)
    with db.connect(distributed.url, autocommit=True) as owner:
        stored = owner.execute(
            "select count(*), sum(tokens_input) from public.usage_events where owner_id = %s", (carol,)
        ).fetchone()
        [status] = budgets.list_budgets(owner, Identity.service(), budget_id=budget.id)
    assert isinstance(over, errors.QuotaExceeded)
    assert stored == (4, 1000)
    assert (status.used, status.remaining) == (Decimal(1000), Decimal(0))


def test_soft_thresholds_fire_once_and_members_read_only_their_budgets(distributed: DistributedDatabase) -> None:
    with db.connect(distributed.url, autocommit=True) as owner:
        tenant, alice = _member(owner)
        other, bob = _member(owner)
        budget = _set(
            owner, tenant_id=tenant, metric="events", limit=10, period="month", mode="soft",
            thresholds=(Decimal("0.5"), Decimal("1.0")),
        )  # fmt: skip
        _set(owner, tenant_id=other, metric="events", limit=10, period="month", mode="soft")
        for _ in range(12):
            _insert(owner, alice, tenant)
    with db.connect(distributed.app_url, autocommit=True) as app:
        alerts = [a for a in budgets.alerts_after(app, Identity.user(alice)) if a["budget_id"] == str(budget.id)]
        seen_by_bob = budgets.alerts_after(app, Identity.user(bob))
        alice_budgets = budgets.list_budgets(app, Identity.user(alice))
        bob_budgets = budgets.list_budgets(app, Identity.user(bob))
        quota = budgets.check_quota(app, Identity.user(alice), tenant_id=tenant, user_id=alice, action=ACTION)
        with acting_as(app, Identity.user(bob)):
            counters_seen = app.execute(
                "select count(*) from public.usage_budget_counters where budget_id = %s", (budget.id,)
            ).fetchone()
    assert [(a["threshold"], a["used"]) for a in alerts] == [("0.5", "5"), ("1", "10")]
    assert all(a["budget_id"] != str(budget.id) for a in seen_by_bob)
    assert [(b.id, b.used) for b in alice_budgets] == [(budget.id, Decimal(12))]
    assert all(b.tenant_id == other for b in bob_budgets)
    assert counters_seen == (0,)
    assert [str(q["budget_id"]) for q in quota.budgets] == [str(budget.id)]


def test_a_void_frees_quota_on_the_cluster(distributed: DistributedDatabase) -> None:
    with db.connect(distributed.url, autocommit=True) as owner:
        tenant, alice = _member(owner)
        budget = _set(owner, tenant_id=tenant, metric="events", limit=2, period="month", mode="hard")
    with Recorder(distributed.app_url) as recorder:
        first = recorder.as_user(alice).record(user_id=None, action=ACTION, tenant_id=tenant)
        recorder.as_user(alice).record(user_id=None, action=ACTION, tenant_id=tenant)
        try:
            recorder.as_user(alice).record(user_id=None, action=ACTION, tenant_id=tenant)
            refused = False
        except errors.QuotaExceeded:
            refused = True
    with db.connect(distributed.app_url, autocommit=True) as app:
        with acting_as(app, Identity.service()):
            app.execute("select public.void_usage_event_v1(%s, 'refund')", (first.id,))
        [after_void] = budgets.list_budgets(app, Identity.service(), budget_id=budget.id)
    with Recorder(distributed.app_url) as recorder:
        recorder.as_user(alice).record(user_id=None, action=ACTION, tenant_id=tenant)
    assert refused
    assert after_void.used == Decimal(1)
