"""Writing a batch of events as one identity: the only code that inserts usage (every face calls it).

Each event carries an id chosen before its first attempt, so a write that is repeated after a
dropped connection finds its own rows instead of doubling them; idempotency keys do the same for
retries by the caller. A batch runs in one (sub)transaction as the caller's role, so RLS decides.

Whatever fails, every event gets an outcome: a transient failure (refusals.is_transient) leaves
the function for retry.with_connection to try the whole write again; anything else is mapped by
refusals.refusal to a project error of the event that caused it, found by trying events alone.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, LiteralString, NamedTuple

import psycopg
from psycopg.pq import TransactionStatus

from usagemeter import errors, ledger
from usagemeter.db import Identity, acting_as, refusals, sql
from usagemeter.db import identity as db_identity
from usagemeter.recording import event_ids, insert_sql
from usagemeter.recording.event import UsageEvent, metadata_json

queries = sql.load_queries("usagemeter.recording")


@dataclass(frozen=True)
class Recorded:
    """The stored event: its id and time, and whether it had been stored before (an idempotent retry)."""

    id: uuid.UUID
    created_at: datetime
    duplicate: bool


Outcome = Recorded | errors.UsagemeterError


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
        return cls(event_ids.new_event_id(), event)


# write_fast's transaction, sent in its pipeline (on an autocommit connection) with the inserts.
BEGIN = "begin"
COMMIT = "commit"

# Rows per INSERT in the fast path: small enough that building one overlaps the server inserting the last.
PIPELINE_CHUNK = 100


def _columns(batch: Sequence[Pending]) -> dict[str, list[Any]]:
    """The batch as one array per written column (usagemeter.ledger), the parameters of insert_sql."""
    events = [p.event for p in batch]
    arrays: dict[str, list[Any]] = {"id": [p.id for p in batch]}
    for column in ledger.WRITTEN_WITH_CREATED_AT[1:]:
        if column.name == "metadata":
            arrays["metadata"] = [metadata_json(e.metadata) for e in events]
        else:
            arrays[column.name] = [getattr(e, column.name) for e in events]
    return arrays


def _row_parameters(batch: Sequence[Pending], *, timed: bool) -> list[Any]:
    """The batch row after row, then each row's owner_id: the parameters of insert_sql.insert_event_rows."""
    columns = ledger.WRITTEN_WITH_CREATED_AT if timed else ledger.WRITTEN
    values: list[Any] = []
    for pending in batch:
        event = pending.event
        for column in columns:
            if column.name == "id":
                values.append(pending.id)
            elif column.name == "metadata":
                values.append(metadata_json(event.metadata))
            else:
                values.append(getattr(event, column.name))
        values.append(event.tenant_id or event.user_id)
    return values


def _insert_statement(
    batch: Sequence[Pending], *, timed: bool, fast: bool, distributed: bool
) -> tuple[LiteralString, Any]:
    """The INSERT of a chunk and its parameters: arrays on one node, a VALUES list on a Citus cluster."""
    if distributed:
        return insert_sql.insert_event_rows(timed=timed, fast=fast, rows=len(batch)), _row_parameters(
            batch, timed=timed
        )
    return insert_sql.insert_events(timed=timed, fast=fast), _columns(batch)


def _same_payload(event: UsageEvent, stored: tuple[Any, ...]) -> bool:
    """Whether a stored event is this one again; metadata was compared by the database, as jsonb."""
    *columns, same_metadata = stored
    expected = [event.tenant_id, event.user_id, event.action, event.module_id, event.tokens_input, event.tokens_output]
    return bool(same_metadata) and columns == expected


def _check_created_at(identity: Identity, batch: Sequence[Pending], *, offset: int = 0) -> bool:
    """Whether the batch sets created_at, which only the service role may (users cannot backdate usage)."""
    timed = [i for i, p in enumerate(batch) if p.event.created_at is not None]
    if timed and identity.role != "service_role":
        raise errors.InvalidEvent(
            f"event {offset + timed[0]}: created_at may only be set by the service role"
            " (users' events are stamped by the database)",
            index=offset + timed[0],
            field="created_at",
        )
    return bool(timed)


