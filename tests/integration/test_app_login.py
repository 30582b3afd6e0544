"""The pools' login: authenticator, which owns nothing, so a query that forgets its identity fails closed."""

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
from usagemeter.recording.recorder import Recorder
from usagemeter.reporting import summaries


@pytest.fixture
def recorder(app_database_url: str) -> Iterator[Recorder]:
    with Recorder(app_database_url) as rec:
        yield rec


@pytest.fixture
def tenants(owner: psycopg.Connection[Any]) -> dict[str, uuid.UUID]:
    return factories.two_tenants_with_an_event_each(owner)


def test_a_recorder_refuses_a_superuser_url_naming_the_fix(database_url: str) -> None:
    with pytest.raises(errors.ConfigurationError, match=r"superuser.*authenticator.*USAGEMETER_APP_DATABASE_URL"):
        Recorder(database_url)


def test_reports_refuse_a_superuser_connection(database_url: str) -> None:
    with pytest.raises(errors.ConfigurationError, match="superuser"):
        db.connect_app(database_url)


def test_a_pooled_connection_without_acting_as_fails_closed(
    recorder: Recorder, tenants: dict[str, uuid.UUID], owner: psycopg.Connection[Any]
) -> None:
    with recorder._engine.pool.connection() as conn:
        assert conn.execute("select current_user, session_user").fetchone() == ("authenticator", "authenticator")
        for forgotten in (
            "select count(*) from public.usage_events",
            "select count(*) from public.tenants",
            "delete from public.usage_events",
        ):
            with pytest.raises(pgerrors.InsufficientPrivilege):
                conn.execute(forgotten)
        with pytest.raises(pgerrors.InsufficientPrivilege):
            conn.execute("set role postgres")
        conn.execute("set role authenticated")  # what acting_as does: and from there, no way up either
        with pytest.raises(pgerrors.InsufficientPrivilege):
            conn.execute("set role postgres")
        conn.execute("reset role")
    assert factories.count_events(owner) == 2


def test_acting_as_from_the_pool_reads_through_rls(recorder: Recorder, tenants: dict[str, uuid.UUID]) -> None:
    now = datetime.now(UTC)
    query = summaries.SummaryQuery(scope="all", start=now - timedelta(days=1), end=now + timedelta(days=1))
    with recorder._engine.pool.connection() as conn:
        mine = summaries.summarize(conn, db.Identity.user(tenants["alice"]), query)
        everything = summaries.summarize(conn, db.Identity.service(), query)
    assert [(r.events, r.tokens_input) for r in mine] == [(1, 1)]
    assert [(r.events, r.tokens_input) for r in everything] == [(2, 1001)]
