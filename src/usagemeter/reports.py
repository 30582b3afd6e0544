"""Usage summaries and listings, run as the caller's identity so row-level security decides what counts.

    summarize(conn, Identity.user(uid), SummaryQuery(scope="all", start=..., end=..., group_by=["action"]))
    page = list_events(conn, identity, ListQuery(scope="tenant", tenant_id=t, start=..., end=...))
    next_page = list_events(conn, identity, query, cursor=page.next_cursor)

Summaries count raw events for now; rollups (pre-aggregated tables) will answer the same query
for large tables, with the same results.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
import zoneinfo
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Self, TypeVar

import psycopg
from psycopg.rows import dict_row
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from usagemeter import errors
from usagemeter.db import Identity, acting_as
from usagemeter.sql import report_queries

Bucket = Literal["hour", "day", "week", "month"]
GroupKey = report_queries.GroupKey
Scope = report_queries.Scope


class ReportError(errors.UsagemeterError, ValueError):
    """A report was asked for with bad parameters (unknown grouping, inverted range, bad time zone, bad cursor)."""


class UsageFilter(BaseModel):
    """Which events a report covers: a scope, a time range [start, end), and optional narrowing."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    scope: Scope
    tenant_id: uuid.UUID | None = None
    user_id: uuid.UUID | None = None
    start: AwareDatetime
    end: AwareDatetime
    action: str | None = None
    action_prefix: str | None = None
    module: str | None = None
    by_user: uuid.UUID | None = None
    metadata: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.start >= self.end:
            raise ValueError(f"the range is empty or inverted: start {self.start} is not before end {self.end}")
        if self.scope == "tenant" and self.tenant_id is None:
            raise ValueError("scope 'tenant' needs tenant_id")
        if self.scope == "user" and self.user_id is None:
            raise ValueError("scope 'user' (personal usage) needs user_id")
        return self

    def active_filters(self) -> list[str]:
        names = ["action", "action_prefix", "module", "by_user", "metadata"]
        return [name for name in names if getattr(self, name) is not None]

    def parameters(self) -> dict[str, Any]:
        return {
            "tenant_id": self.tenant_id,
            "user_id": self.user_id,
            "start": self.start,
            "end": self.end,
            "action": self.action,
            "action_prefix": self.action_prefix,
            "module": self.module,
            "by_user": self.by_user,
            "metadata": json.dumps(self.metadata) if self.metadata is not None else None,
        }


class SummaryQuery(UsageFilter):
    """Totals over the filter, grouped by keys and optionally by a time bucket in a time zone."""

    group_by: tuple[GroupKey, ...] = ()
    bucket: Bucket | None = None
    tz: str = "UTC"
    top: int | None = Field(default=None, ge=1)

    @field_validator("group_by")
    @classmethod
    def _distinct(cls, keys: tuple[GroupKey, ...]) -> tuple[GroupKey, ...]:
        if len(set(keys)) != len(keys):
            raise ValueError("a grouping key is repeated")
        return keys

    @field_validator("tz")
    @classmethod
    def _known_zone(cls, tz: str) -> str:
        try:
            zoneinfo.ZoneInfo(tz)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {tz!r} (expected an IANA name such as Europe/Paris)") from None
        return tz


class SummaryRow(BaseModel):
    """One group's totals; `keys` holds the grouping values used (action, domain, module_id, user_id, bucket)."""

    model_config = ConfigDict(frozen=True)

    keys: dict[str, Any]
    events: int
    tokens_input: int
    tokens_output: int
    tokens_total: int

    def as_dict(self) -> dict[str, Any]:
        return {**self.keys, "events": self.events, "tokens_input": self.tokens_input,
                "tokens_output": self.tokens_output, "tokens_total": self.tokens_total}  # fmt: skip


QueryModel = TypeVar("QueryModel", bound=BaseModel)


def query_from(model: type[QueryModel], **fields: object) -> QueryModel:
    """Build a query model, turning validation errors into one ReportError that names the field."""
    try:
        return model(**fields)
    except ValidationError as failure:
        first = failure.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        message = str(first["msg"]).removeprefix("Value error, ")
        raise ReportError(f"{where}: {message}" if where else message) from None