def _idempotency_key(event: UsageEvent) -> tuple[Any, ...] | None:
    """What an idempotency key is unique within, with the key; None for an event without one."""
    if event.idempotency_key is None:
        return None
    return (event.tenant_id, event.user_id, event.idempotency_key)


# A concurrent write may take an id or key between the lookups and the insert: its unique_violation
# means the lookups now find it. Three rounds are plenty (each one resolves what was taken before).
_CAREFUL_ROUNDS = 3


def _insert(
    conn: psycopg.Connection[Any], identity: Identity, batch: Sequence[Pending], *, offset: int = 0
) -> list[Recorded]:
    """Insert in the current transaction what is not stored yet; resolve what is (retries, used keys).

    Ids and keys are unique across all partitions of usage_events, which PostgreSQL's ON CONFLICT
    cannot see (its unique indexes hold per partition), so stored events are looked up first. A
    key repeated inside the batch is written once and the repeats resolved against it.
    """
    timed = _check_created_at(identity, batch, offset=offset)
    for _ in range(_CAREFUL_ROUNDS - 1):
        try:
            with conn.transaction():
                return _insert_missing(conn, batch, timed=timed, offset=offset)
        except psycopg.errors.UniqueViolation:
            continue
    with conn.transaction():  # the last round: a unique_violation now is raised
        return _insert_missing(conn, batch, timed=timed, offset=offset)


def _insert_missing(
    conn: psycopg.Connection[Any], batch: Sequence[Pending], *, timed: bool, offset: int
) -> list[Recorded]:
    stored: dict[uuid.UUID, datetime] = dict(
        conn.execute(queries["events_by_id"], {"ids": [p.id for p in batch]}).fetchall()
    )
    results: dict[int, Recorded] = {
        i: Recorded(p.id, stored[p.id], duplicate=False) for i, p in enumerate(batch) if p.id in stored
    }
    leaders: dict[tuple[Any, ...], int] = {}
    repeats: list[int] = []
    for i, pending in enumerate(batch):
        key = _idempotency_key(pending.event)
        if i in results or key is None:
            continue
        if key in leaders:
            repeats.append(i)
        else:
            leaders[key] = i
    results.update(_resolve_by_key(conn, batch, list(leaders.values()), offset=offset, missing_ok=True))
    missing = [i for i in range(len(batch)) if i not in results and i not in repeats]
    if missing:
        query, params = _insert_statement(
            [batch[i] for i in missing], timed=timed, fast=False, distributed=db_identity.is_distributed(conn)
        )
        written = dict(conn.execute(query, params).fetchall())
        # An entry booked into another month is written again by the database, so RETURNING misses it.
        unreturned = [batch[i].id for i in missing if batch[i].id not in written]
        if unreturned:
            written.update(conn.execute(queries["events_by_id"], {"ids": unreturned}).fetchall())
        for i in missing:
            if batch[i].id not in written:
                raise errors.EventRejected(f"event {offset + i}: written but not found again", index=offset + i)
            results[i] = Recorded(batch[i].id, written[batch[i].id], duplicate=False)
    results.update(_resolve_by_key(conn, batch, repeats, offset=offset))
    return [results[i] for i in range(len(batch))]


