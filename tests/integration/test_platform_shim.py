"""The shim's auth functions read claims exactly as Supabase's do."""

from __future__ import annotations

import json
import uuid
from typing import Any

import psycopg
import pytest


def claims_as_seen(conn: psycopg.Connection[Any], settings: dict[str, str]) -> tuple[Any, ...]:
    with conn.transaction(force_rollback=True):
        for name, value in settings.items():
            conn.execute("select set_config(%s, %s, true)", (name, value))
        row = conn.execute("select auth.uid(), auth.role(), auth.email(), auth.jwt()").fetchone()
    assert row is not None
    return tuple(row)


def test_reads_request_jwt_claims(owner: psycopg.Connection[Any]) -> None:
    user = uuid.uuid4()
    claims = {"sub": str(user), "role": "authenticated", "email": "x@example.test"}
    assert claims_as_seen(owner, {"request.jwt.claims": json.dumps(claims)}) == (
        user,
        "authenticated",
        "x@example.test",
        claims,
    )


def test_legacy_claim_sub_setting_wins(owner: psycopg.Connection[Any]) -> None:
    legacy, modern = uuid.uuid4(), uuid.uuid4()
    seen = claims_as_seen(
        owner, {"request.jwt.claim.sub": str(legacy), "request.jwt.claims": json.dumps({"sub": str(modern)})}
    )
    assert seen[0] == legacy


@pytest.mark.parametrize("claims", ["", json.dumps({})])
def test_missing_claims_mean_no_user(owner: psycopg.Connection[Any], claims: str) -> None:
    assert claims_as_seen(owner, {"request.jwt.claims": claims})[0] is None


def test_an_empty_sub_claim_is_an_error_as_on_supabase(owner: psycopg.Connection[Any]) -> None:
    """The empty-string guard applies to the settings, not to a claim inside them: '' is no uuid."""
    with pytest.raises(psycopg.errors.InvalidTextRepresentation):
        claims_as_seen(owner, {"request.jwt.claims": json.dumps({"sub": ""})})