def _whole_hours(start: datetime, end: datetime) -> tuple[datetime, datetime]:
    """The whole UTC hours inside [start, end)."""
    floor_start = start.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    full_start = floor_start if floor_start == start else floor_start + timedelta(hours=1)
    return full_start, end.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def summary_source(query: SummaryQuery) -> Literal["rollup", "raw"]:
    """Where a summary's numbers come from; both give the same numbers, the rollup much faster.

    The hourly rollup serves when every bucket is made of whole UTC hours (zones whose offset is
    a whole number of hours) and no filter needs a raw column (metadata).
    """
    zone = zoneinfo.ZoneInfo(query.tz)
    offsets = (query.start.astimezone(zone).utcoffset(), query.end.astimezone(zone).utcoffset())
    whole_hour_zone = all(offset is not None and offset % timedelta(hours=1) == timedelta(0) for offset in offsets)
    full_start, full_end = _whole_hours(query.start, query.end)
    if query.metadata is None and whole_hour_zone and full_start < full_end:
        return "rollup"
    return "raw"


def summarize(conn: psycopg.Connection[Any], identity: Identity, query: SummaryQuery) -> list[SummaryRow]:
    """Totals as `identity` sees them (RLS applies); with a bucket, every bucket of the range, zeros included."""
    use_rollup = summary_source(query) == "rollup"
    statement = report_queries.summary_query(
        query.scope, query.active_filters(), query.group_by, bucketed=query.bucket is not None, use_rollup=use_rollup
    )
    full_start, full_end = _whole_hours(query.start, query.end)
    params = {**query.parameters(), "bucket": query.bucket, "tz": query.tz, "full_start": full_start,
              "full_end": full_end}  # fmt: skip
    with acting_as(conn, identity), conn.cursor(row_factory=dict_row) as cur:
        cur.execute(report_queries.USE_TIME_ZONE, params)
        rows = cur.execute(statement, params).fetchall()
    key_names = [report_queries.GROUP_COLUMNS[k][0] for k in query.group_by]
    if query.bucket is not None:
        key_names.append("bucket")
    result = [
        SummaryRow(
            keys={name: row[name] for name in key_names},
            events=row["events"],
            tokens_input=row["tokens_input"],
            tokens_output=row["tokens_output"],
            tokens_total=row["tokens_total"],
        )
        for row in rows
    ]
    return _top(result, query) if query.top else result


def _top(rows: list[SummaryRow], query: SummaryQuery) -> list[SummaryRow]:
    """Keep the `top` groups with the most tokens over the whole range (all their buckets)."""
    series_keys = [report_queries.GROUP_COLUMNS[k][0] for k in query.group_by]

    def series(row: SummaryRow) -> tuple[Any, ...]:
        return tuple(row.keys[k] for k in series_keys)

    totals: dict[tuple[Any, ...], int] = defaultdict(int)
    for row in rows:
        totals[series(row)] += row.tokens_total
    kept = set(sorted(totals, key=lambda s: (-totals[s], str(s)))[: query.top])
    return [row for row in rows if series(row) in kept]


# -- listing ---------------------------------------------------------------------------------------


class ListQuery(UsageFilter):
    """Raw events in the filter, newest first."""

    limit: int = Field(default=100, ge=1, le=10_000)


class UsageEventRow(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: uuid.UUID
    tenant_id: uuid.UUID | None
    user_id: uuid.UUID | None
    action: str
    module_id: str | None
    tokens_input: int
    tokens_output: int
    tokens_total: int
    metadata: dict[str, Any]
    created_at: datetime


class Page(BaseModel):
    """A page of events and the cursor of the next one (None on the last page)."""

    model_config = ConfigDict(frozen=True)

    events: list[UsageEventRow]
    next_cursor: str | None


def encode_cursor(created_at: datetime, event_id: uuid.UUID) -> str:
    raw = json.dumps([created_at.astimezone(UTC).isoformat(), str(event_id)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        when, event_id = json.loads(raw)
        created_at = datetime.fromisoformat(when)
        if created_at.tzinfo is None:
            raise ValueError("naive time")
        return created_at, uuid.UUID(event_id)
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError):
        raise ReportError(f"malformed cursor {cursor[:40]!r}: pass back the next_cursor of a page") from None


def list_events(
    conn: psycopg.Connection[Any], identity: Identity, query: ListQuery, *, cursor: str | None = None
) -> Page:
    """One page of events as `identity` sees them, keyset-paginated on (created_at, id): no OFFSET.

    Events inserted while paging are newer than the pages already read, so they never shift or
    repeat rows of later pages.
    """
    filters = query.active_filters()
    params = {**query.parameters(), "limit": query.limit + 1}
    if cursor is not None:
        params["after_time"], params["after_id"] = decode_cursor(cursor)
        filters.append("after")
    with acting_as(conn, identity), conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(report_queries.listing_query(query.scope, filters), params).fetchall()
    events = [UsageEventRow.model_validate(row) for row in rows[: query.limit]]
    more = len(rows) > query.limit
    return Page(events=events, next_cursor=encode_cursor(events[-1].created_at, events[-1].id) if more else None)
