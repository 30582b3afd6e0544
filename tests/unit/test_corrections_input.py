"""A correction's input is checked before anything is sent, with errors that name the field."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from usagemeter import errors
from usagemeter.billing import corrections


class NoDatabase:
    """A connection that must never be used: validation fails first."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the database was reached ({name})")


NO_DATABASE: Any = NoDatabase()


@pytest.mark.parametrize(
    ("reason", "message"),
    [
        ("", "reason: a correction needs a reason"),
        (" \t\n", "reason: a correction needs a reason"),
        ("x" * 1001, "reason: at most 1000 characters, got 1001"),
        ("bad\x00byte", "reason: must not contain a NUL character"),
    ],
)
@pytest.mark.parametrize("kind", ["void", "amend"])
def test_a_bad_reason_is_refused_before_the_database(reason: str, message: str, kind: str) -> None:
    with pytest.raises(errors.InvalidCorrection, match=message) as refused:
        correct(kind, reason)
    assert refused.value.field == "reason"


def correct(kind: str, reason: str) -> corrections.Correction:
    if kind == "void":
        return corrections.void(NO_DATABASE, event_id=uuid.uuid4(), reason=reason)
    return corrections.amend(NO_DATABASE, event_id=uuid.uuid4(), tokens_input=1, tokens_output=1, reason=reason)


def test_a_reason_is_kept_trimmed_up_to_1000_characters() -> None:
    assert corrections.checked_reason("  " + "y" * 1000 + "\n") == "y" * 1000


@pytest.mark.parametrize("field", ["tokens_input", "tokens_output"])
@pytest.mark.parametrize(
    ("value", "message"),
    [
        (-1, "must be between 0 and 2147483647, got -1"),
        (2**31, "must be between 0 and 2147483647, got 2147483648"),
        (True, "expected a whole number, got True"),
        (1.5, "expected a whole number, got 1.5"),
        ("3", "expected a whole number, got '3'"),
    ],
)
def test_a_bad_token_count_names_its_field(field: str, value: object, message: str) -> None:
    counts: dict[str, Any] = {"tokens_input": 1, "tokens_output": 1, field: value}
    with pytest.raises(errors.InvalidCorrection, match=f"^{field}: {message}$") as refused:
        corrections.amend(NO_DATABASE, event_id=uuid.uuid4(), reason="r", **counts)
    assert refused.value.field == field


def test_the_largest_token_count_passes() -> None:
    assert corrections.checked_token_count(2**31 - 1, field="tokens_input") == 2**31 - 1
    assert corrections.checked_token_count(0, field="tokens_output") == 0


def test_an_event_id_must_be_a_uuid() -> None:
    with pytest.raises(errors.InvalidCorrection, match="event_id: expected a UUID, got 'nope'") as refused:
        corrections.void(NO_DATABASE, event_id="nope", reason="r")  # type: ignore[arg-type]
    assert refused.value.field == "event_id"


def test_an_entry_and_a_history_add_up() -> None:
    event_id = uuid.uuid4()
    amend = corrections.Correction(
        entry_id=uuid.uuid4(), event_id=event_id, kind="amend", tokens_input=5, tokens_output=-2,
        cost=Decimal("0.5"), reason="fix",
    )  # fmt: skip
    void = corrections.Correction(
        entry_id=uuid.uuid4(), event_id=event_id, kind="void", tokens_input=-15, tokens_output=-3,
        cost=Decimal("-1.5"), reason="gone",
    )  # fmt: skip
    assert amend.as_dict() == {
        "entry_id": str(amend.entry_id), "event_id": str(event_id), "kind": "amend", "tokens_input": 5,
        "tokens_output": -2, "cost": "0.5", "event_count": 0, "reason": "fix",
    }  # fmt: skip
    assert void.event_count == -1
    original = corrections.OriginalEvent(
        id=event_id, tenant_id=None, user_id=uuid.uuid4(), action="a:b:c", model=None, tokens_input=10,
        tokens_output=5, cost=Decimal(1), created_at=datetime(2026, 6, 1, tzinfo=UTC),
    )  # fmt: skip
    amended = corrections.History(event=original, corrections=(amend,))
    assert (amended.events, amended.tokens_input, amended.tokens_output, amended.cost) == (1, 15, 3, Decimal("1.5"))
    assert not amended.void
    voided = corrections.History(event=original, corrections=(amend, void))
    assert (voided.events, voided.tokens_input, voided.tokens_output, voided.cost) == (0, 0, 0, Decimal(0))
    assert voided.void
