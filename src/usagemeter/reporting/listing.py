"""Listing raw events under RLS, newest first, in keyset pages that stay stable while events arrive.

page = list_events(conn, identity, ListQuery(scope="tenant", tenant_id=t, start=..., end=...))
next_page = list_events(conn, identity, query, cursor=page.next_cursor)
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
from psycopg.rows import dict_row
from pydantic import BaseModel, ConfigDict, Field

from usagemeter.db import Identity, acting_as
from usagemeter.db.identity import is_distributed
from usagemeter.reporting import report_sql
from usagemeter.reporting.filters import ReportError, UsageFilter, in_reportable_range

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
    model: str | None
    cost: Decimal
    corrects_event_id: uuid.UUID | None
    correction_kind: str | None
    correction_reason: str | None
    event_count: int
    recorded_at: datetime | None
    occurred_at: datetime | None


class Page(BaseModel):
    """A page of events and the cursor of the next one (None on the last page)."""

    model_config = ConfigDict(frozen=True)

    events: list[UsageEventRow]
    next_cursor: str | None


def encode_cursor(created_at: datetime, event_id: uuid.UUID) -> str:
    raw = json.dumps([created_at.astimezone(UTC).isoformat(), str(event_id)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    """The (created_at, id) a page ended at; ReportError naming `cursor` for anything a page never gave."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        when, event_id = json.loads(raw)
        created_at = datetime.fromisoformat(when)
        if created_at.tzinfo is None or not in_reportable_range(created_at):
            raise ValueError("naive or out-of-range time")
        return created_at, uuid.UUID(event_id)
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError, RecursionError):
        raise ReportError(f"cursor: malformed cursor {cursor[:40]!r}: pass back the next_cursor of a page") from None


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
    statement = report_sql.listing_query(query.scope, filters, routed=is_distributed(conn))
    upper = query.end
    if cursor is not None and params["after_time"] < query.end:
        upper = params["after_time"] + timedelta(microseconds=1)
    window = FIRST_WINDOW
    rows: list[dict[str, Any]] = []
    with acting_as(conn, identity), conn.cursor(row_factory=dict_row) as cur:
        while len(rows) <= query.limit and upper > query.start:
            lower = upper - window if upper - query.start > window else query.start  # never before year 1
            found = cur.execute(
                statement, {**params, "start": lower, "end": upper, "limit": query.limit + 1 - len(rows)}
            )
            rows += found.fetchall()
            upper, window = lower, window * 2
    events = [UsageEventRow.model_validate(row) for row in rows[: query.limit]]
    more = len(rows) > query.limit
    return Page(events=events, next_cursor=encode_cursor(events[-1].created_at, events[-1].id) if more else None)
