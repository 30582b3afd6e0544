"""UsageEvent validation: each bad input is refused with the field it concerns named, before any database."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import pytest

from usagemeter import errors
from usagemeter.recording import recorder

USER = uuid.uuid4()
GOOD: dict[str, Any] = {"action": "agency:scope:generate", "user_id": USER}


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"action": "generate"}, "action", "expected <module>:<domain>:<verb>"),
        ({"action": "Agency:scope:generate"}, "action", "three segments of a-z 0-9 _ -"),
        ({"action": "a:b:c:d"}, "action", "three segments"),
        ({"action": "a:b:" + "c" * 200}, "action", "at most 200 characters"),
        ({"action": 7}, "action", "valid string"),
        ({"user_id": "not-a-uuid"}, "user_id", "UUID"),
        ({"tenant_id": "x"}, "tenant_id", "UUID"),
        ({"tokens_input": -1}, "tokens_input", "greater than or equal to 0"),
        ({"tokens_output": 2**31}, "tokens_output", "less than or equal to 2147483647"),
        ({"tokens_input": "5"}, "tokens_input", "valid integer"),
        ({"tokens_input": 1.0}, "tokens_input", "valid integer"),
        ({"tokens_input": True}, "tokens_input", "valid integer"),
        ({"metadata": []}, "metadata", "must be a JSON object, got list"),
        ({"metadata": {"x": float("nan")}}, "metadata", "finite"),
        ({"metadata": {"x": object()}}, "metadata", "must be JSON"),
        ({"metadata": {"x": "a\x00b"}}, "metadata", "NUL"),
        ({"metadata": {"x": "\ud800"}}, "metadata", "valid Unicode"),
        ({"metadata": {"x": "y" * 16_400}}, "metadata", "more than the 16384 allowed"),
        ({"idempotency_key": ""}, "idempotency_key", "1 to 200 characters, got 0"),
        ({"idempotency_key": "k" * 201}, "idempotency_key", "got 201"),
        ({"idempotency_key": "a\x00"}, "idempotency_key", "NUL"),
        ({"created_at": datetime(2026, 6, 1)}, "created_at", "needs a time zone"),
        ({"created_at": "yesterday"}, "created_at", "datetime"),
        ({"surprise": 1}, "surprise", "Extra inputs are not permitted"),
        ({"module_id": "chat"}, None, "module_id 'chat' must equal the action's first segment 'agency'"),
        ({"user_id": None}, None, "needs a tenant_id or a user_id"),
        ({"tokens_input": 2**31 - 1, "tokens_output": 1}, None, "tokens_input + tokens_output must not exceed"),
    ],
)
def test_a_bad_event_names_its_field_and_index(fields: dict[str, Any], field: str | None, message: str) -> None:
    with pytest.raises(errors.InvalidEvent) as raised:
        recorder.validate_events([GOOD, {**GOOD, **fields}], offset=10)
    assert (raised.value.index, raised.value.field) == (11, field)
    assert message in str(raised.value)
    assert str(raised.value).startswith(f"event 11: {field}: " if field else "event 11: ")


def test_the_good_event_passes_with_its_module_derived() -> None:
    [event] = recorder.validate_events([GOOD])
    assert (event.module_id, event.tokens_total, event.metadata) == ("agency", 0, {})
