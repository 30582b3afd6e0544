"""Python's UsageEvent and the database's constraints agree: whatever one accepts, the other accepts."""

from __future__ import annotations

import json
import uuid
from typing import Any

import psycopg
import pydantic
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from psycopg import sql as pgsql

from tests import factories
from usagemeter.recording.event import METADATA_MAX_BYTES, UsageEvent

SEGMENT_ALPHABET = "abz09_-Aé :.\n\x00"
json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**20), 10**20), st.floats(allow_nan=True, allow_infinity=True), st.text()
)
json_values = st.recursive(
    json_scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
)
near_the_size_limit = st.integers(METADATA_MAX_BYTES - 12, METADATA_MAX_BYTES - 6).map(lambda n: {"k": "x" * n})
# What billing reads from metadata: the model (its text at most 200 characters) and the cached-input counts.
billing_metadata = st.fixed_dictionaries(
    {},
    optional={
        "model": st.one_of(st.text(max_size=3), st.integers(198, 202).map("m".__mul__), st.integers(), st.none()),
        "tokens_cached_input": st.one_of(st.integers(-2, 2**31), st.floats(-1, 10), st.booleans(), st.text(max_size=2)),
        "tokens_cache_write": st.one_of(st.integers(-2, 2**31), st.just(2.0), st.none()),
    },
)
token_counts = st.one_of(st.sampled_from([0, 1, -1, 2**30, 2**31 - 1, 2**31]), st.integers(-(2**32), 2**32))


@st.composite
def raw_events(draw: st.DrawFn, users: list[uuid.UUID], tenants: list[uuid.UUID]) -> dict[str, Any]:
    segment = st.text(SEGMENT_ALPHABET, min_size=0, max_size=8)
    action = draw(
        st.one_of(
            st.tuples(segment, segment, segment).map(":".join),
            st.text(SEGMENT_ALPHABET, max_size=12),
            st.integers(190, 205).map(lambda n: "a:b:" + "c" * (n - 4)),
        )
    )
    return {
        "action": action,
        "module_id": draw(st.one_of(st.none(), st.just(action.split(":")[0]), st.text("ab:", max_size=3))),
        "user_id": draw(st.one_of(st.none(), st.sampled_from(users))),
        "tenant_id": draw(st.one_of(st.none(), st.sampled_from(tenants))),
        "tokens_input": draw(token_counts),
        "tokens_output": draw(token_counts),
        "metadata": draw(st.one_of(json_values, near_the_size_limit, billing_metadata)),
        "idempotency_key": draw(st.one_of(st.none(), st.text(max_size=3), st.integers(195, 205).map("k".__mul__))),
    }


def python_accepts(fields: dict[str, Any]) -> bool:
    try:
        UsageEvent.model_validate(fields)
    except pydantic.ValidationError:
        return False
    return True


def database_accepts(conn: psycopg.Connection[Any], fields: dict[str, Any]) -> bool:
    """Insert the raw fields (None metadata means the column default, as in the Python API)."""
    values = {k: v for k, v in fields.items() if not (k == "metadata" and v is None)}
    if "metadata" in values:
        values["metadata"] = json.dumps(values["metadata"])
    names = list(values)
    statement = pgsql.SQL("insert into public.usage_events ({}) values ({})").format(
        pgsql.SQL(", ").join(map(pgsql.Identifier, names)), pgsql.SQL(", ").join([pgsql.Placeholder()] * len(names))
    )
    try:
        with conn.transaction(force_rollback=True):
            conn.execute(statement, [values[n] for n in names])
    except (psycopg.Error, ValueError):
        return False
    return True


@pytest.fixture
def population(owner: psycopg.Connection[Any]) -> tuple[list[uuid.UUID], list[uuid.UUID]]:
    return [factories.add_user(owner) for _ in range(2)], [factories.add_tenant(owner) for _ in range(2)]


def test_python_and_database_agree(
    owner: psycopg.Connection[Any], population: tuple[list[uuid.UUID], list[uuid.UUID]]
) -> None:
    users, tenants = population

    @settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(fields=raw_events(users, tenants))
    @example(fields={"action": "a:b:c", "user_id": users[0], "metadata": {"k": "x" * (METADATA_MAX_BYTES - 9)}})
    @example(fields={"action": "a:b:c", "user_id": users[0], "metadata": {"k": "x" * (METADATA_MAX_BYTES - 8)}})
    @example(fields={"action": "a:b:" + "c" * 196, "user_id": users[0]})  # 200 characters
    @example(fields={"action": "a:b:" + "c" * 197, "user_id": users[0]})  # 201
    @example(fields={"action": "a:b:c", "user_id": users[0], "idempotency_key": "k" * 201})
    @example(fields={"action": "a:b:c", "user_id": users[0], "tokens_input": 2**31 - 1, "tokens_output": 1})
    @example(fields={"action": "a:b:c", "user_id": users[0], "metadata": {"n": 1e100, "m": -0.0, "e": 1.5e-7}})
    @example(fields={"action": "a:b:c", "user_id": users[0], "metadata": {"s": 'é"\\\n\x01\u2028'}})
    def check(fields: dict[str, Any]) -> None:
        assert python_accepts(fields) == database_accepts(owner, fields), fields

    check()
    assert factories.count_events(owner) == 0
