"""Monthly statements: what a tenant or a Personal user used and owes, by action and model.

    statement(conn, Identity.service(), tenant_id=t, month="2026-06", tz="Europe/Paris")
    close_statement(conn, tenant_id=t, month="2026-06", tz="Europe/Paris")   # final from now on

A statement is a summary grouped by action and model over the month in a time zone (so its total
is what summaries report for the month, by construction), plus the list of its adjustments: the
correction entries and late entries booked in it (already counted in the lines). Amounts are
exact: the sum of the events' stored costs (each rounded once, to 6 decimal places, when written).
Closing stores the statement and makes the month final: the database books anything dated inside
it later in the first open month (see the closed periods migration).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from decimal import Decimal
from typing import Any, LiteralString

import psycopg
from psycopg import errors as pgerrors
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from usagemeter import errors
from usagemeter.db import Identity, acting_as
from usagemeter.reporting import archives, filters, summaries

MONTH = re.compile(r"(\d{4})-(0[1-9]|1[0-2])")
# An adjustment's keys, in the order statements print them (jsonb, where closed ones are kept, reorders keys).
ADJUSTMENT_KEYS = ("entry_id", "corrects_event_id", "kind", "reason", "action", "model", "tokens_input",
                   "tokens_output", "amount", "occurred_at")  # fmt: skip
ZERO = Decimal("0.000000")

# Adjustments booked in the period, oldest first (RLS applies: as the caller): correction entries,
# and entries dated in a closed period and booked here (occurred_at says when they happened).
ADJUSTMENTS_BOOKED: LiteralString = """
select id, corrects_event_id, coalesce(correction_kind, 'late') as kind, correction_reason, action, model,
       tokens_input, tokens_output, cost, coalesce(occurred_at, created_at) as occurred_at
from public.usage_events
where (correction_kind is not null or occurred_at is not null)
  and created_at >= %(start)s and created_at < %(end)s
  and case when %(tenant_id)s::uuid is null then tenant_id is null and user_id = %(user_id)s
           else tenant_id = %(tenant_id)s end
order by created_at, id
"""

CLOSED_STATEMENT: LiteralString = """
select statement from public.usage_closed_periods
where case when %(tenant_id)s::uuid is null then tenant_id is null and user_id = %(user_id)s
           else tenant_id = %(tenant_id)s end
  and period_start = %(start)s and period_end = %(end)s
"""

# Holds writers off while a statement is computed and closed, so nothing lands in between.
LOCK_USAGE: LiteralString = "lock table public.usage_events in share mode"

CLOSE_PERIOD: LiteralString = """
insert into public.usage_closed_periods (tenant_id, user_id, period_start, period_end, time_zone, statement)
values (%(tenant_id)s, %(user_id)s, %(start)s, %(end)s, %(tz)s, %(statement)s)
"""


@dataclass(frozen=True)
class StatementLine:
    action: str
    model: str | None
    events: int
    tokens_input: int
    tokens_output: int
    amount: Decimal

    def as_json(self) -> dict[str, Any]:
        return {"action": self.action, "model": self.model, "events": self.events,
                "tokens_input": self.tokens_input, "tokens_output": self.tokens_output,
                "amount": _money(self.amount)}  # fmt: skip


@dataclass(frozen=True)
class Statement:
    """A scope's month: lines by action and model, their total, and the adjustments booked in it (in the lines too)."""

    tenant_id: uuid.UUID | None
    user_id: uuid.UUID | None
    start: datetime
    end: datetime
    time_zone: str
    currency: str | None
    lines: tuple[StatementLine, ...]
    adjustments: tuple[dict[str, Any], ...] = ()
    final: bool = False
    # Retention took the month's raw events out: the lines still hold (from the rollups); the
    # adjustments listed are only those whose entries are still stored.
    raw_events_archived: bool = False
    total: Decimal = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "total", sum((line.amount for line in self.lines), ZERO))

    def as_json(self) -> dict[str, Any]:
        """The statement as JSON-ready data, keys in a fixed order: the same data gives the same bytes."""
        return {
            "tenant_id": _text(self.tenant_id),
            "user_id": _text(self.user_id),
            "period": {"from": self.start.isoformat(), "to": self.end.isoformat()},
            "time_zone": self.time_zone,
            "currency": self.currency,
            "lines": [line.as_json() for line in self.lines],
            "total": _money(self.total),
            "adjustments": [{key: adjustment[key] for key in ADJUSTMENT_KEYS} for adjustment in self.adjustments],
            "final": self.final,
            "raw_events_archived": self.raw_events_archived,
        }

    def to_json(self) -> str:
        return json.dumps(self.as_json(), indent=2) + "\n"

    def to_csv(self) -> str:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["action", "model", "events", "tokens_input", "tokens_output", "amount", "currency"])
        for line in self.lines:
            writer.writerow([line.action, line.model or "", line.events, line.tokens_input, line.tokens_output,
                             _money(line.amount), self.currency or ""])  # fmt: skip
        writer.writerow(["total", "", "", "", "", _money(self.total), self.currency or ""])
        return buffer.getvalue()


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def _money(value: Decimal) -> str:
    return format(value.quantize(ZERO), "f")


