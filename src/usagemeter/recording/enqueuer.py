"""Fire-and-forget recording: enqueue() returns at once; a flusher thread writes, or spools when it can't.

Events wait in a bounded in-memory buffer. The flusher writes them in batches; when the database
is unreachable it appends them to the durable spool instead, and replays the spool, oldest first,
once the database answers again. While the spool holds anything, new batches go behind it, so
events reach the database in the order they were enqueued. When both buffer and spool are full,
`on_full` decides: "block" waits for room, "raise" raises Backpressure. Nothing is dropped
silently: events the database refuses are counted and kept in the spool's rejected.jsonl.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from psycopg_pool import ConnectionPool

from usagemeter import errors
from usagemeter.db import Identity, retry
from usagemeter.recording import writer
from usagemeter.recording.event import UsageEvent
from usagemeter.recording.spool import Spool, SpooledEvent

OnFull = Literal["block", "raise"]
log = logging.getLogger("usagemeter.enqueue")


@dataclass
class Counters:
    """What happened to enqueued events so far; `queued` = written + spooled-not-yet-replayed + rejected + in memory."""

    queued: int = 0
    written: int = 0
    spooled: int = 0
    replayed: int = 0
    rejected: int = 0


class Enqueuer:
    def __init__(
        self,
        pool: ConnectionPool[Any],
        spool: Spool,
        *,
        max_buffer: int,
        on_full: OnFull,
        max_batch: int,
        write_policy: retry.RetryPolicy,
        flush_interval_s: float = 0.05,
        replay_interval_s: float = 1.0,
    ) -> None:
        self._pool = pool
        self._spool = spool
        self._max_buffer = max_buffer
        self._on_full = on_full
        self._max_batch = max_batch
        self._policy = write_policy
        self._flush_interval_s = flush_interval_s
        self._replay_interval_s = replay_interval_s
        self._buffer: deque[tuple[Identity, UsageEvent]] = deque()
        self._held: list[SpooledEvent] = []  # taken from the buffer, neither written nor spooled yet
        self._lock = threading.Lock()
        self._has_items = threading.Condition(self._lock)
        self._has_space = threading.Condition(self._lock)
        self._idle = threading.Condition(self._lock)
        self._busy = False
        self._closing = False
        self._next_replay = 0.0
        self.counters = Counters()
        self._thread = threading.Thread(target=self._run, name="usagemeter-enqueue", daemon=True)
        self._thread.start()

    # -- callers' side --------------------------------------------------------------------------

    def put(self, identity: Identity, event: UsageEvent) -> None:
        """Buffer one validated event; O(1) unless the buffer is full."""
        with self._lock:
            if self._closing:
                raise errors.RecorderClosed("the recorder is closed")
            while len(self._buffer) >= self._max_buffer:
                if self._on_full == "raise":
                    raise errors.Backpressure(
                        f"{len(self._buffer)} events are waiting and the spool is full or unavailable; try again later"
                    )
                self._has_space.wait()
            self._buffer.append((identity, event))
            self.counters.queued += 1
            if len(self._buffer) == 1 or len(self._buffer) >= self._max_batch:
                self._has_items.notify()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every enqueued event is in the database (spool replayed); False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            self._next_replay = 0.0
            self._has_items.notify()
            while self._buffer or self._busy or self._held or self._spool.has_records():
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._next_replay = 0.0
                self._has_items.notify()
                self._idle.wait(0.05 if remaining is None else min(remaining, 0.05))
        return True

    def close(self) -> None:
        """Write or spool everything buffered, then stop; spooled events wait for the next start."""
        with self._lock:
            self._closing = True
            self._has_items.notify()
        self._thread.join()
        self._spool.close()

    # -- the flusher thread ---------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._buffer and not self._closing and not self._held and not self._replay_due():
                    self._has_items.wait(self._flush_interval_s)
                batch: list[tuple[Identity, UsageEvent]] = []
                if not self._held:
                    while self._buffer and len(batch) < self._max_batch:
                        batch.append(self._buffer.popleft())
                    self._has_space.notify_all()
                self._busy = True
                finished = self._closing and not self._buffer
            try:
                if self._spool.has_records() and self._replay_due():
                    self._replay()
                if self._held:
                    self._deliver(self._held)
                if batch:
                    self._deliver([SpooledEvent(identity, writer.Pending.of(event)) for identity, event in batch])
            except Exception:  # a bug must not kill the flusher: events stay held and are retried
                log.exception("enqueue flusher failed; retrying")
                time.sleep(self._replay_interval_s)
            with self._lock:
                self._busy = False
                self._idle.notify_all()
                if finished and not self._held:
                    return

    def _replay_due(self) -> bool:
        return self._spool.has_records() and time.monotonic() >= self._next_replay

    def _deliver(self, records: list[SpooledEvent]) -> None:
        """Write the records, or spool them; keep them held when neither is possible right now."""
        if not self._spool.has_records():
            try:
                outcomes = self._write(records)
            except errors.DatabaseUnavailable:
                pass
            else:
                self._account(records, outcomes)
                self.counters.written += sum(isinstance(o, writer.Recorded) for o in outcomes)
                self._held = []
                return
        if self._spool.append(records, past_limit=self._closing):  # closing: over the limit beats losing events
            self.counters.spooled += len(records)
            self._held = []
            self._next_replay = min(self._next_replay, time.monotonic() + self._replay_interval_s)
        else:
            self._held = records
            time.sleep(min(self._replay_interval_s, 0.1))

    def _replay(self) -> None:
        """Write the whole spool in order; clear it only when all of it is in. A cut-short replay just runs again."""
        records = self._spool.read()
        outcomes: list[writer.Recorded | errors.UsagemeterError] = []
        try:
            for start in range(0, len(records), self._max_batch):
                outcomes.extend(self._write(records[start : start + self._max_batch]))
        except errors.DatabaseUnavailable:
            self._next_replay = time.monotonic() + self._replay_interval_s
            return
        self._account(records, outcomes)
        self._spool.clear()
        self.counters.replayed += sum(isinstance(o, writer.Recorded) for o in outcomes)
        log.info("replayed %d spooled events", len(records))

    def _write(self, records: Sequence[SpooledEvent]) -> list[writer.Recorded | errors.UsagemeterError]:
        items = [(record.identity, record.pending) for record in records]
        return retry.with_connection(self._pool, self._policy, lambda conn: writer.write_groups(conn, items))

    def _account(self, records: Sequence[SpooledEvent], outcomes: Sequence[object]) -> None:
        for record, outcome in zip(records, outcomes, strict=True):
            if isinstance(outcome, errors.UsagemeterError):
                self.counters.rejected += 1
                self._spool.reject(record, str(outcome).removeprefix("event 0: "))
                log.warning("enqueued event %s refused: %s", record.pending.id, outcome)
