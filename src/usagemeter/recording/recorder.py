"""The recordUsage service: how applications write usage (sync and async faces over one implementation).

    with Recorder("postgresql://...") as recorder:                  # acts as the service role
        me = recorder.as_user(verified_jwt_claims)                    # acts as that user, under RLS
        me.record(action="agency:scope:generate", user_id=None, tenant_id=tenant, tokens_input=812)

What happens on failure, for every write path:
- retry by the caller: give an `idempotency_key`; the same key with the same payload returns the
  original event with `duplicate=True`, with another payload raises IdempotencyConflict.
- dropped connection or server restart: the write is retried on a new connection (RetryPolicy);
  each event's id is fixed before the first attempt, so a commit whose answer was lost is found,
  not doubled. After the last attempt: DatabaseUnavailable, and the caller cannot know; retry
  with the same idempotency key to be sure.
- refusal by the database (RLS, a constraint, a trigger's `raise exception`): EventRejected
  (WriteRefused for a trigger, with the database's message and hint) for the refused event
  only, never retried; see db/refusals.py for the one mapping of SQLSTATEs.
- read-only database (a standby after failover): retried like a dropped connection, then
  DatabaseReadOnly, which names the cause.
See docs/recorder.md for each path.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import uuid
import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypedDict, Unpack

import psycopg
import pydantic
from psycopg import conninfo
from psycopg_pool import ConnectionPool

from usagemeter import db, errors, settings
from usagemeter.db import Identity, retry
from usagemeter.recording import async_handoff, enqueuer, group_commit, spool, writer
from usagemeter.recording.event import EventFields, UsageEvent, validated_claims
from usagemeter.recording.writer import Recorded

__all__ = ["AsyncRecorder", "Recorded", "Recorder", "UsageEvent", "validate_events"]


def _invalid(failure: pydantic.ValidationError, index: int) -> errors.InvalidEvent:
    field, message = errors.first_problem(failure)
    where = f"{field}: " if field else ""
    return errors.InvalidEvent(f"event {index}: {where}{message}", index=index, field=field)


def validate_event(item: UsageEvent | Mapping[str, Any], *, index: int = 0) -> UsageEvent:
    """Validate one event; InvalidEvent names `index` when it is invalid."""
    if isinstance(item, UsageEvent):
        return item
    try:
        return UsageEvent.model_validate(item)
    except pydantic.ValidationError as failure:
        raise _invalid(failure, index) from None


def validate_events(items: Iterable[UsageEvent | Mapping[str, Any]], *, offset: int = 0) -> list[UsageEvent]:
    """Validate events; the first invalid one raises InvalidEvent with its index (counted from `offset`)."""
    return [validate_event(item, index=index) for index, item in enumerate(items, start=offset)]


@dataclass(frozen=True)
class EnqueueOptions:
    """Fire-and-forget settings: where the spool lives and what happens when buffer and spool are full.

    Processes may share `spool_dir` (each spools in its own subdirectory); `max_spool_bytes` is per process.
    """

    spool_dir: Path | None = None
    max_buffer: int = 100_000
    max_spool_bytes: int = 1 << 30
    on_full: enqueuer.OnFull = "block"
    write_policy: retry.RetryPolicy = field(
        default_factory=lambda: retry.RetryPolicy(attempts=2, connect_timeout_s=1.0)
    )  # short: when the database is down, spool quickly rather than hold events in memory


def default_spool_dir(database_url: str) -> Path:
    """One spool directory per database under the data directory (each process spools in its own subdirectory).

    Named by server and database only, not by login or password: the admin and app URLs of one
    database, or a rotated password, find the same spool.
    """
    params = conninfo.conninfo_to_dict(database_url)
    where = "|".join(str(params.get(key, "")) for key in ("host", "hostaddr", "port", "dbname"))
    digest = hashlib.sha256(where.encode("utf-8")).hexdigest()[:16]
    return settings.Settings().data_dir / "spool" / digest


def _prepare(items: Sequence[UsageEvent | Mapping[str, Any]], offset: int) -> list[writer.Pending]:
    return [writer.Pending.of(event) for event in validate_events(items, offset=offset)]


class _Engine:
    """What all faces of one recorder share: the pool, the retry policy, group commit and the enqueue flusher."""

    def __init__(
        self,
        database_url: str,
        *,
        pool_size: int,
        policy: retry.RetryPolicy,
        max_batch: int,
        enqueue_options: EnqueueOptions,
    ) -> None:
        self.database_url = database_url
        self.max_batch = max_batch
        self.enqueue_options = enqueue_options
        self._enqueuer: enqueuer.Enqueuer | None = None
        self._enqueuer_lock = threading.Lock()
        self.policy = policy
        self.pool: ConnectionPool[Any] = db.app_pool(database_url, max_size=pool_size, timeout=5.0)
        self.committer = group_commit.GroupCommitter(self.pool, policy=policy, max_batch=max_batch)
        if spool.has_leftovers(self._spool_dir()):
            self.get_enqueuer()  # events left by processes that ended: replay them now

    def _spool_dir(self) -> Path:
        return self.enqueue_options.spool_dir or default_spool_dir(self.database_url)

    def get_enqueuer(self) -> enqueuer.Enqueuer:
        """The flusher, started on first use (or at start when the spool holds events)."""
        with self._enqueuer_lock:
            if self._enqueuer is None:
                options = self.enqueue_options
                self._enqueuer = enqueuer.Enqueuer(
                    self.pool,
                    spool.Spool(self._spool_dir(), max_bytes=options.max_spool_bytes),
                    max_buffer=options.max_buffer,
                    on_full=options.on_full,
                    max_batch=self.max_batch,
                    write_policy=options.write_policy,
                )
            return self._enqueuer

    @property
    def counters(self) -> enqueuer.Counters:
        return self._enqueuer.counters if self._enqueuer is not None else enqueuer.Counters()

    def flush(self, timeout: float | None) -> bool:
        return self._enqueuer.flush(timeout) if self._enqueuer is not None else True

    def close(self) -> None:
        if self._enqueuer is not None:
            self._enqueuer.close()
        self.committer.close()
        self.pool.close()


class Recorder:
    """Records usage events into PostgreSQL as one identity (the service role unless narrowed by as_user).

    Parameters
    ----------
    database_url:
        PostgreSQL URL of the app login `authenticator` (one that owns nothing: a superuser, BYPASSRLS or
        owner login raises ConfigurationError); default $USAGEMETER_APP_DATABASE_URL, else
        $USAGEMETER_DATABASE_URL (or $DATABASE_URL) with its user switched to `authenticator` and
        $USAGEMETER_AUTHENTICATOR_PASSWORD.
    pool_size:
        Connections shared by record_many and the group-commit writer.
    retry_policy:
        How long writes ride out dropped connections and restarts.
    max_batch:
        Most events one transaction of the group-commit writer or the enqueue flusher holds.
    enqueue_options:
        Buffer, spool and backpressure settings of enqueue().
    """

    def __init__(
        self,
        database_url: str | None = None,
        *,
        pool_size: int = 4,
        retry_policy: retry.RetryPolicy | None = None,
        max_batch: int = 1000,
        enqueue_options: EnqueueOptions | None = None,
    ) -> None:
        url = database_url or settings.Settings().app_database_url
        if not url:
            raise errors.ConfigurationError(
                "no database: pass database_url or set USAGEMETER_APP_DATABASE_URL (or USAGEMETER_DATABASE_URL)"
            )
        self._engine = _Engine(
            url,
            pool_size=pool_size,
            policy=retry_policy or retry.RetryPolicy(),
            max_batch=max_batch,
            enqueue_options=enqueue_options or EnqueueOptions(),
        )
        self._owns_engine = True
        self._root: Recorder | None = None
        # Closing drains enqueued events; if the caller never closes, do it when the recorder is
        # collected or the interpreter exits, so buffered events reach the database or the spool.
        self._closer = weakref.finalize(self, self._engine.close)
        self.identity = Identity.service()

    def _face(self, identity: Identity) -> Recorder:
        face = Recorder.__new__(Recorder)
        face._engine = self._engine
        face._owns_engine = False
        face._root = self  # the root closes the engine when collected: keep it alive while faces are
        face.identity = identity
        return face

    # -- identities ---------------------------------------------------------------------------

    def as_user(self, user: uuid.UUID | Mapping[str, Any]) -> Recorder:
        """The same recorder acting as a user: a user id, or the verified claims of their JWT.

        Every write then runs as role `authenticated` with those claims, so RLS lets it record only
        as that user, personal or into their tenants, whatever the caller passes.
        Claims are sent as JSON: UUID and datetime values become strings, and values the database
        cannot take (other objects, NUL, lone surrogates) raise ValueError naming the claim.
        """
        if isinstance(user, uuid.UUID):
            return self._face(Identity.user(user))
        return self._face(Identity.user_from_claims(validated_claims(user)))

    def as_service(self) -> Recorder:
        """The same recorder acting as the service role (bypasses RLS: backends only)."""
        return self._face(Identity.service())

    def as_identity(self, identity: Identity) -> Recorder:
        """The same recorder acting as `identity`: for callers whose token was verified (Identity.from_claims)."""
        return self._face(identity)

    # -- writing ------------------------------------------------------------------------------

    def _event(self, fields: Mapping[str, Any]) -> UsageEvent:
        return validate_event(self._with_default_user(fields))

    def record(self, **fields: Unpack[EventFields]) -> Recorded:
        """Record one event and return once it is committed (sharing the commit with concurrent callers).

        Fields as UsageEvent: `action` and `user_id` (None acting as a user means that user) are
        required, then tenant_id, module_id, tokens_input, tokens_output, metadata,
        idempotency_key, created_at. Raises InvalidEvent, EventRejected (WriteRefused when a
        trigger refuses), IdempotencyConflict or DatabaseUnavailable (DatabaseReadOnly).
        """
        event = self._event(fields)
        ticket = group_commit.Ticket(self.identity, writer.Pending.of(event))
        committer = self._engine.committer
        return committer.wait(committer.submit(ticket))

    def record_many(self, events: Iterable[UsageEvent | Mapping[str, Any]]) -> list[Recorded]:
        """Record a batch atomically in one round trip; results in input order.

        An invalid event (InvalidEvent) or a refusal by the database (EventRejected,
        IdempotencyConflict; WriteRefused when a trigger refuses) names its index, and then nothing
        was written. DatabaseUnavailable (DatabaseReadOnly) when retries are spent. Events are validated
        chunk by chunk while earlier chunks are already on their way to the server, in one
        transaction that an error rolls back.
        """
        items = [self._with_default_user(e) for e in events]
        if not items:
            return []
        batch = writer.ChunkedBatch(items, _prepare)
        return retry.with_connection(
            self._engine.pool, self._engine.policy, lambda conn: writer.write_atomically(conn, self.identity, batch)
        )

    def record_each(self, events: Iterable[UsageEvent | Mapping[str, Any]]) -> list[Recorded | errors.UsagemeterError]:
        """Record valid events independently: one commit, a savepoint each, so a refused event fails alone.

        For imports where one bad row must not stop the others; results (or errors) in input order.
        """
        items = [self._with_default_user(e) for e in events]
        batch = [writer.Pending.of(e) for e in validate_events(items)]

        def write(conn: psycopg.Connection[Any]) -> list[Recorded | errors.UsagemeterError]:
            with conn.transaction():
                return writer.write_each(conn, self.identity, batch)

        return retry.with_connection(self._engine.pool, self._engine.policy, write)

    def _with_default_user(self, item: UsageEvent | Mapping[str, Any]) -> UsageEvent | Mapping[str, Any]:
        if self.identity.user_id is None or isinstance(item, UsageEvent) or item.get("user_id") is not None:
            return item
        return {**item, "user_id": self.identity.user_id}

    def enqueue(self, **fields: Unpack[EventFields]) -> None:
        """Validate and buffer one event, returning at once; see enqueuer.py for what happens next.

        As the service role the event keeps the time it was enqueued, even if it reaches the
        database later from the spool; users' events are stamped when written. Raises InvalidEvent
        at once for bad input, Backpressure when full and `on_full="raise"`.
        """
        if fields.get("created_at") is None and self.identity.role == "service_role":
            fields = {**fields, "created_at": datetime.now(UTC)}
        event = self._event(fields)
        self._engine.get_enqueuer().put(self.identity, event)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every enqueued event is in the database; False if `timeout` passed first."""
        return self._engine.flush(timeout)

    @property
    def counters(self) -> enqueuer.Counters:
        """Enqueued events so far: queued, written, spooled, replayed, rejected, and held (see enqueuer.Counters)."""
        return self._engine.counters

    # -- lifecycle -----------------------------------------------------------------------------

    def close(self) -> None:
        """Drain enqueued events (to the database or the spool), commit what is queued, close the pool.

        Faces from as_user share the engine and close with it.
        """
        if self._owns_engine:
            self._closer()  # runs engine.close once, whoever calls first

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class RecorderOptions(TypedDict, total=False):
    """Recorder's keyword parameters, for faces that pass them through."""

    pool_size: int
    retry_policy: retry.RetryPolicy | None
    max_batch: int
    enqueue_options: EnqueueOptions | None


