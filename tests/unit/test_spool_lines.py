"""Reading spool lines that a crash, a full disk or a hand edit left broken: each way has one answer."""

from __future__ import annotations

import json
import uuid

import pytest

from usagemeter import errors
from usagemeter.db import Identity
from usagemeter.recording import importing, spool
from usagemeter.recording.event import UsageEvent
from usagemeter.recording.writer import Pending


def record(**metadata: object) -> spool.SpooledEvent:
    event = UsageEvent(action="a:b:c", user_id=uuid.uuid4(), metadata=dict(metadata))
    return spool.SpooledEvent(Identity.service(), Pending.of(event))


def test_a_record_reads_back_as_itself() -> None:
    original = record(model="gpt")
    (parsed,) = spool.parse_line(original.to_line().encode())
    assert parsed == original


def test_a_torn_write_glued_to_a_later_record_gives_up_only_the_torn_part() -> None:
    later = record(role="a metadata key named like the record's first field")
    torn = record(role="x").to_line()[:120]  # cut inside the metadata, after its own {"role":
    assert torn.count('{"role":') == 2
    torn_part, parsed = spool.parse_line((torn + later.to_line()).encode())
    assert parsed == later
    assert isinstance(torn_part, spool.Unreadable)
    assert torn_part.raw == torn.encode()


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"\xff\xfe", "UnicodeDecodeError"),
        (b"[" * 5000 + b"]" * 5000, "nested too deeply"),
        (b'{"role":"postgres","claims":{},"id":"x","event":{}}', "role must be one of"),
        (b'{"role":"anon","claims":[],"id":"x","event":{}}', "claims an object"),
        (b'{"role":"anon","claims":{}}', "KeyError"),
    ],
)
def test_anything_else_is_unreadable_with_a_reason(raw: bytes, reason: str) -> None:
    (unreadable,) = spool.parse_line(raw)
    assert isinstance(unreadable, spool.Unreadable)
    assert reason in unreadable.reason


def test_claims_json_cannot_encode_are_spooled_as_text() -> None:
    user = uuid.uuid4()
    line = spool.SpooledEvent(Identity.user(user), Pending.of(UsageEvent(action="a:b:c", user_id=user))).to_line()
    assert json.loads(line)["claims"]["sub"] == str(user)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b'{"action": "caf\xe9"}', "not UTF-8: byte 0xe9 at column 16"),
        (b"[" * 5000 + b"]" * 5000, "nested too deeply"),
        (b'{"action": "a:b:c", "idempotency_key": "k-\\udc80"}', "not valid Unicode: a lone surrogate ('\\udc80')"),
        (b"[1]", "expected a JSON object, got list"),
    ],
)
def test_import_lines_say_what_is_wrong(raw: bytes, message: str) -> None:
    with pytest.raises(errors.InvalidEvent) as failure:
        importing.parse_line(raw)
    assert message in str(failure.value)


def test_import_lines_take_the_acting_user_when_they_name_none() -> None:
    user = uuid.uuid4()
    assert importing.parse_line(b'{"action": "a:b:c"}', default_user=user).user_id == user
