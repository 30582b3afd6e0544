"""Listing cursors: what encode_cursor gives decodes back; anything else is a ReportError naming the cursor."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from usagemeter.reporting import filters, listing


def forged(payload: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")


@given(
    created_at=st.datetimes(
        min_value=filters.EARLIEST.replace(tzinfo=None),
        max_value=filters.LATEST.replace(tzinfo=None),
        timezones=st.just(UTC),
    ),
    event_id=st.uuids(),
)
def test_a_cursor_decodes_to_what_was_encoded(created_at: datetime, event_id: uuid.UUID) -> None:
    assert listing.decode_cursor(listing.encode_cursor(created_at, event_id)) == (created_at, event_id)


def test_a_cursor_is_the_same_moment_in_any_zone() -> None:
    event_id = uuid.uuid4()
    paris = datetime(2026, 6, 1, 12, tzinfo=timezone(timedelta(hours=2)))
    assert listing.encode_cursor(paris, event_id) == listing.encode_cursor(paris.astimezone(UTC), event_id)


@pytest.mark.parametrize(
    "cursor",
    [
        "",
        "not-base64!",
        "bm9wZQ",  # "nope"
        "WyJ4IiwgInkiXQ",  # ["x", "y"]
        forged(["2026-06-01T00:00:00", str(uuid.uuid4())]),  # naive
        forged(["2026-06-01T00:00:00+00:00", "not-a-uuid"]),
        forged(["2026-06-01T00:00:00+00:00"]),
        forged({"at": "2026-06-01T00:00:00+00:00"}),
        forged(["9999-12-31T23:59:59.999999+00:00", str(uuid.uuid4())]),  # far future: +1 µs would overflow
        forged(["0001-01-01T00:00:00+09:00", str(uuid.uuid4())]),  # before year 1 in UTC
        forged([[[[[[]]]]], str(uuid.uuid4())]),
        base64.urlsafe_b64encode(b"[" * 100_000).decode(),  # deeper than json can parse
        base64.urlsafe_b64encode(b"\xff\xfe").decode(),
    ],
)
def test_anything_else_is_a_report_error_naming_the_cursor(cursor: str) -> None:
    with pytest.raises(filters.ReportError, match=r"^cursor: malformed cursor"):
        listing.decode_cursor(cursor)