class AsyncRecorder:
    """The asyncio face of Recorder: the same engine, awaited instead of blocked on."""

    def __init__(self, database_url: str | None = None, **options: Unpack[RecorderOptions]) -> None:
        """Same parameters as Recorder."""
        self._sync = Recorder(database_url, **options)

    @classmethod
    def _wrapping(cls, recorder: Recorder) -> AsyncRecorder:
        face = cls.__new__(cls)
        face._sync = recorder
        return face

    @property
    def identity(self) -> Identity:
        return self._sync.identity

    def as_user(self, user: uuid.UUID | Mapping[str, Any]) -> AsyncRecorder:
        return self._wrapping(self._sync.as_user(user))

    def as_service(self) -> AsyncRecorder:
        return self._wrapping(self._sync.as_service())

    def as_identity(self, identity: Identity) -> AsyncRecorder:
        return self._wrapping(self._sync.as_identity(identity))

    async def record(self, **fields: Unpack[EventFields]) -> Recorded:
        """As Recorder.record; awaits the group commit on the event loop, with no thread per call."""
        event = self._sync._event(fields)
        return await async_handoff.committed(
            self._sync._engine.committer, self._sync.identity, writer.Pending.of(event)
        )

    async def record_many(self, events: Sequence[UsageEvent | Mapping[str, Any]]) -> list[Recorded]:
        """As Recorder.record_many, in a worker thread."""
        return await asyncio.to_thread(self._sync.record_many, events)

    def enqueue(self, **fields: Unpack[EventFields]) -> None:
        """As Recorder.enqueue: returns at once (it only buffers), so it needs no await."""
        self._sync.enqueue(**fields)

    async def flush(self, timeout: float | None = None) -> bool:
        return await asyncio.to_thread(self._sync.flush, timeout)

    @property
    def counters(self) -> enqueuer.Counters:
        return self._sync.counters

    @property
    def pool(self) -> ConnectionPool[Any]:
        """The connections writes use (shared by every face), for metrics."""
        return self._sync._engine.pool

    async def close(self) -> None:
        await asyncio.to_thread(self._sync.close)

    async def __aenter__(self) -> AsyncRecorder:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
