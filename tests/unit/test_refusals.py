"""The SQLSTATE mapping and claim checks, without a database: what is retried, what is refused, what is sent."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import psycopg
import pytest
from psycopg import errors as pgerrors

from usagemeter import errors
from usagemeter.db import refusals
from usagemeter.recording.event import validated_claims


@pytest.mark.parametrize(
    "failure",
    [
        pgerrors.SerializationFailure(),
        pgerrors.DeadlockDetected(),
        pgerrors.AdminShutdown(),
        pgerrors.ConnectionFailure(),
        pgerrors.ReadOnlySqlTransaction(),
        psycopg.OperationalError("server closed the connection unexpectedly"),
        psycopg.InterfaceError("the connection is closed"),
    ],
)
def test_connection_and_server_failures_are_transient(failure: Exception) -> None:
    assert refusals.is_transient(failure)


@pytest.mark.parametrize(
    "failure",
    [
        pgerrors.RaiseException(),
        pgerrors.ProgramLimitExceeded(),
        pgerrors.QueryCanceled(),
        pgerrors.CheckViolation(),
        pgerrors.PipelineAborted(),
        ValueError("a bug"),
    ],
)
def test_everything_else_is_a_refusal_of_the_event(failure: Exception) -> None:
    assert not refusals.is_transient(failure)
    refused = refusals.refusal(failure, index=4)
    assert isinstance(refused, errors.EventRejected)
    assert refused.index == 4
    assert str(refused).startswith("event 4: ")


def test_a_raise_exception_keeps_the_database_words() -> None:
    refused = refusals.refusal(pgerrors.RaiseException("budget exceeded"), index=0)
    assert isinstance(refused, errors.WriteRefused)
    assert refused.sqlstate == "P0001"


def test_read_only_names_its_cause_once_retries_are_spent() -> None:
    unavailable = refusals.unavailable(pgerrors.ReadOnlySqlTransaction("cannot execute INSERT"), attempts=8)
    assert isinstance(unavailable, errors.DatabaseReadOnly)
    assert "read-only" in str(unavailable)
    assert isinstance(refusals.unavailable(psycopg.OperationalError("gone"), attempts=8), errors.DatabaseUnavailable)


def test_register_needs_a_sqlstate_or_a_class() -> None:
    with pytest.raises(ValueError, match="SQLSTATE"):
        refusals.register("UB0", lambda failure, index: errors.EventRejected("x"))


def test_claims_are_sent_as_json_the_database_takes() -> None:
    user, session = uuid.uuid4(), uuid.uuid4()
    when = datetime(2026, 1, 1, tzinfo=UTC)
    claims = validated_claims({"sub": user, "app": {"sessions": [session]}, "at": when, "n": 1.5, "ok": True})
    assert claims == {
        "sub": str(user),
        "app": {"sessions": [str(session)]},
        "at": when.isoformat(),
        "n": 1.5,
        "ok": True,
    }


@pytest.mark.parametrize(
    ("claims", "message"),
    [
        ({"email": "a\udc80"}, "claims: email must be valid Unicode"),
        ({"app": {"nick": "a\x00"}}, "claims: app.nick cannot contain NUL"),
        ({"x": float("nan")}, "claims: x must be finite"),
        ({"x": object()}, "claims: x must be JSON"),
        ({"x": {1: "a"}}, "claims: x has a key that is not a string"),
    ],
)
def test_claims_the_database_cannot_take_are_named(claims: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        validated_claims(claims)