def month_bounds(month: str, tz: str) -> tuple[datetime, datetime]:
    """[local midnight on the 1st, local midnight on the next 1st) of `YYYY-MM` in `tz`."""
    found = MONTH.fullmatch(month)
    if found is None:
        raise errors.StatementError(f"month: expected YYYY-MM, got {month!r}")
    try:
        zone = filters.time_zone(tz)
    except filters.ReportError as failure:
        raise errors.StatementError(str(failure)) from None
    year, number = int(found[1]), int(found[2])
    start = datetime(year, number, 1, tzinfo=zone)
    end = datetime(year + number // 12, number % 12 + 1, 1, tzinfo=zone)
    return start, end


def _scope(tenant_id: uuid.UUID | None, personal_user_id: uuid.UUID | None) -> dict[str, Any]:
    if (tenant_id is None) == (personal_user_id is None):
        raise errors.StatementError("scope: give a tenant or a Personal user, not both or neither")
    return {"tenant_id": tenant_id, "user_id": personal_user_id}


def statement(
    conn: psycopg.Connection[Any],
    identity: Identity,
    *,
    tenant_id: uuid.UUID | None = None,
    personal_user_id: uuid.UUID | None = None,
    month: str,
    tz: str = "UTC",
) -> Statement:
    """The month's statement as `identity` may see it (RLS): the stored one when closed, else computed now.

    Raises
    ------
    errors.StatementError
        A malformed month, an unknown time zone, or not exactly one scope.
    """
    start, end = month_bounds(month, tz)
    params = {**_scope(tenant_id, personal_user_id), "start": start, "end": end}
    with acting_as(conn, identity):
        closed = conn.execute(CLOSED_STATEMENT, params).fetchone()
    found = from_json(closed[0]) if closed is not None else _computed(conn, identity, params, tz)
    archived = bool(archives.archived_months(conn, identity, start, end))
    return dataclasses.replace(found, raw_events_archived=archived) if archived else found


def _computed(conn: psycopg.Connection[Any], identity: Identity, params: dict[str, Any], tz: str) -> Statement:
    tenant_id, user_id = params["tenant_id"], params["user_id"]
    query = summaries.SummaryQuery(
        scope="tenant" if tenant_id else "user", tenant_id=tenant_id, user_id=user_id, start=params["start"],
        end=params["end"], group_by=("action", "model"), tz=tz,
    )  # fmt: skip
    rows = summaries.summarize(conn, identity, query)
    lines = tuple(sorted(map(_line, rows), key=lambda line: (line.action, line.model or "")))
    zone = filters.time_zone(tz)
    with acting_as(conn, identity), conn.cursor(row_factory=dict_row) as cur:
        rows_booked = cur.execute(ADJUSTMENTS_BOOKED, params).fetchall()
    adjustments = tuple(_adjustment(row, zone) for row in rows_booked)
    currency = rows[0].currency if rows else None
    return Statement(tenant_id, user_id, params["start"], params["end"], tz, currency, lines, adjustments)


def _line(row: summaries.SummaryRow) -> StatementLine:
    keys = row.keys
    return StatementLine(keys["action"], keys["model"], row.events, row.tokens_input, row.tokens_output, row.cost)


def _adjustment(row: dict[str, Any], zone: tzinfo) -> dict[str, Any]:
    """An adjustment booked in the period: a void or amendment (naming its event) or a late entry; when it happened."""
    return {
        "entry_id": str(row["id"]),
        "corrects_event_id": _text(row["corrects_event_id"]),
        "kind": row["kind"],
        "reason": row["correction_reason"],
        "action": row["action"],
        "model": row["model"],
        "tokens_input": row["tokens_input"],
        "tokens_output": row["tokens_output"],
        "amount": _money(row["cost"]),
        "occurred_at": row["occurred_at"].astimezone(zone).isoformat(),  # in the statement's zone, not the session's
    }


def _stored_line(line: dict[str, Any]) -> StatementLine:
    amount = Decimal(line["amount"])
    return StatementLine(
        line["action"], line["model"], line["events"], line["tokens_input"], line["tokens_output"], amount
    )


def from_json(data: dict[str, Any]) -> Statement:
    """A statement back from its JSON (a closed one, as stored)."""
    lines = tuple(map(_stored_line, data["lines"]))
    return Statement(
        uuid.UUID(data["tenant_id"]) if data["tenant_id"] else None,
        uuid.UUID(data["user_id"]) if data["user_id"] else None,
        datetime.fromisoformat(data["period"]["from"]),
        datetime.fromisoformat(data["period"]["to"]),
        data["time_zone"],
        data["currency"],
        lines,
        tuple(data.get("adjustments", ())),
        final=bool(data.get("final", False)),
    )


def close_statement(
    conn: psycopg.Connection[Any],
    *,
    tenant_id: uuid.UUID | None = None,
    personal_user_id: uuid.UUID | None = None,
    month: str,
    tz: str = "UTC",
) -> Statement:
    """Make the month's statement final, as the service role; returns it as stored.

    Writers are held off (SHARE lock on usage_events) while the statement is computed and the
    period recorded, so nothing lands in between. Afterwards, the database books entries dated in
    the month in the first open month. `conn` must not be inside a transaction.

    Raises
    ------
    errors.StatementError
        The month ended less than an hour ago (or has not ended), or is already closed (or
        overlaps a closed period of the scope).
    """
    start, end = month_bounds(month, tz)
    params = {**_scope(tenant_id, personal_user_id), "start": start, "end": end}
    service = Identity.service()
    try:
        with acting_as(conn, service):
            conn.execute(LOCK_USAGE)
            computed = _computed(conn, service, params, tz)
            final = Statement(computed.tenant_id, computed.user_id, computed.start, computed.end, tz,
                              computed.currency, computed.lines, computed.adjustments, final=True)  # fmt: skip
            conn.execute(CLOSE_PERIOD, {**params, "tz": tz, "statement": Jsonb(final.as_json())})
    except (pgerrors.ExclusionViolation, pgerrors.InvalidParameterValue) as failure:
        raise errors.StatementError(failure.diag.message_primary or str(failure)) from None
    except pgerrors.ForeignKeyViolation:
        scope = "tenant" if tenant_id else "user"
        raise errors.StatementError(f"{scope}: no {scope} has id {tenant_id or personal_user_id}") from None
    return final
