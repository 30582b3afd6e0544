"""Writing a batch of events as one identity: the only code that inserts usage (every face calls it).

Each event carries an id chosen before its first attempt, so a write that is repeated after a
dropped connection finds its own rows instead of doubling them; idempotency keys do the same for
retries by the caller. A batch runs in one (sub)transaction as the caller's role, so RLS decides.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

import psycopg
from psycopg import errors as pgerrors

from usagemeter import errors
from usagemeter.db import Identity, acting_as, sql
from usagemeter.db import identity as db_identity
from usagemeter.recording.event import UsageEvent, metadata_json

queries = sql.load_queries("usagemeter.recording")


@dataclass(frozen=True)
class Recorded:
    """The stored event: its id and time, and whether it had been stored before (an idempotent retry)."""

    id: uuid.UUID
    created_at: datetime
    duplicate: bool


class ChunkedBatch:
    """A batch prepared chunk by chunk as it is written (validation overlapping the server's work).

    Prepared chunks are kept, so a retry after a dropped connection sends the very same events
    with the very same ids. `prepare` turns raw items into Pending events, raising for bad ones.
    """

    def __init__(
        self, items: Sequence[Any], prepare: Callable[[Sequence[Any], int], list[Pending]], *, size: int = 0
    ) -> None:
        self._items = items
        self._prepare = prepare
        self._size = size or PIPELINE_CHUNK
        self._prepared: list[list[Pending]] = []

    def chunks(self) -> Iterator[list[Pending]]:
        yield from list(self._prepared)
        start = len(self._prepared) * self._size
        while start < len(self._items):
            chunk = self._prepare(self._items[start : start + self._size], start)
            self._prepared.append(chunk)
            yield chunk
            start += self._size

    def all(self) -> list[Pending]:
        return [pending for chunk in self.chunks() for pending in chunk]


class Pending(NamedTuple):
    """An event with the id it will be stored under, fixed before the first attempt (a tuple: cheap per event)."""

    id: uuid.UUID
    event: UsageEvent

    @classmethod
    def of(cls, event: UsageEvent) -> Pending:
        return cls(uuid.uuid4(), event)


# Rows per INSERT in the fast path: small enough that building one overlaps the server inserting the last.
PIPELINE_CHUNK = 100

# Database refusals that concern the data, not the connection: the batch is refused, retrying won't help.
REFUSALS = (pgerrors.InsufficientPrivilege, pgerrors.IntegrityError, pgerrors.DataError)

_FK_MEANING = {
    "usage_events_tenant_id_fkey": "unknown tenant_id (no such tenant)",
    "usage_events_user_id_fkey": "unknown user_id (no such user in auth.users)",
}


def describe_refusal(failure: psycopg.Error) -> str:
    """A refusal in words a caller can act on."""
    diag = failure.diag
    if isinstance(failure, pgerrors.InsufficientPrivilege) and "row-level security" in (diag.message_primary or ""):
        return (
            "not allowed by row-level security: a user records only as themselves (user_id = their id),"
            " either personal (no tenant_id) or into a tenant they are a member of"
        )
    if isinstance(failure, pgerrors.ForeignKeyViolation) and diag.constraint_name in _FK_MEANING:
        return _FK_MEANING[diag.constraint_name]
    if diag.constraint_name:
        return f"{diag.constraint_name}: {diag.message_primary}"
    return diag.message_primary or str(failure)


def _columns(batch: Sequence[Pending]) -> dict[str, list[Any]]:
    events = [p.event for p in batch]
    return {
        "ids": [p.id for p in batch],
        "tenant_ids": [e.tenant_id for e in events],
        "user_ids": [e.user_id for e in events],
        "actions": [e.action for e in events],
        "module_ids": [e.module_id for e in events],
        "tokens_input": [e.tokens_input for e in events],
        "tokens_output": [e.tokens_output for e in events],
        "metadata": [metadata_json(e.metadata) for e in events],
        "idempotency_keys": [e.idempotency_key for e in events],
        "created_at": [e.created_at for e in events],
    }


def _same_payload(event: UsageEvent, stored: tuple[Any, ...]) -> bool:
    tenant_id, user_id, action, module_id, tokens_input, tokens_output, metadata = stored
    return (tenant_id, user_id, action, module_id, tokens_input, tokens_output, metadata) == (
        event.tenant_id,
        event.user_id,
        event.action,
        event.module_id,
        event.tokens_input,
        event.tokens_output,
        event.metadata,
    )


def _check_created_at(identity: Identity, batch: Sequence[Pending]) -> bool:
    """Whether the batch sets created_at, which only the service role may (users cannot backdate usage)."""
    timed = [i for i, p in enumerate(batch) if p.event.created_at is not None]
    if timed and identity.role != "service_role":
        raise errors.InvalidEvent(
            f"event {timed[0]}: created_at may only be set by the service role"
            " (users' events are stamped by the database)",
            index=timed[0],
            field="created_at",
        )
    return bool(timed)


def _insert(conn: psycopg.Connection[Any], identity: Identity, batch: Sequence[Pending]) -> list[Recorded]:
    """Insert in the current transaction; resolve rows that were skipped as already stored."""
    timed = _check_created_at(identity, batch)
    query = queries["insert_events_with_created_at" if timed else "insert_events"]
    columns = _columns(batch)
    stored = dict(conn.execute(query, columns).fetchall())
    skipped = [i for i, p in enumerate(batch) if p.id not in stored]
    if skipped:
        earlier = conn.execute(queries["events_by_id"], {"ids": [batch[i].id for i in skipped]}).fetchall()
        stored.update(dict(earlier))
    results: list[Recorded | None] = [
        Recorded(p.id, stored[p.id], duplicate=False) if p.id in stored else None for p in batch
    ]
    unresolved = [i for i, r in enumerate(results) if r is None]
    if unresolved:
        for index, recorded in _resolve_by_key(conn, batch, unresolved).items():
            results[index] = recorded
    return [r for r in results if r is not None]


def _resolve_by_key(conn: psycopg.Connection[Any], batch: Sequence[Pending], indexes: list[int]) -> dict[int, Recorded]:
    """Events skipped because their idempotency key is taken: the same payload is a duplicate, another a conflict."""
    events = [batch[i].event for i in indexes]
    rows = conn.execute(
        queries["events_by_idempotency_key"],
        {
            "tenant_ids": [e.tenant_id for e in events],
            "user_ids": [e.user_id for e in events],
            "idempotency_keys": [e.idempotency_key for e in events],
        },
    ).fetchall()
    found = {int(row[0]) - 1: row[1:] for row in rows}
    resolved: dict[int, Recorded] = {}
    for position, index in enumerate(indexes):
        event = batch[index].event
        if position not in found:
            raise errors.EventRejected(f"event {index}: skipped by the database but not found again", index=index)
        existing_id, created_at, *payload = found[position]
        if not _same_payload(event, tuple(payload)):
            raise errors.IdempotencyConflict(
                f"event {index}: idempotency key {event.idempotency_key!r} was already used for event {existing_id}"
                " with a different payload; a retry must repeat the original event exactly",
                index=index,
                existing_id=existing_id,
            )
        resolved[index] = Recorded(existing_id, created_at, duplicate=True)
    return resolved


def write_fast(
    conn: psycopg.Connection[Any], groups: Sequence[tuple[Identity, Iterable[Sequence[Pending]]]]
) -> list[Recorded]:
    """The common case in one round trip: plain inserts of every group in one pipelined transaction.

    Each group comes as chunks, sent as soon as they are built (and, for record_many, validated),
    so the server inserts one while the next is prepared. Raises, storing nothing, when anything
    is off (a refusal, a used id or key, an invalid event); callers then take the careful path,
    which sorts out retries, duplicates and refusals event by event.
    """
    written: list[Pending] = []
    with conn.pipeline(), conn.transaction():
        clock: psycopg.Cursor[Any] | None = None
        for identity, chunks in groups:
            cursor = db_identity.become(conn, identity)
            clock = clock or cursor
            for chunk in chunks:
                timed = _check_created_at(identity, chunk)
                query = queries["insert_events_plain_with_created_at" if timed else "insert_events_plain"]
                conn.execute(query, _columns(chunk))
                written.extend(chunk)
    assert clock is not None
    row = clock.fetchone()
    assert row is not None
    now: datetime = row[2]
    return [Recorded(p.id, p.event.created_at or now, duplicate=False) for p in written]


def chunked(batch: Sequence[Pending], size: int = PIPELINE_CHUNK) -> list[Sequence[Pending]]:
    return [batch[start : start + size] for start in range(0, len(batch), size)]


def write_batch(
    conn: psycopg.Connection[Any], identity: Identity, batch: Sequence[Pending], *, locate_refusal: bool = True
) -> list[Recorded]:
    """Write the batch atomically as `identity` (a transaction, or a savepoint inside one).

    A refusal is reported for the first refused event, with its index (found by trying each event
    alone, unless `locate_refusal` is off); then nothing was written.
    """
    try:
        with acting_as(conn, identity):
            return _insert(conn, identity, batch)
    except REFUSALS as failure:
        if locate_refusal:
            index, reason = _first_refused(conn, identity, batch, failure)
        else:
            index, reason = 0, describe_refusal(failure)
        raise errors.EventRejected(f"event {index}: {reason}", index=index, sqlstate=failure.sqlstate) from failure


def _first_refused(
    conn: psycopg.Connection[Any], identity: Identity, batch: Sequence[Pending], failure: psycopg.Error
) -> tuple[int, str]:
    """Find which event the database refuses, trying each alone and keeping nothing."""
    if len(batch) > 1:
        for index, pending in enumerate(batch):
            try:
                with conn.transaction(force_rollback=True), acting_as(conn, identity):
                    _insert(conn, identity, [pending])
            except REFUSALS as single:
                return index, describe_refusal(single)
    return 0, describe_refusal(failure)


def write_atomically(conn: psycopg.Connection[Any], identity: Identity, batch: ChunkedBatch) -> list[Recorded]:
    """A batch all or nothing: the one-round-trip path, or the careful one when that meets anything unusual."""
    try:
        return write_fast(conn, [(identity, batch.chunks())])
    except REFUSALS:
        return write_batch(conn, identity, batch.all())


def write_each(
    conn: psycopg.Connection[Any], identity: Identity, batch: Sequence[Pending]
) -> list[Recorded | errors.UsagemeterError]:
    """Write events one savepoint each, keeping those the database accepts: for batches of unrelated callers."""
    outcomes: list[Recorded | errors.UsagemeterError] = []
    for pending in batch:
        try:
            outcomes.append(write_batch(conn, identity, [pending])[0])
        except (errors.EventRejected, errors.IdempotencyConflict, errors.InvalidEvent) as failure:
            outcomes.append(failure)
    return outcomes


def write_groups(
    conn: psycopg.Connection[Any], items: Sequence[tuple[Identity, Pending]]
) -> list[Recorded | errors.UsagemeterError]:
    """Write events of several identities in one transaction, a savepoint per identity.

    For writers that batch unrelated callers (group commit, the enqueue flusher): when the database
    refuses a group, its events are written one by one so only the refused ones fail. Outcomes
    come back in input order.
    """
    positions: dict[tuple[str, str], list[int]] = {}
    for position, (identity, _) in enumerate(items):
        positions.setdefault(identity.key, []).append(position)
    outcomes: list[Recorded | errors.UsagemeterError | None] = [None] * len(items)
    groups = [(items[group[0]][0], chunked([items[p][1] for p in group])) for group in positions.values()]
    try:
        fast = write_fast(conn, groups)
    except (*REFUSALS, errors.InvalidEvent):
        pass  # something is off somewhere: the careful path below finds what
    else:
        for position, recorded in zip((p for group in positions.values() for p in group), fast, strict=True):
            outcomes[position] = recorded
        return [o for o in outcomes if o is not None]
    with conn.transaction():
        for group in positions.values():
            identity = items[group[0]][0]
            batch = [items[p][1] for p in group]
            results: Sequence[Recorded | errors.UsagemeterError]
            try:
                results = write_batch(conn, identity, batch, locate_refusal=False)
            except (errors.EventRejected, errors.IdempotencyConflict, errors.InvalidEvent):
                results = write_each(conn, identity, batch)
            for position, result in zip(group, results, strict=True):
                outcomes[position] = result
    return [o for o in outcomes if o is not None]
