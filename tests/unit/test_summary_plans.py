"""Where a summary reads from, and how many buckets it spans: pure arithmetic, no database."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from usagemeter.reporting import report_sql, summaries

T0 = datetime(2026, 6, 1, tzinfo=UTC)


def plan(start: datetime, end: datetime, **fields: Any) -> summaries.SourcePlan:
    return summaries.source_plan(summaries.SummaryQuery(scope="all", start=start, end=end, **fields))


@pytest.mark.parametrize(
    ("start", "end", "fields", "source", "parts"),
    [
        (T0, T0 + timedelta(days=3), {}, "daily", ["days"]),
        (T0 + timedelta(minutes=10), T0 + timedelta(days=3, hours=2, minutes=20), {}, "daily",
         ["days", "hours_head", "hours_tail", "raw_head", "raw_tail"]),
        (T0 + timedelta(hours=5), T0 + timedelta(days=3), {}, "daily", ["days", "hours_head"]),
        (T0 + timedelta(hours=5), T0 + timedelta(hours=9), {}, "hourly", ["hours"]),
        (T0 + timedelta(minutes=5), T0 + timedelta(minutes=50), {}, "raw", ["raw"]),
        (T0, T0 + timedelta(days=3), {"metadata": {"model": "a"}}, "raw", ["raw"]),
        (T0, T0 + timedelta(days=3), {"bucket": "hour"}, "hourly", ["hours"]),
        (T0, T0 + timedelta(days=3), {"bucket": "day"}, "daily", ["days"]),
        (T0, T0 + timedelta(days=3), {"bucket": "day", "tz": "Europe/Paris"}, "hourly", ["hours"]),
        (T0, T0 + timedelta(days=3), {"bucket": "day", "tz": "Asia/Kolkata"}, "raw", ["raw"]),
        (T0, T0 + timedelta(days=3), {"tz": "Asia/Kolkata"}, "daily", ["days"]),  # no bucket: the zone is moot
    ],
)  # fmt: skip
def test_source_plan_picks_the_coarsest_exact_parts(
    start: datetime, end: datetime, fields: dict[str, Any], source: str, parts: list[str]
) -> None:
    chosen = plan(start, end, **fields)
    assert (chosen.source, chosen.parts) == (source, parts)


def test_one_tenant_without_users_reads_the_tenant_wide_days() -> None:
    tenant = uuid.uuid4()
    query = summaries.SummaryQuery(scope="tenant", tenant_id=tenant, start=T0, end=T0 + timedelta(days=3))
    assert summaries.source_plan(query).parts == ["tenant_days"]
    by_user = query.model_copy(update={"group_by": ("user",)})
    assert summaries.source_plan(by_user).parts == ["days"]


def local_buckets(start: datetime, end: datetime, bucket: str, tz: str) -> int:
    """The buckets of [start, end) enumerated one by one in the zone: an oracle for bucket_count."""
    zone = ZoneInfo(tz)
    if bucket == "hour":
        first = start.astimezone(zone).replace(minute=0, second=0, microsecond=0).astimezone(UTC)
        count, moment = 0, first
        while moment < end:
            count, moment = count + 1, moment + timedelta(hours=1)
        return count
    day = start.astimezone(zone).date()
    if bucket == "week":
        day -= timedelta(days=day.weekday())
    elif bucket == "month":
        day = day.replace(day=1)
    count = 0
    while datetime(day.year, day.month, day.day, tzinfo=zone) < end:
        count += 1
        if bucket == "day":
            day += timedelta(days=1)
        elif bucket == "week":
            day += timedelta(days=7)
        else:
            day = date(day.year + day.month // 12, day.month % 12 + 1, 1)
    return count


@given(
    start_minutes=st.integers(0, 400 * 24 * 60),
    length_minutes=st.integers(1, 70 * 24 * 60),
    bucket=st.sampled_from(["hour", "day", "week", "month"]),
    tz=st.sampled_from(["UTC", "Europe/Paris", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe"]),
)
def test_bucket_count_equals_the_buckets_enumerated(
    start_minutes: int, length_minutes: int, bucket: str, tz: str
) -> None:
    start = datetime(2025, 9, 1, tzinfo=UTC) + timedelta(minutes=start_minutes)
    end = start + timedelta(minutes=length_minutes)
    query = summaries.SummaryQuery(scope="all", start=start, end=end, bucket=bucket, tz=tz)  # type: ignore[arg-type]
    assert summaries.bucket_count(query) == local_buckets(start, end, bucket, tz)


def test_no_bucket_counts_zero_and_forty_years_of_hours_are_counted_at_once() -> None:
    query = summaries.SummaryQuery(
        scope="all", start=datetime(1990, 1, 1, tzinfo=UTC), end=datetime(2030, 1, 1, tzinfo=UTC)
    )
    assert summaries.bucket_count(query) == 0
    assert summaries.bucket_count(query.model_copy(update={"bucket": "hour"})) == 350_640


@pytest.mark.parametrize(("scope", "owner"), [("tenant", "%(tenant_id)s"), ("user", "%(user_id)s"), ("all", None)])
def test_routed_summaries_name_the_owner_key_in_every_part(scope: report_sql.Scope, owner: str | None) -> None:
    """On a distributed database a one-owner summary filters every table it reads by owner_id (one shard)."""
    fields: dict[str, Any] = {"tenant_id": uuid.uuid4()} if scope == "tenant" else {"user_id": uuid.uuid4()}
    query = summaries.SummaryQuery(
        scope=scope, start=T0 + timedelta(minutes=10), end=T0 + timedelta(days=3, minutes=20), **fields
    )
    routed = summaries.summary_statement(query, routed=True)[0].as_string(None)
    single = summaries.summary_statement(query)[0].as_string(None)
    parts = routed.count(" from public.usage_")
    assert parts == 5  # whole days, the hours before them, raw edges at both ends, and the deltas
    assert "owner_id" not in single
    if owner is None:
        assert "owner_id" not in routed
    else:
        assert routed.count(f"e.owner_id = {owner}") == parts
