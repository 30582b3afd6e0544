"""Corrections: the service role voids an event or amends its token counts, as new entries of the ledger.

    correction = corrections.void(conn, event_id=event_id, reason="duplicate of a retried call")
    correction = corrections.amend(conn, event_id=event_id, tokens_input=1200, tokens_output=80, reason="...")

The rules live in the database (public.void_usage_event_v1 and public.amend_usage_event_v1), so they
hold for every client: only the service role may call them, the original is never changed, an entry
references the event it corrects, a void event takes no further correction, and an entry itself is
never corrected. This module checks the input first (naming the field), runs the call as the service
role, and turns each refusal into a project error. See docs/corrections.md.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal, LiteralString, NoReturn

import psycopg

from usagemeter import errors
from usagemeter.db import Identity, acting_as, sql
from usagemeter.db.identity import is_distributed
from usagemeter.recording import event

queries = sql.load_queries("usagemeter.billing", "corrections.sql")

CorrectionKind = Literal["void", "amend"]

# What the database accepts: a reason of 1 to 1000 characters once trimmed, counts in an int column.
MAX_REASON_LENGTH = 1000
MAX_TOKENS = event.INT4_MAX

PERMISSION_DENIED = "only the service role may void or amend usage"


@dataclass(frozen=True)
class Correction:
    """A correction entry: what it changed of its event (deltas, added up by summaries, budgets and costs).

    A void carries minus the event's totals so far (event count -1); an amendment the difference
    between the new counts and the totals so far, and the difference in cost re-priced at the
    event's created_at (event count 0).
    """

    entry_id: uuid.UUID
    event_id: uuid.UUID
    kind: CorrectionKind
    tokens_input: int
    tokens_output: int
    cost: Decimal
    reason: str

    @property
    def event_count(self) -> int:
        """What the entry adds to event counts: -1 for a void, 0 for an amendment."""
        return -1 if self.kind == "void" else 0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: ids and the cost as strings (money is never a float)."""
        return {
            "entry_id": str(self.entry_id), "event_id": str(self.event_id), "kind": self.kind,
            "tokens_input": self.tokens_input, "tokens_output": self.tokens_output, "cost": str(self.cost),
            "event_count": self.event_count, "reason": self.reason,
        }  # fmt: skip


@dataclass(frozen=True)
class OriginalEvent:
    """The event as it was written; corrections never change it."""

    id: uuid.UUID
    tenant_id: uuid.UUID | None
    user_id: uuid.UUID | None
    action: str
    model: str | None
    tokens_input: int
    tokens_output: int
    cost: Decimal
    created_at: datetime


@dataclass(frozen=True)
class History:
    """An event, its corrections in the order they were written, and what they add up to."""

    event: OriginalEvent
    corrections: tuple[Correction, ...]

    @property
    def events(self) -> int:
        """What the event counts for now: 1, or 0 once void."""
        return 1 + sum(c.event_count for c in self.corrections)

    @property
    def tokens_input(self) -> int:
        return self.event.tokens_input + sum(c.tokens_input for c in self.corrections)

    @property
    def tokens_output(self) -> int:
        return self.event.tokens_output + sum(c.tokens_output for c in self.corrections)

    @property
    def cost(self) -> Decimal:
        return self.event.cost + sum((c.cost for c in self.corrections), Decimal(0))

    @property
    def void(self) -> bool:
        return any(c.kind == "void" for c in self.corrections)


def void(
    conn: psycopg.Connection[Any], *, event_id: uuid.UUID, reason: str, identity: Identity | None = None
) -> Correction:
    """Void an event: a correction entry takes back its count, tokens and cost; the event stays as it was.

    Parameters
    ----------
    conn:
        Any connection that can take on `identity` (the app login or the owner); the call runs in
        its own transaction, or in a savepoint of the caller's. On a distributed database (Citus) the
        entry is read back in a second transaction, so the caller's must not be open.
    event_id:
        The event to void (not a correction entry).
    reason:
        Why, kept on the entry: 1 to 1000 characters, surrounding blanks trimmed.
    identity:
        Who asks; the service role by default. Any other is refused (PermissionDenied).

    Returns
    -------
    Correction
        The entry written.

    Raises
    ------
    InvalidCorrection
        The reason is empty, too long or holds a NUL character (nothing was sent).
    EventNotFound
        No event has this id.
    CorrectionRefused
        The event is already void, or the id is a correction entry's.
    PermissionDenied
        `identity` is not the service role.
    """
    checked_id = _event_id(event_id)
    params = {"event_id": checked_id, "reason": checked_reason(reason)}
    return _correct(conn, identity, checked_id, queries["void_event"], params)


def amend(
    conn: psycopg.Connection[Any],
    *,
    event_id: uuid.UUID,
    tokens_input: int,
    tokens_output: int,
    reason: str,
    identity: Identity | None = None,
) -> Correction:
    """Set an event's token counts: a correction entry carries the change and the cost re-priced at its created_at.

    The counts are the event's new totals, not increments, so an amendment repeated after a
    dropped connection changes nothing more (its entry carries zeros).

    Parameters
    ----------
    conn, event_id, reason, identity:
        As for `void`.
    tokens_input, tokens_output:
        The event's corrected token counts: whole numbers from 0 to 2**31 - 1.

    Returns
    -------
    Correction
        The entry written.

    Raises
    ------
    InvalidCorrection
        A count or the reason is out of range (nothing was sent).
    EventNotFound, CorrectionRefused, PermissionDenied
        As for `void`; a void event cannot be amended (CorrectionRefused).
    """
    checked_id = _event_id(event_id)
    params = {
        "event_id": checked_id,
        "tokens_input": checked_token_count(tokens_input, field="tokens_input"),
        "tokens_output": checked_token_count(tokens_output, field="tokens_output"),
        "reason": checked_reason(reason),
    }
    return _correct(conn, identity, checked_id, queries["amend_event"], params)


