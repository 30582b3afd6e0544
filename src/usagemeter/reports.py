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
import dataclasses
import json
import uuid
import zoneinfo
from collections import defaultdict
from dataclasses import dataclass
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


@dataclass(frozen=True, slots=True)
class SummaryRow:
    """One group's totals; `keys` holds the grouping values used (action, domain, module_id, user_id, bucket).

    A plain dataclass: summaries return hundreds of rows and validation would only re-check the database.
    """

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


@dataclass(frozen=True)
class SourcePlan:
    """Where a summary's numbers come from, and the whole hours and UTC days of its range."""

    source: report_queries.Source
    start: datetime
    end: datetime
    full_start: datetime
    full_end: datetime
    day_start: datetime
    day_end: datetime
    tenant_wide: bool = False  # one tenant, users not distinguished: the tenant-wide daily rollup serves

    @property
    def parts(self) -> list[str]:
        """The non-empty pieces that cover the range exactly once (see report_queries.SOURCE_PARTS)."""
        if self.source == "raw":
            return ["raw"]
        days = "tenant_days" if self.tenant_wide else "days"
        middle = ["hours"] if self.source == "hourly" else [days, "hours_head", "hours_tail"]
        bounds = {
            "raw_head": (self.start, self.full_start),
            "raw_tail": (self.full_end, self.end),
            "hours_head": (self.full_start, self.day_start),
            "hours_tail": (self.day_end, self.full_end),
        }
        return [p for p in [*middle, "raw_head", "raw_tail"] if p not in bounds or bounds[p][0] < bounds[p][1]]


def _ceil(moment: datetime, unit: timedelta) -> datetime:
    floor = _floor(moment, unit)
    return floor if floor == moment else floor + unit


def _floor(moment: datetime, unit: timedelta) -> datetime:
    utc = moment.astimezone(UTC)
    midnight = utc.replace(hour=0, minute=0, second=0, microsecond=0)
    return midnight + (utc - midnight) // unit * unit


def _offsets(query: SummaryQuery) -> set[timedelta]:
    """The zone's UTC offsets over the range (sampled at each UTC day boundary and both ends)."""
    zone = zoneinfo.ZoneInfo(query.tz)
    moments = [query.start, query.end]
    day = _ceil(query.start, timedelta(days=1))
    while day < query.end:
        moments.append(day)
        day += timedelta(days=1)
    return {offset for offset in (m.astimezone(zone).utcoffset() for m in moments) if offset is not None}


def source_plan(query: SummaryQuery) -> SourcePlan:
    """The coarsest source that gives exactly the raw aggregation; all of them give the same numbers.

    Rollups lack metadata, so a metadata filter reads raw events. Hour buckets (and day, week or
    month buckets in a zone with a non-whole-hour offset) need hourly rows; daily rows (UTC days)
    serve totals without buckets, and day, week or month buckets in a zone at UTC+0.
    """
    hour, day = timedelta(hours=1), timedelta(days=1)
    plan = SourcePlan("raw", query.start, query.end, _ceil(query.start, hour), _floor(query.end, hour),
                      _ceil(query.start, day), _floor(query.end, day))  # fmt: skip
    offsets = _offsets(query) if query.bucket else {timedelta(0)}
    if query.metadata is not None or plan.full_start >= plan.full_end or any(o % hour for o in offsets):
        return plan
    daily_fits = query.bucket is None or (query.bucket != "hour" and offsets == {timedelta(0)})
    source: report_queries.Source = "daily" if daily_fits and plan.day_start < plan.day_end else "hourly"
    tenant_wide = query.scope == "tenant" and "user" not in query.group_by and query.by_user is None
    return dataclasses.replace(plan, source=source, tenant_wide=tenant_wide)


def summary_source(query: SummaryQuery) -> report_queries.Source:
    return source_plan(query).source


def summarize(conn: psycopg.Connection[Any], identity: Identity, query: SummaryQuery) -> list[SummaryRow]:
    """Totals as `identity` sees them (RLS applies); with a bucket, every bucket of the range, zeros included."""
    plan = source_plan(query)
    statement = report_queries.summary_query(
        query.scope, query.active_filters(), query.group_by, bucketed=query.bucket is not None, parts=plan.parts
    )
    params = {**query.parameters(), "bucket": query.bucket, "tz": query.tz, "full_start": plan.full_start,
              "full_end": plan.full_end, "day_start": plan.day_start, "day_end": plan.day_end}  # fmt: skip
    with conn.pipeline(), acting_as(conn, identity), conn.cursor(row_factory=dict_row) as cur:
        cur.execute(report_queries.USE_TIME_ZONE, params)
        rows = cur.execute(statement, params).fetchall()
    key_names = [report_queries.GROUP_COLUMNS[k][0] for k in query.group_by]
    zone = zoneinfo.ZoneInfo(query.tz)
    result = []
    for row in rows:
        keys = {name: row[name] for name in key_names}
        if query.bucket is not None:
            keys["bucket"] = row["bucket"].astimezone(zone)  # in the report's zone, whatever the session's
        result.append(SummaryRow(keys, row["events"], row["tokens_input"], row["tokens_output"], row["tokens_total"]))
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


# The first time window a listing page reads; each next one is twice as long.
FIRST_WINDOW = timedelta(hours=1)


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
    repeat rows of later pages. The page is read in time windows walking back from the cursor,
    each twice as long as the last: under RLS the planner cannot see that a tenant's rows are
    ordered in its index, and a window keeps each read to about a page, however large the tenant.
    """
    filters = query.active_filters()
    params = {**query.parameters(), "limit": query.limit + 1}
    if cursor is not None:
        params["after_time"], params["after_id"] = decode_cursor(cursor)
        filters.append("after")
    statement = report_queries.listing_query(query.scope, filters)
    upper = min(query.end, params["after_time"] + timedelta(microseconds=1)) if cursor is not None else query.end
    window = FIRST_WINDOW
    rows: list[dict[str, Any]] = []
    with acting_as(conn, identity), conn.cursor(row_factory=dict_row) as cur:
        while len(rows) <= query.limit and upper > query.start:
            lower = max(query.start, upper - window)
            found = cur.execute(
                statement, {**params, "start": lower, "end": upper, "limit": query.limit + 1 - len(rows)}
            )
            rows += found.fetchall()
            upper, window = lower, window * 2
    events = [UsageEventRow.model_validate(row) for row in rows[: query.limit]]
    more = len(rows) > query.limit
    return Page(events=events, next_cursor=encode_cursor(events[-1].created_at, events[-1].id) if more else None)
