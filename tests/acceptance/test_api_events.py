"""POST /v1/events over a real socket: created after commit, idempotent retries, conflicts, refusals, bad input."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from tests import factories
from tests.http_server import RunningApi
from usagemeter.billing import budgets

ACTION = "agency:scope:generate"


@pytest.fixture
def member(owner: psycopg.Connection[Any]) -> tuple[uuid.UUID, uuid.UUID]:
    user = factories.add_user(owner)
    tenant = factories.add_tenant(owner)
    factories.add_member(owner, tenant, user)
    return user, tenant


def stored(owner: psycopg.Connection[Any], event_id: str) -> tuple[Any, ...] | None:
    return owner.execute(
        "select user_id, tenant_id, tokens_input from public.usage_events where id = %s", (event_id,)
    ).fetchone()


def test_a_single_event_is_created_after_commit_and_a_retry_is_a_duplicate(
    api_server: RunningApi, owner: psycopg.Connection[Any], member: tuple[uuid.UUID, uuid.UUID]
) -> None:
    user, tenant = member
    client = api_server.as_user(user)
    body = {"action": ACTION, "tenant_id": str(tenant), "tokens_input": 12, "tokens_output": 3}

    first = client.post("/v1/events", json=body, headers={"Idempotency-Key": "call-1"})
    assert first.status_code == 201, first.text
    assert first.json()["duplicate"] is False
    assert stored(owner, first.json()["id"]) == (user, tenant, 12)  # committed when answered

    retry = client.post("/v1/events", json=body, headers={"Idempotency-Key": "call-1"})
    assert retry.status_code == 200
    assert retry.json() == {**first.json(), "duplicate": True}
    assert factories.count_events(owner) == 1


def test_a_key_reused_with_another_payload_is_a_conflict(
    api_server: RunningApi, owner: psycopg.Connection[Any], member: tuple[uuid.UUID, uuid.UUID]
) -> None:
    user, tenant = member
    client = api_server.as_user(user)
    client.post("/v1/events", json={"action": ACTION, "tenant_id": str(tenant)}, headers={"Idempotency-Key": "k"})
    other = client.post(
        "/v1/events",
        json={"action": ACTION, "tenant_id": str(tenant), "tokens_input": 9},
        headers={"Idempotency-Key": "k"},
    )
    assert other.status_code == 409
    assert other.headers["content-type"] == "application/problem+json"
    assert other.json()["type"] == "urn:usagemeter:problem:idempotency-conflict"
    assert factories.count_events(owner) == 1


def test_a_personal_event_defaults_to_the_caller(api_server: RunningApi, owner: psycopg.Connection[Any]) -> None:
    user = factories.add_user(owner)
    answer = api_server.as_user(user).post("/v1/events", json={"action": ACTION, "tokens_input": 1})
    assert answer.status_code == 201, answer.text
    assert stored(owner, answer.json()["id"]) == (user, None, 1)


def test_a_batch_is_stored_whole_and_its_retry_is_all_duplicates(
    api_server: RunningApi, owner: psycopg.Connection[Any], member: tuple[uuid.UUID, uuid.UUID]
) -> None:
    user, tenant = member
    client = api_server.as_user(user)
    batch = [
        {"action": ACTION, "tenant_id": str(tenant), "tokens_input": i, "idempotency_key": f"b-{i}"} for i in range(50)
    ]
    created = client.post("/v1/events", json=batch)
    assert created.status_code == 201, created.text
    assert created.json()["recorded"] == 50
    assert [e["duplicate"] for e in created.json()["events"]] == [False] * 50
    assert factories.count_events(owner) == 50

    again = client.post("/v1/events", json=batch)
    assert again.status_code == 200
    assert again.json()["duplicates"] == 50
    assert [e["id"] for e in again.json()["events"]] == [e["id"] for e in created.json()["events"]]
    assert factories.count_events(owner) == 50


def test_a_batch_names_every_bad_event_and_stores_none(
    api_server: RunningApi, owner: psycopg.Connection[Any], member: tuple[uuid.UUID, uuid.UUID]
) -> None:
    user, tenant = member
    batch = [
        {"action": ACTION, "tenant_id": str(tenant)},
        {"action": "not-an-action", "tenant_id": str(tenant)},
        {"action": ACTION, "tokens_input": -1},
        "not an object",
        {"action": ACTION, "surprise": True},
    ]
    answer = api_server.as_user(user).post("/v1/events", json=batch)
    assert answer.status_code == 422
    problem = answer.json()
    assert [e["index"] for e in problem["errors"]] == [1, 2, 3, 4]
    assert problem["errors"][0]["field"] == "action"
    assert problem["errors"][1]["field"] == "tokens_input"
    assert factories.count_events(owner) == 0


def test_a_batch_over_a_thousand_is_refused(
    api_server: RunningApi, owner: psycopg.Connection[Any], member: tuple[uuid.UUID, uuid.UUID]
) -> None:
    user, _ = member
    answer = api_server.as_user(user).post("/v1/events", json=[{"action": ACTION}] * 1001)
    assert answer.status_code == 422
    assert "1 to 1000" in answer.json()["detail"]


def test_writing_into_a_tenant_one_does_not_belong_to_is_refused(
    api_server: RunningApi, owner: psycopg.Connection[Any], member: tuple[uuid.UUID, uuid.UUID]
) -> None:
    user, _ = member
    foreign = factories.add_tenant(owner)
    answer = api_server.as_user(user).post("/v1/events", json={"action": ACTION, "tenant_id": str(foreign)})
    assert answer.status_code == 403
    assert answer.json()["type"] == "urn:usagemeter:problem:write-refused"
    forged = api_server.as_user(user).post(
        "/v1/events", json={"action": ACTION, "user_id": str(factories.add_user(owner))}
    )
    assert forged.status_code == 403
    assert factories.count_events(owner) == 0


def test_the_service_role_writes_for_anyone(
    api_server: RunningApi, owner: psycopg.Connection[Any], member: tuple[uuid.UUID, uuid.UUID]
) -> None:
    user, tenant = member
    answer = api_server.as_service().post(
        "/v1/events",
        json={"action": ACTION, "tenant_id": str(tenant), "user_id": str(user), "created_at": "2026-06-01T10:00:00Z"},
    )
    assert answer.status_code == 201, answer.text
    assert answer.json()["created_at"].startswith("2026-06-01T10:00:00")


def test_a_user_token_claiming_service_role_in_a_forged_way_is_refused(
    api_server: RunningApi, owner: psycopg.Connection[Any], member: tuple[uuid.UUID, uuid.UUID]
) -> None:
    user, tenant = member
    from tests.http_server import SECRET
    from usagemeter.api import auth

    other_secret = auth.mint(SECRET + "x", user_id=None, role="service_role")
    answer = api_server.client(other_secret).post(
        "/v1/events", json={"action": ACTION, "tenant_id": str(tenant), "user_id": str(user)}
    )
    assert answer.status_code == 401
    assert "WWW-Authenticate" in answer.headers


def test_a_hard_budget_refusal_is_429_naming_the_budget(
    api_server: RunningApi, owner: psycopg.Connection[Any], member: tuple[uuid.UUID, uuid.UUID], app_database_url: str
) -> None:
    user, tenant = member
    from usagemeter import db

    with db.connect_app(app_database_url, autocommit=True) as conn:
        budget = budgets.set_budget(
            conn, budgets.BudgetSpec(tenant_id=tenant, metric="events", limit=Decimal(2), period="month", mode="hard")
        )
    client = api_server.as_user(user)
    for _ in range(2):
        assert client.post("/v1/events", json={"action": ACTION, "tenant_id": str(tenant)}).status_code == 201
    refused = client.post("/v1/events", json={"action": ACTION, "tenant_id": str(tenant)})
    assert refused.status_code == 429
    problem = refused.json()
    assert problem["budget"]["budget_id"] == str(budget.id)
    assert (problem["budget"]["limit"], problem["budget"]["used"]) == ("2", "2")
    assert factories.count_events(owner) == 2


@pytest.mark.parametrize(
    ("content_type", "body", "status"),
    [
        ("text/plain", b'{"action": "agency:scope:generate"}', 415),
        (None, b'{"action": "agency:scope:generate"}', 415),
        ("application/json", b"{not json", 422),
        ("application/json", b'"a string"', 422),
        ("application/json", b"[]", 422),
        ("application/json", b"[" * 100_000 + b"]" * 100_000, 422),
    ],
)
def test_bad_bodies_get_problems_never_500(
    api_server: RunningApi,
    owner: psycopg.Connection[Any],
    member: tuple[uuid.UUID, uuid.UUID],
    content_type: str | None,
    body: bytes,
    status: int,
) -> None:
    user, _ = member
    headers = {"Content-Type": content_type} if content_type else {}
    answer = api_server.as_user(user).post("/v1/events", content=body, headers=headers)
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert factories.count_events(owner) == 0


def test_a_body_over_the_limit_is_413(
    api_server: RunningApi, owner: psycopg.Connection[Any], member: tuple[uuid.UUID, uuid.UUID]
) -> None:
    user, _ = member
    big = json.dumps({"action": ACTION, "metadata": {"blob": "x" * (1024 * 1024)}})
    answer = api_server.as_user(user).post("/v1/events", content=big, headers={"Content-Type": "application/json"})
    assert answer.status_code == 413
    assert answer.json()["type"] == "urn:usagemeter:problem:payload-too-large"

    def chunks() -> Iterator[bytes]:
        yield b'{"action": "agency:scope:generate", "metadata": {"blob": "'
        for _ in range(20):
            yield b"y" * 65536
        yield b'"}}'

    streamed = api_server.as_user(user).post(
        "/v1/events", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert streamed.status_code == 413
    assert factories.count_events(owner) == 0


def test_the_header_key_and_a_different_body_key_disagree(
    api_server: RunningApi, owner: psycopg.Connection[Any], member: tuple[uuid.UUID, uuid.UUID]
) -> None:
    user, _ = member
    answer = api_server.as_user(user).post(
        "/v1/events", json={"action": ACTION, "idempotency_key": "a"}, headers={"Idempotency-Key": "b"}
    )
    assert answer.status_code == 422
    assert answer.json()["errors"][0]["field"] == "idempotency_key"


def test_void_is_for_the_service_role_only(
    api_server: RunningApi, owner: psycopg.Connection[Any], member: tuple[uuid.UUID, uuid.UUID]
) -> None:
    user, tenant = member
    created = api_server.as_user(user).post(
        "/v1/events", json={"action": ACTION, "tenant_id": str(tenant), "tokens_input": 4}
    )
    event_id = created.json()["id"]
    refused = api_server.as_user(user).post(f"/v1/events/{event_id}/void", json={"reason": "mine"})
    assert refused.status_code == 403
    voided = api_server.as_service().post(f"/v1/events/{event_id}/void", json={"reason": "duplicate call"})
    assert voided.status_code == 200, voided.text
    assert voided.json()["kind"] == "void"
    again = api_server.as_service().post(f"/v1/events/{event_id}/void", json={"reason": "again"})
    assert again.status_code == 409
    missing = api_server.as_service().post(f"/v1/events/{uuid.uuid4()}/void", json={"reason": "x"})
    assert missing.status_code == 404
    empty = api_server.as_service().post(f"/v1/events/{event_id}/void", json={"reason": ""})
    assert empty.status_code == 422
