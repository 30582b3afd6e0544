"""Report parameters: every bad one is a ReportError naming the field, with no database involved."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from usagemeter.reporting import filters, listing, summaries

JANUARY: dict[str, Any] = {
    "scope": "all",
    "start": datetime(2026, 1, 1, tzinfo=UTC),
    "end": datetime(2026, 2, 1, tzinfo=UTC),
}


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": 1}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"group_by": ("tenant",)}, r"^group_by\.0: "),
        ({"group_by": ("action", "action")}, r"^group_by: a grouping key is repeated"),
        ({"start": datetime(2026, 2, 1, tzinfo=UTC), "end": datetime(2026, 1, 1, tzinfo=UTC)}, "inverted"),
        ({"start": datetime(2026, 1, 1, tzinfo=UTC), "end": datetime(2026, 1, 1, tzinfo=UTC)}, "empty or inverted"),
        ({"start": datetime(2026, 1, 1)}, r"^start: "),  # naive
        ({"tz": "Mars/Olympus"}, r"^tz: unknown time zone 'Mars/Olympus'"),
        ({"tz": "right/UTC"}, r"^tz: 'right/UTC' counts leap seconds, which PostgreSQL does not support: use 'UTC'"),
        ({"tz": "../etc/passwd"}, r"^tz: unknown time zone"),
        ({"bucket": "fortnight"}, r"^bucket: "),
        ({"scope": "tenant"}, "scope 'tenant' needs tenant_id"),
        ({"scope": "user"}, "scope 'user' .* needs user_id"),
        ({"top": 0}, r"^top: "),
        ({"limit": 5}, r"^limit: Extra inputs"),
        (
            {"start": datetime(1, 1, 1, tzinfo=ZoneInfo("Asia/Tokyo"))},
            r"^start: .* outside the range a report can cover",
        ),
        ({"end": datetime(9999, 12, 31, 23, tzinfo=ZoneInfo("America/Los_Angeles"))}, r"^end: .* outside the range"),
        ({"end": datetime.max.replace(tzinfo=UTC)}, r"^end: .*0002-01-01 \(earliest\) to 9999-01-01 \(latest\) UTC"),
        ({"metadata": nested(filters.METADATA_MAX_DEPTH + 1)}, r"^metadata: nested too deeply \(more than 100 levels"),
        ({"metadata": nested(5000)}, r"^metadata: nested too deeply"),
        ({"metadata": {"a": float("inf")}}, r"^metadata: numbers must be finite"),
        ({"metadata": {"a": [float("nan")]}}, r"^metadata: numbers must be finite"),
        ({"metadata": {"a": "x\x00"}}, r"^metadata: strings cannot contain NUL"),
        ({"metadata": {"\x00": 1}}, r"^metadata: strings cannot contain NUL"),
        ({"metadata": {"a": "\ud800"}}, r"^metadata: strings must be valid Unicode"),
        ({"metadata": {"a": {1, 2}}}, r"^metadata: values must be JSON"),
    ],
)
def test_bad_summary_parameters_name_the_field(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(filters.ReportError, match=message):
        filters.query_from(summaries.SummaryQuery, **{**JANUARY, **fields})


@pytest.mark.parametrize(
    ("fields", "message"),
    [({"limit": 0}, r"^limit: "), ({"limit": 10_001}, r"^limit: "), ({"bucket": "day"}, r"^bucket: Extra inputs")],
)
def test_bad_listing_parameters_name_the_field(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(filters.ReportError, match=message):
        filters.query_from(listing.ListQuery, **{**JANUARY, **fields})


def test_the_whole_reportable_range_is_accepted() -> None:
    query = filters.query_from(summaries.SummaryQuery, scope="all", start=filters.EARLIEST, end=filters.LATEST)
    assert (query.start, query.end) == (filters.EARLIEST, filters.LATEST)
    assert filters.query_from(filters.UsageFilter, **JANUARY, metadata=nested(filters.METADATA_MAX_DEPTH)).metadata
    text_like_escapes = {"a": "\\u0000 is six characters", "b": "\U0001f600", "\\": "\\\\"}
    assert filters.query_from(filters.UsageFilter, **JANUARY, metadata=text_like_escapes).metadata == text_like_escapes


@pytest.mark.parametrize(
    ("value", "depth"), [({}, 1), ({"a": 1}, 1), ({"a": [1]}, 2), ({"a": [{"b": []}], "c": {}}, 4), (nested(7), 7)]
)
def test_metadata_depth_counts_nested_objects_and_lists(value: dict[str, Any], depth: int) -> None:
    assert filters.metadata_depth(value) == depth


def test_time_zone_gives_the_zone_or_names_tz() -> None:
    assert filters.time_zone("Europe/Paris") == ZoneInfo("Europe/Paris")
    for bad in ("", "Nowhere/Else", "right/Europe/Paris"):
        with pytest.raises(filters.ReportError, match=r"^tz: "):
            filters.time_zone(bad)
