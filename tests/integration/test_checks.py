"""Every CHECK on usage_events rejects what it should, names itself in the error, and accepts its boundaries."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest
from psycopg import errors as pgerrors
from psycopg import sql as pgsql

from tests import factories


def insert(conn: psycopg.Connection[Any], **columns: Any) -> None:
    user = factories.add_user(conn)
    values: dict[str, Any] = {"user_id": user, "action": "agency:scope:generate", **columns}
    if "metadata" in values and not isinstance(values["metadata"], str):
        values["metadata"] = json.dumps(values["metadata"])
    names = list(values)
    statement = pgsql.SQL("insert into public.usage_events ({}) values ({})").format(
        pgsql.SQL(", ").join(map(pgsql.Identifier, names)), pgsql.SQL(", ").join([pgsql.Placeholder()] * len(names))
    )
    conn.execute(statement, [values[n] for n in names])


REJECTED = [
    ("usage_events_action_format", {"action": "agency:scope"}),
    ("usage_events_action_format", {"action": "agency:scope:generate:extra"}),
    ("usage_events_action_format", {"action": "Agency:scope:generate"}),
    ("usage_events_action_format", {"action": "agency::generate"}),
    ("usage_events_action_format", {"action": "agency:scope:gen erate"}),
    ("usage_events_action_format", {"action": "a:b:" + "c" * 197}),
    ("usage_events_module_id_matches_action", {"module_id": "billing"}),
    ("usage_events_tokens_input_nonnegative", {"tokens_input": -1}),
    ("usage_events_tokens_output_nonnegative", {"tokens_output": -1}),
    ("usage_events_metadata_is_object", {"metadata": "[]"}),
    ("usage_events_metadata_is_object", {"metadata": '"text"'}),
    ("usage_events_metadata_is_object", {"metadata": "null"}),
    ("usage_events_metadata_size", {"metadata": {"k": "x" * 16384}}),
    ("usage_events_owner_present", {"user_id": None}),
    ("usage_events_idempotency_key_length", {"idempotency_key": ""}),
    ("usage_events_idempotency_key_length", {"idempotency_key": "k" * 201}),
]


@pytest.mark.parametrize(("constraint", "columns"), REJECTED, ids=[f"{c}-{i}" for i, (c, _) in enumerate(REJECTED)])
def test_check_rejects_with_its_name(owner: psycopg.Connection[Any], constraint: str, columns: dict[str, Any]) -> None:
    with pytest.raises(pgerrors.CheckViolation) as raised:
        insert(owner, **columns)
    assert raised.value.diag.constraint_name == constraint
    assert constraint in str(raised.value)
    assert factories.count_events(owner) == 0


def metadata_of_text_size(size: int) -> dict[str, str]:
    """An object whose jsonb text form is exactly `size` bytes: {"k": "xxx"} is 9 bytes plus the x's."""
    return {"k": "x" * (size - 9)}


ACCEPTED = [
    {"action": "a:b:c"},
    {"action": "a_1:b-2:c_3"},
    {"action": "a:b:" + "c" * 196},  # exactly 200 characters
    {"action": "agency:scope:generate", "module_id": "agency"},
    {"tokens_input": 0, "tokens_output": 0},
    {"tokens_input": 1_000_000_000, "tokens_output": 1_000_000_000},
    {"metadata": {}},
    {"metadata": metadata_of_text_size(16384)},
    {"idempotency_key": "k"},
    {"idempotency_key": "k" * 200},
]


@pytest.mark.parametrize("columns", ACCEPTED, ids=[str(i) for i in range(len(ACCEPTED))])
def test_boundary_values_are_accepted(owner: psycopg.Connection[Any], columns: dict[str, Any]) -> None:
    insert(owner, **columns)
    assert factories.count_events(owner) == 1


def test_metadata_size_boundary_is_exact(owner: psycopg.Connection[Any]) -> None:
    row = owner.execute("select octet_length(%s::jsonb::text)", (json.dumps(metadata_of_text_size(16384)),)).fetchone()
    assert row == (16384,)
    with pytest.raises(pgerrors.CheckViolation):
        insert(owner, metadata=metadata_of_text_size(16385))


def test_tokens_total_is_computed_and_cannot_be_written(owner: psycopg.Connection[Any]) -> None:
    insert(owner, tokens_input=3, tokens_output=4)
    assert owner.execute("select tokens_total from public.usage_events").fetchone() == (7,)
    with pytest.raises(pgerrors.GeneratedAlways):
        insert(owner, tokens_total=1)


def test_tokens_are_not_null(owner: psycopg.Connection[Any]) -> None:
    with pytest.raises(pgerrors.NotNullViolation) as raised:
        insert(owner, tokens_input=None)
    assert raised.value.diag.column_name == "tokens_input"


def test_unknown_tenant_is_a_foreign_key_error(owner: psycopg.Connection[Any]) -> None:
    with pytest.raises(pgerrors.ForeignKeyViolation) as raised:
        insert(owner, tenant_id="00000000-0000-0000-0000-000000000001")
    assert raised.value.diag.constraint_name == "usage_events_tenant_id_fkey"


def test_idempotency_key_is_unique_per_tenant_and_user_including_personal(owner: psycopg.Connection[Any]) -> None:
    user = factories.add_user(owner)
    other = factories.add_user(owner)
    tenant = factories.add_tenant(owner)
    statement = (
        "insert into public.usage_events (tenant_id, user_id, action, idempotency_key) values (%s, %s, 'a:b:c', %s)"
    )
    owner.execute(statement, (None, user, "k1"))
    with pytest.raises(pgerrors.UniqueViolation) as raised:
        owner.execute(statement, (None, user, "k1"))
    # Unique across the monthly partitions: enforced by usagemeter_private.usage_event_keys.
    assert raised.value.diag.constraint_name == "usage_event_keys_idempotency_key_idx"
    owner.execute(statement, (None, other, "k1"))  # another user's key never collides
    owner.execute(statement, (tenant, user, "k1"))  # same user, another scope
    owner.execute(statement, (None, user, None))
    owner.execute(statement, (None, user, None))  # no key, no collision
    assert factories.count_events(owner) == 5