def history(conn: psycopg.Connection[Any], identity: Identity, event_id: uuid.UUID) -> History:
    """An event and its corrections as `identity` sees them (RLS decides), from the id of either.

    Raises EventNotFound when `identity` sees no such event (it does not exist, or is not theirs).
    """
    checked_id = _event_id(event_id)
    with acting_as(conn, identity):
        rows = conn.execute(queries["event_history"], {"event_id": checked_id}).fetchall()
    if not rows or rows[0][1] is not None:
        raise errors.EventNotFound(f"no usage event has id {checked_id}", event_id=checked_id)
    return _history(rows)


def _correct(
    conn: psycopg.Connection[Any],
    identity: Identity | None,
    event_id: uuid.UUID,
    statement: LiteralString,
    params: dict[str, Any],
) -> Correction:
    """Run a correction function as `identity` and read back its entry, in one transaction."""
    identity = identity or Identity.service()
    try:
        with acting_as(conn, identity):
            row = conn.execute(statement, params).fetchone()
            assert row is not None
            if not is_distributed(conn):
                entry = conn.execute(queries["correction_entry"], {"entry_id": row[0]}).fetchone()
        if is_distributed(conn):
            # On Citus the function wrote the shard as its owner; the caller's role cannot read that shard
            # again in the same transaction (Citus: "modified in this transaction by a different user").
            with acting_as(conn, identity):
                entry = conn.execute(queries["correction_entry"], {"entry_id": row[0]}).fetchone()
    except psycopg.Error as failure:
        _refused(failure, identity=identity, event_id=event_id)
    assert entry is not None, "the entry the function returned is not readable by the role that wrote it"
    return _correction(entry)


def _refused(failure: psycopg.Error, *, identity: Identity, event_id: uuid.UUID) -> NoReturn:
    """The one place a correction's refusal becomes a project error; other failures go on as they are."""
    message = (failure.diag.message_primary or str(failure).strip()).removeprefix("usagemeter: ")
    if failure.sqlstate == "P0002":
        raise errors.EventNotFound(message, event_id=event_id) from failure
    if failure.sqlstate == "22023":
        raise errors.CorrectionRefused(message, sqlstate=failure.sqlstate) from failure
    if failure.sqlstate == "42501":
        if identity.role == "service_role":  # the function itself was refused something: say what
            raise errors.PermissionDenied(f"the database refused the service role: {message}") from failure
        raise errors.PermissionDenied(PERMISSION_DENIED) from failure
    raise failure


def _correction(row: Sequence[Any]) -> Correction:
    entry_id, event_id, kind, tokens_input, tokens_output, cost, reason = row
    return Correction(
        entry_id=entry_id, event_id=event_id, kind=kind, tokens_input=tokens_input, tokens_output=tokens_output,
        cost=cost, reason=reason,
    )  # fmt: skip


def _history(rows: Sequence[Sequence[Any]]) -> History:
    first = rows[0]
    original = OriginalEvent(
        id=first[0], tenant_id=first[3], user_id=first[4], action=first[5], model=first[6], tokens_input=first[7],
        tokens_output=first[8], cost=first[9], created_at=first[11],
    )  # fmt: skip
    entries = tuple(_correction((r[0], r[1], r[2], r[7], r[8], r[9], r[10])) for r in rows[1:])
    return History(event=original, corrections=entries)


def _event_id(event_id: uuid.UUID | str) -> uuid.UUID:
    if isinstance(event_id, uuid.UUID):
        return event_id
    try:
        return uuid.UUID(str(event_id))
    except ValueError:
        raise errors.InvalidCorrection(f"event_id: expected a UUID, got {event_id!r}", field="event_id") from None


def checked_reason(reason: str) -> str:
    """The reason, trimmed: what the database requires (1 to 1000 characters) and can store (no NUL)."""
    if not isinstance(reason, str):
        raise errors.InvalidCorrection(f"reason: expected text, got {type(reason).__name__}", field="reason")
    trimmed = reason.strip()
    if not trimmed:
        raise errors.InvalidCorrection("reason: a correction needs a reason (it is kept for audit)", field="reason")
    if len(trimmed) > MAX_REASON_LENGTH:
        raise errors.InvalidCorrection(
            f"reason: at most {MAX_REASON_LENGTH} characters, got {len(trimmed)}", field="reason"
        )
    if "\x00" in trimmed:
        raise errors.InvalidCorrection("reason: must not contain a NUL character", field="reason")
    return trimmed


def checked_token_count(value: int, *, field: str) -> int:
    """A token count the database takes (0 to 2**31 - 1, an int column); InvalidCorrection naming `field` if not."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise errors.InvalidCorrection(f"{field}: expected a whole number, got {value!r}", field=field)
    if not 0 <= value <= MAX_TOKENS:
        raise errors.InvalidCorrection(f"{field}: must be between 0 and {MAX_TOKENS}, got {value}", field=field)
    return value
