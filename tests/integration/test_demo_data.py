"""The demo data set: loads into an empty database, priced and rolled up, once; its shape is fixed by a seed."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from tests import factories
from usagemeter import db, errors
from usagemeter.billing import budgets
from usagemeter.db import Identity
from usagemeter.ops import demo
from usagemeter.reporting import rollup_check, summaries
from usagemeter.tenancy import tenants

NOW = datetime(2026, 11, 20, 15, 30, tzinfo=UTC)


@pytest.fixture
def app(app_database_url: str) -> Iterator[psycopg.Connection[Any]]:
    with db.connect(app_database_url, autocommit=True) as conn:
        yield conn


@pytest.fixture
def loaded(owner: psycopg.Connection[Any], app_database_url: str) -> demo.Demo:
    return demo.load_demo(owner, app_database_url, now=NOW)


def summary(
    conn: psycopg.Connection[Any], identity: Identity, *, by: tuple[summaries.GroupKey, ...] = (), **scope: Any
) -> list[summaries.SummaryRow]:
    query = summaries.SummaryQuery(start=NOW - timedelta(days=31), end=NOW + timedelta(days=1), group_by=by, **scope)
    return summaries.summarize(conn, identity, query)


def test_it_loads_fast_into_an_empty_database_and_a_second_call_finds_it(
    owner: psycopg.Connection[Any], app_database_url: str
) -> None:
    started = time.perf_counter()
    first = demo.load_demo(owner, app_database_url, now=NOW)
    elapsed = time.perf_counter() - started
    assert elapsed < 2.0, f"the demo took {elapsed:.2f} s to load"
    assert first.loaded
    assert first.events == factories.count_events(owner)
    assert 2000 <= first.events <= 5000

    again = demo.load_demo(owner, app_database_url)
    assert not again.loaded
    assert again.events == 0
    assert (again.owner_id, again.personal_user_id) == (first.owner_id, first.personal_user_id)
    assert dict(again.tenant_ids) == dict(first.tenant_ids)
    assert dict(again.user_ids) == dict(first.user_ids)
    assert factories.count_events(owner) == first.events
    assert owner.execute("select count(*) from public.tenants").fetchone() == (2,)
    assert owner.execute("select count(*) from public.usage_budgets").fetchone() == (3,)


def test_the_shape_is_fixed_by_the_seed(loaded: demo.Demo) -> None:
    """Two generations from the same seed agree, whatever the clock; tests and screenshots can rely on it."""
    one = demo.demo_events(now=NOW, tenant_ids=loaded.tenant_ids, personal_user_id=loaded.personal_user_id)
    later = NOW + timedelta(days=3, hours=5)
    two = demo.demo_events(now=later, tenant_ids=loaded.tenant_ids, personal_user_id=loaded.personal_user_id)
    assert len(one) == len(two) == loaded.events
    strip = [{k: v for k, v in e.items() if k != "created_at"} for e in one]
    assert strip == [{k: v for k, v in e.items() if k != "created_at"} for e in two]
    assert len(one) == sum(t.events_per_day for t in (*demo.TENANTS, demo.PERSONAL)) * demo.DAYS
    assert all(NOW - timedelta(days=30) <= e["created_at"] < NOW for e in one)


def test_tenants_members_and_the_owner_of_both(loaded: demo.Demo, app: psycopg.Connection[Any]) -> None:
    assert set(loaded.tenant_ids) == {"acme", "globex"}
    assert loaded.user_ids[demo.OWNER_EMAIL] == loaded.owner_id == demo.demo_user_id(demo.OWNER_EMAIL)
    ada = tenants.list_tenants(app, Identity.user(loaded.owner_id))
    assert [(t.slug, t.role) for t in ada] == [("acme", "owner"), ("globex", "owner")]
    for slug in ("acme", "globex"):
        members = tenants.list_members(app, Identity.user(loaded.owner_id), loaded.tenant_ids[slug])
        assert len(members) >= 3
        assert Counter(m.role for m in members)["owner"] == 1
    assert tenants.list_tenants(app, Identity.user(loaded.personal_user_id)) == []


def test_each_tenant_has_priced_varied_usage_over_the_month(loaded: demo.Demo, app: psycopg.Connection[Any]) -> None:
    ada = Identity.user(loaded.owner_id)
    for slug, tenant_id in loaded.tenant_ids.items():
        by_action = summary(app, ada, scope="tenant", tenant_id=tenant_id, by=("action", "model"))
        assert len({r.keys["action"] for r in by_action}) >= 3, slug
        assert len({r.keys["model"] for r in by_action}) >= 2, slug
        assert all(r.cost > 0 and r.currency == "USD" for r in by_action), slug
        [total] = summary(app, ada, scope="tenant", tenant_id=tenant_id)
        assert total.events > 500
        assert total.tokens_total > 0
        by_user = summary(app, ada, scope="tenant", tenant_id=tenant_id, by=("user",))
        assert len(by_user) >= 3, slug
    days = summaries.summarize(
        app, ada,
        summaries.SummaryQuery(scope="tenant", tenant_id=loaded.tenant_ids["acme"], start=NOW - timedelta(days=30),
                               end=NOW, bucket="day"),
    )  # fmt: skip
    counts = [row.events for row in days]
    assert min(counts) > 0
    assert max(counts) > 2 * min(counts)  # weekends are quieter


def test_rollups_agree_with_the_raw_events(loaded: demo.Demo, owner: psycopg.Connection[Any]) -> None:
    assert rollup_check.differences(owner) == 0


def test_the_personal_user_sees_only_their_own_usage(loaded: demo.Demo, app: psycopg.Connection[Any]) -> None:
    pat = Identity.user(loaded.personal_user_id)
    rows = summary(app, pat, scope="all", by=("user",))
    assert [r.keys["user_id"] for r in rows] == [loaded.personal_user_id]
    assert rows[0].events > 50
    assert rows[0].cost > 0
    for tenant_id in loaded.tenant_ids.values():
        assert all(r.events == 0 for r in summary(app, pat, scope="tenant", tenant_id=tenant_id))
    ada_all = summary(app, Identity.user(loaded.owner_id), scope="all", by=("user",))
    assert loaded.personal_user_id not in {r.keys["user_id"] for r in ada_all}


def test_each_scope_has_a_soft_monthly_cost_budget_with_something_to_show(
    loaded: demo.Demo, app: psycopg.Connection[Any]
) -> None:
    ada = Identity.user(loaded.owner_id)
    for tenant_id in loaded.tenant_ids.values():
        [budget] = budgets.list_budgets(app, ada, tenant_id=tenant_id)
        assert (budget.metric, budget.mode, budget.period, budget.currency) == ("cost", "soft", "month", "USD")
        assert budget.limit >= 1
    pat = Identity.user(loaded.personal_user_id)
    [personal] = budgets.list_budgets(app, pat, personal_user_id=loaded.personal_user_id)
    assert personal.limit >= Decimal(1)


def test_a_database_with_other_data_is_refused(owner: psycopg.Connection[Any], app_database_url: str) -> None:
    factories.add_tenant(owner, "mine")
    with pytest.raises(errors.DemoRefused, match="empty database"):
        demo.load_demo(owner, app_database_url, now=NOW)
    assert owner.execute("select count(*) from auth.users").fetchone() == (0,)


def test_it_is_refused_where_supabase_auth_owns_auth_users(
    owner: psycopg.Connection[Any], app_database_url: str
) -> None:
    owner.execute("comment on table auth.users is 'Auth: Stores user login data within a secure schema.'")
    with pytest.raises(errors.UsersManagedElsewhere):
        demo.load_demo(owner, app_database_url, now=NOW)
    assert owner.execute("select count(*) from public.tenants").fetchone() == (0,)


def test_demo_user_ids_are_stable(loaded: demo.Demo) -> None:
    assert loaded.personal_user_id == demo.demo_user_id(demo.PERSONAL_EMAIL)
    assert all(isinstance(i, uuid.UUID) for i in loaded.user_ids.values())
    assert loaded.as_json()["tenant_ids"] == {slug: str(i) for slug, i in loaded.tenant_ids.items()}
