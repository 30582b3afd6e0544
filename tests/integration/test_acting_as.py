"""acting_as on the app login: per-role statement timeouts, nesting, and claims that cannot promote themselves."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg import errors as pgerrors

from tests import factories
from usagemeter import db, errors
from usagemeter.db import Identity, acting_as
from usagemeter.recording.recorder import Recorder
from usagemeter.reporting import summaries


@pytest.fixture
def app(app_database_url: str) -> Iterator[psycopg.Connection[Any]]:
    with db.connect_app(app_database_url, autocommit=True) as conn:
        yield conn


@pytest.fixture
def tenants(owner: psycopg.Connection[Any]) -> dict[str, uuid.UUID]:
    return factories.two_tenants_with_an_event_each(owner)


def _setting(conn: psycopg.Connection[Any], name: str) -> str:
    row = conn.execute("select current_setting(%s)", (name,)).fetchone()
    assert row is not None
    return str(row[0])


@pytest.mark.parametrize(("identity", "timeout"), [(Identity.anon(), "3s"), (Identity.user(uuid.uuid4()), "8s")])
def test_each_role_gets_its_statement_timeout_and_the_session_keeps_its_own(
    app: psycopg.Connection[Any], identity: Identity, timeout: str
) -> None:
    app.execute("set statement_timeout = '42s'")
    with acting_as(app, identity):
        assert _setting(app, "statement_timeout") == timeout
        assert _setting(app, "role") == identity.role
    assert _setting(app, "statement_timeout") == "42s"
    assert _setting(app, "role") == "none"


def test_a_statement_over_the_anon_timeout_is_cancelled(app: psycopg.Connection[Any]) -> None:
    with pytest.raises(pgerrors.QueryCanceled) as cancelled, acting_as(app, Identity.anon()):
        app.execute("select pg_sleep(3.5)")
    assert cancelled.value.sqlstate == "57014"


def test_a_nested_identity_hands_back_the_outer_one(
    app: psycopg.Connection[Any], tenants: dict[str, uuid.UUID], owner: psycopg.Connection[Any]
) -> None:
    with acting_as(app, Identity.user(tenants["alice"])):
        with acting_as(app, Identity.service()):
            assert _setting(app, "role") == "service_role"
            assert _setting(app, "statement_timeout") == "8s"  # service_role keeps the enclosing timeout
            row = app.execute("select count(*) from public.usage_events").fetchone()
            assert row == (2,)
        assert app.execute("select current_user").fetchone() == ("authenticated",)
        assert _setting(app, "statement_timeout") == "8s"
        visible = app.execute("select count(*) from public.usage_events").fetchone()
        assert visible == (1,)
        with pytest.raises(pgerrors.InsufficientPrivilege), app.transaction():
            app.execute("delete from public.usage_events where id = %s", (tenants["foreign_event"],))
    assert factories.count_events(owner) == 2


def test_claims_naming_service_role_still_act_as_the_user(
    app_database_url: str, app: psycopg.Connection[Any], tenants: dict[str, uuid.UUID], owner: psycopg.Connection[Any]
) -> None:
    claims = {"sub": str(tenants["alice"]), "role": "service_role"}
    with Recorder(app_database_url) as recorder:
        alice = recorder.as_user(claims)
        assert alice.identity.role == "authenticated"
        with pytest.raises(errors.EventRejected, match="row-level security"):
            alice.record(action="chat:message:send", user_id=None, tenant_id=tenants["foreign"])
        alice.record(action="chat:message:send", user_id=None, tenant_id=tenants["mine"], tokens_input=2)
    now = datetime.now(UTC)
    query = summaries.SummaryQuery(scope="all", start=now - timedelta(days=1), end=now + timedelta(days=1))
    rows = summaries.summarize(app, Identity.user_from_claims(claims), query)
    assert [(r.events, r.tokens_input) for r in rows] == [(2, 3)]
    assert factories.count_events(owner) == 3