def _resolve_by_key(
    conn: psycopg.Connection[Any],
    batch: Sequence[Pending],
    indexes: list[int],
    *,
    offset: int,
    missing_ok: bool = False,
) -> dict[int, Recorded]:
    """Events whose idempotency key is stored already: the same payload is a duplicate, another a conflict.

    An event whose key is not found raises, unless `missing_ok` (it is then left out).
    """
    if not indexes:
        return {}
    events = [batch[i].event for i in indexes]
    rows = conn.execute(
        queries["events_by_idempotency_key"],
        {
            "tenant_ids": [e.tenant_id for e in events],
            "user_ids": [e.user_id for e in events],
            "idempotency_keys": [e.idempotency_key for e in events],
            "metadata": [metadata_json(e.metadata) for e in events],
        },
    ).fetchall()
    found = {int(row[0]) - 1: row[1:] for row in rows}
    resolved: dict[int, Recorded] = {}
    for position, index in enumerate(indexes):
        event = batch[index].event
        where = offset + index
        if position not in found:
            if missing_ok:
                continue
            raise errors.EventRejected(f"event {where}: skipped by the database but not found again", index=where)
        existing_id, created_at, *payload = found[position]
        if not _same_payload(event, tuple(payload)):
            raise errors.IdempotencyConflict(
                f"event {where}: idempotency key {event.idempotency_key!r} was already used for event {existing_id}"
                " with a different payload; a retry must repeat the original event exactly",
                index=where,
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

    `conn` is in autocommit mode (the pool's connections are): BEGIN and COMMIT are statements of
    the pipeline, sent with the inserts, so the write is one round trip (`conn.transaction()` in a
    pipeline took four: psycopg syncs after BEGIN, and before and after COMMIT). After a failure,
    the transaction is rolled back here; a failed COMMIT (a deferred check) has ended it already.
    """
    if not conn.autocommit:
        raise ValueError("write_fast needs an autocommit connection (BEGIN and COMMIT are its own)")
    written: list[Pending] = []
    distributed = db_identity.is_distributed(conn)  # asked once per connection, before the pipeline's one round trip
    try:
        with conn.pipeline():
            conn.execute(BEGIN)
            clock: psycopg.Cursor[Any] | None = None
            for identity, chunks in groups:
                cursor = db_identity.become(conn, identity)
                clock = clock or cursor
                for chunk in chunks:
                    timed = _check_created_at(identity, chunk)
                    conn.execute(*_insert_statement(chunk, timed=timed, fast=True, distributed=distributed))
                    written.extend(chunk)
            conn.execute(COMMIT)
    except BaseException:
        _roll_back(conn)
        raise
    assert clock is not None
    row = clock.fetchone()
    assert row is not None
    now: datetime = row[2]
    return [Recorded(p.id, p.event.created_at or now, duplicate=False) for p in written]


def _roll_back(conn: psycopg.Connection[Any]) -> None:
    """End the failed transaction of write_fast, if it is still open, for the careful path to use the connection."""
    if conn.closed or conn.info.transaction_status not in (TransactionStatus.INTRANS, TransactionStatus.INERROR):
        return
    with contextlib.suppress(psycopg.Error):  # the connection broke: the failure being raised says more
        conn.rollback()


def _retry_or_refusal(failure: Exception, *, index: int) -> errors.UsagemeterError:
    """Raise a transient failure again, for retry.with_connection to retry the whole write; map the rest."""
    if refusals.is_transient(failure):
        raise failure
    return refusals.refusal(failure, index=index)


def write_batch(
    conn: psycopg.Connection[Any], identity: Identity, batch: Sequence[Pending], *, locate_refusal: bool = True
) -> list[Recorded]:
    """Write the batch atomically as `identity` (a transaction, or a savepoint inside one).

    A refusal raises a project error for the first refused event, with its index (found by trying
    each event alone, unless `locate_refusal` is off); then nothing was written. Transient
    failures are raised as they are, for the caller's retry.
    """
    try:
        with acting_as(conn, identity):
            return _insert(conn, identity, batch)
    except Exception as failure:
        refused = _retry_or_refusal(failure, index=0)
        if locate_refusal and len(batch) > 1 and not refusals.is_batch_wide(refused):
            refused = _first_refused(conn, identity, batch) or refused
        raise refused from failure


def _first_refused(
    conn: psycopg.Connection[Any], identity: Identity, batch: Sequence[Pending]
) -> errors.UsagemeterError | None:
    """The refusal of the first event the database refuses alone, keeping nothing; None if each passes alone."""
    for index, pending in enumerate(batch):
        try:
            with conn.transaction(force_rollback=True), acting_as(conn, identity):
                _insert(conn, identity, [pending], offset=index)
        except Exception as single:
            return _retry_or_refusal(single, index=index)
    return None


def write_atomically(conn: psycopg.Connection[Any], identity: Identity, batch: ChunkedBatch) -> list[Recorded]:
    """A batch all or nothing: the one-round-trip path, or the careful one when that meets anything unusual."""
    try:
        return write_fast(conn, [(identity, batch.chunks())])
    except Exception as failure:
        if refusals.is_transient(failure):
            raise
        return write_batch(conn, identity, batch.all())


def _write_one(conn: psycopg.Connection[Any], identity: Identity, pending: Pending, *, index: int) -> Outcome:
    """One event in its own savepoint (or transaction): its Recorded, or the project error of its refusal."""
    try:
        with acting_as(conn, identity):
            return _insert(conn, identity, [pending], offset=index)[0]
    except Exception as failure:
        return _retry_or_refusal(failure, index=index)


def write_each(conn: psycopg.Connection[Any], identity: Identity, batch: Sequence[Pending]) -> list[Outcome]:
    """Write events one savepoint each, keeping those the database accepts: for batches of unrelated callers.

    Outcomes are in input order; each error is about its event written alone (index 0, "event 0: ...").
    """
    return [_write_one(conn, identity, pending, index=0) for pending in batch]


def write_groups(conn: psycopg.Connection[Any], items: Sequence[tuple[Identity, Pending]]) -> list[Outcome]:
    """Write events of several identities in one transaction, a savepoint per identity; one outcome per event.

    For writers that batch unrelated callers (group commit, the enqueue flusher): when anything
    fails, each group is retried alone, and a refused group event by event, so only the refused
    events fail (each its own request: its error has index 0). If the shared commit itself is
    refused (a deferred check), each event commits alone. Outcomes come back in input order.
    Raises only transient failures (retry.with_connection turns them into DatabaseUnavailable).
    """
    positions: dict[tuple[str, str], list[int]] = {}
    for position, (identity, _) in enumerate(items):
        positions.setdefault(identity.key, []).append(position)
    # Validated already, so there is nothing to overlap: one INSERT per group (its statement triggers run once).
    groups = [(items[group[0]][0], [[items[p][1] for p in group]]) for group in positions.values()]
    try:
        fast = write_fast(conn, groups)
    except Exception as failure:
        if refusals.is_transient(failure):
            raise
    else:
        outcomes: list[Outcome | None] = [None] * len(items)
        for position, recorded in zip((p for group in positions.values() for p in group), fast, strict=True):
            outcomes[position] = recorded
        return [o for o in outcomes if o is not None]
    try:
        return _write_groups_carefully(conn, items, positions)
    except Exception as failure:
        if refusals.is_transient(failure):
            raise
    # The shared commit was refused: nothing of it stayed; each event now commits on its own.
    return [_write_one(conn, identity, pending, index=0) for identity, pending in items]


def _write_groups_carefully(
    conn: psycopg.Connection[Any], items: Sequence[tuple[Identity, Pending]], positions: dict[Any, list[int]]
) -> list[Outcome]:
    outcomes: list[Outcome | None] = [None] * len(items)
    with conn.transaction():
        for group in positions.values():
            identity = items[group[0]][0]
            batch = [items[p][1] for p in group]
            results: Sequence[Outcome]
            try:
                results = write_batch(conn, identity, batch, locate_refusal=False)
            except errors.UsagemeterError:
                results = write_each(conn, identity, batch)
            for position, result in zip(group, results, strict=True):
                outcomes[position] = result
    return [o for o in outcomes if o is not None]
