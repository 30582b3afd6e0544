"""Fire-and-forget recording: enqueue() returns at once; a flusher thread writes, or spools when it can't.

Events wait in a bounded in-memory buffer. The flusher writes them in batches; when the database
cannot take them it appends them to the durable spool instead, and replays the spool, oldest
first, once the database answers again. While the spool holds anything, new batches go behind
it, so events reach the database in the order they were enqueued. When both buffer and spool are
full, `on_full` decides: "block" waits for room, "raise" raises Backpressure.

Every event taken from the buffer ends written, spooled or rejected (counted, and kept in the
spool's rejected.jsonl); until then it is held in memory and counted in `held`, and flush()
returns False. Whatever a write raises means "not written": a failure of the database as a whole
(unreachable, read-only, out of disk) keeps the events for later; any other failure is narrowed
down by halving the batch until the events that fail alone are found and rejected.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import psycopg
from psycopg_pool import ConnectionPool

from usagemeter import errors
from usagemeter.db import Identity, refusals, retry
from usagemeter.recording import writer
from usagemeter.recording.event import UsageEvent
from usagemeter.recording.spool import Spool, SpooledEvent, SpoolFile

OnFull = Literal["block", "raise"]
log = logging.getLogger("usagemeter.enqueue")

REPLAY_BATCH_BYTES = 4 << 20
REPLAY_SLICE_S = 1.0
ADOPT_INTERVAL_S = 10.0
CLOSE_TIMEOUT_S = 60.0


@dataclass
class Counters:
    """What happened to enqueued events so far.

    `queued` = written + spooled-not-yet-replayed + rejected + in memory. `replayed` and `rejected`
    also count events adopted from the spools of dead processes. `held` is how many events were
    taken from the buffer and are neither written, spooled nor rejected right now.
    """

    queued: int = 0
    written: int = 0
    spooled: int = 0
    replayed: int = 0
    rejected: int = 0
    held: int = 0


def describe_failure(failure: BaseException) -> str:
    """Why an event was not written, for rejected.jsonl and import error lines."""
    if isinstance(failure, errors.WriteRefused) and failure.sqlstate:  # the database's own words: say whose
        return f"{str(failure).removeprefix('event 0: ')} (SQLSTATE {failure.sqlstate})"
    if isinstance(failure, errors.UsagemeterError):
        return str(failure).removeprefix("event 0: ")
    if isinstance(failure, psycopg.Error) and failure.diag.message_primary:
        return f"refused by the database ({failure.sqlstate}): {failure.diag.message_primary}"
    return f"cannot be written: {type(failure).__name__}: {failure}"


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
        self._held: list[SpooledEvent] = []  # taken from the buffer, neither written, spooled nor rejected yet
        self._lock = threading.Lock()
        self._has_items = threading.Condition(self._lock)
        self._has_space = threading.Condition(self._lock)
        self._idle = threading.Condition(self._lock)
        self._busy = False
        self._closing = False
        self._stopped = False  # the flusher ended after close() drained everything
        self._next_replay = 0.0
        self._next_adoption = 0.0
        self.counters = Counters()
        self._thread = self._start_flusher()

    # -- callers' side --------------------------------------------------------------------------

    def put(self, identity: Identity, event: UsageEvent) -> None:
        """Buffer one validated event; O(1) unless the buffer is full."""
        with self._lock:
            while True:
                if self._closing:
                    raise errors.RecorderClosed("the recorder is closed")
                self._ensure_flusher()
                if len(self._buffer) < self._max_buffer:
                    break
                if self._on_full == "raise":
                    raise errors.Backpressure(
                        f"{len(self._buffer)} events are waiting and the spool is full or unavailable; try again later"
                    )
                self._has_space.wait(1.0)  # bounded: the loop checks the flusher is alive and not closed
            self._buffer.append((identity, event))
            self.counters.queued += 1
            if len(self._buffer) == 1 or len(self._buffer) >= self._max_batch:
                self._has_items.notify()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every enqueued event is settled and no spool waits for replay; False on timeout.

        Also claims the spools of dead processes now, and waits for them too.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            self._next_adoption = 0.0
            while self._buffer or self._busy or self._held or self._spool.pending() or self._next_adoption == 0.0:
                if self._stopped:
                    return False  # closed with events still in a spool: they wait for the next start
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._ensure_flusher()
                self._next_replay = 0.0
                self._has_items.notify()
                self._idle.wait(0.05 if remaining is None else min(remaining, 0.05))
        return True

    def close(self) -> None:
        """Write or spool everything buffered, then stop; spooled events wait for the next start.

        Bounded: after CLOSE_TIMEOUT_S the events still in memory are logged as an error and left.
        """
        deadline = time.monotonic() + CLOSE_TIMEOUT_S
        with self._lock:
            self._closing = True
            self._has_items.notify()
        while True:
            self._thread.join(timeout=0.5)
            with self._lock:
                if not self._thread.is_alive():
                    if not self._buffer and not self._held:
                        break
                    self._ensure_flusher()
                if time.monotonic() >= deadline:
                    log.error(
                        "closing: %d enqueued events could be neither written nor spooled and are lost",
                        len(self._buffer) + len(self._held),
                    )
                    return  # the flusher may still be using the spool: leave it locked until exit
        self._spool.close()

    # -- the flusher thread ---------------------------------------------------------------------

    def _start_flusher(self) -> threading.Thread:
        thread = threading.Thread(target=self._run, name="usagemeter-enqueue", daemon=True)
        thread.start()
        return thread

    def _ensure_flusher(self) -> None:
        """Replace a flusher thread that died (called with the lock held); its held events are kept."""
        if not self._thread.is_alive() and not self._stopped:
            log.error("the enqueue flusher thread died; starting a new one")
            self._busy = False
            self._thread = self._start_flusher()

    def _run(self) -> None:
        try:
            while self._flush_once():
                pass
        finally:
            with self._lock:
                self._busy = False
                self._idle.notify_all()

    def _flush_once(self) -> bool:
        """One round: take a batch, replay or adopt spools when due, deliver; False when closed and drained."""
        with self._lock:
            while not (self._buffer or self._closing or self._held or self._replay_due() or self._adoption_due()):
                self._has_items.wait(self._flush_interval_s)
            if not self._held:
                while self._buffer and len(self._held) < self._max_batch:
                    identity, event = self._buffer.popleft()
                    # the id is fixed here, when the event is taken: before any attempt to write or spool it
                    self._held.append(SpooledEvent(identity, writer.Pending.of(event)))
                self._has_space.notify_all()
            self._busy = True
            closing = self._closing
            self.counters.held = len(self._held)
        try:
            if not closing:
                if self._adoption_due():
                    self._adopt()
                if self._replay_due():
                    self._replay()
            if self._held:
                self._deliver()
        except Exception:  # a bug must not kill the flusher: held events stay held and are tried again
            log.exception("enqueue flusher failed; trying again")
            time.sleep(0.1)
        with self._lock:
            self._busy = False
            self.counters.held = len(self._held)
            self._idle.notify_all()
            self._stopped = closing and not self._buffer and not self._held
            return not self._stopped

    def _replay_due(self) -> bool:
        return self._spool.pending() and time.monotonic() >= self._next_replay

    def _adoption_due(self) -> bool:
        return time.monotonic() >= self._next_adoption

    def _adopt(self) -> None:
        self._next_adoption = time.monotonic() + ADOPT_INTERVAL_S  # first: a failing scan waits its turn too
        claimed = self._spool.adopt_orphans()
        if claimed:
            log.info("claimed %d spool(s) left by processes that ended", claimed)
            self._next_replay = 0.0

    def _deliver(self) -> None:
        """Write the held events, or spool them; keep them held when neither is possible right now."""
        records = self._held
        if not self._spool.pending():  # nothing older waits: straight to the database
            records = self._settle(records, replaying=False)
            if not records:
                self._held = []
                return
        storable: list[SpooledEvent] = []
        lines: list[str] = []
        for record in records:
            try:
                lines.append(record.to_line() + "\n")
                storable.append(record)
            except (TypeError, ValueError, RecursionError) as failure:
                self._reject(record, f"cannot be spooled: {failure}")
        if not storable or self._spool.append("".join(lines).encode("ascii"), past_limit=self._closing):
            self.counters.spooled += len(storable)
            self._held = []
            self._next_replay = min(self._next_replay, time.monotonic() + self._replay_interval_s)
        else:
            self._held = storable
            time.sleep(min(self._replay_interval_s, 0.1))

    def _replay(self) -> None:
        """Replay spools batch by batch, oldest first, for at most REPLAY_SLICE_S a round.

        Stops at the first batch the database cannot take now. Between slices the flusher moves
        new events from the buffer to behind the spool, so a long replay does not block callers.
        """
        self._next_replay = time.monotonic() + self._replay_interval_s  # first: a failing replay waits its turn too
        deadline = time.monotonic() + REPLAY_SLICE_S
        for spool_file in self._spool.replayable():
            progress = self._replay_file(spool_file, deadline)
            if progress == "blocked":
                return
            if progress == "more":
                self._next_replay = 0.0
                return
        self._spool.release_replayed()

    def _replay_file(self, spool_file: SpoolFile, deadline: float) -> Literal["done", "more", "blocked"]:
        for lines in spool_file.batches(max_records=self._max_batch, max_bytes=REPLAY_BATCH_BYTES):
            events = [item for line in lines for item in line.items if isinstance(item, SpooledEvent)]
            unsettled = self._settle(events, replaying=True)
            first_unsettled = unsettled[0] if unsettled else None
            settled_to = lines[-1].end
            for line in lines:
                if any(item is first_unsettled for item in line.items):
                    settled_to = line.start
                    break
                for item in line.items:
                    if not isinstance(item, SpooledEvent):
                        self.counters.rejected += 1
                        self._spool.reject(item, item.reason)
                        log.warning("unreadable spool line in %s: %s", spool_file.path, item.reason)
            spool_file.mark_replayed(settled_to)
            if unsettled:
                return "blocked"
            if time.monotonic() >= deadline and spool_file.pending():
                return "more"
        return "done"

    def _settle(self, records: Sequence[SpooledEvent], *, replaying: bool) -> list[SpooledEvent]:
        """Write or reject each record; returns the ones left over (a suffix) when the database cannot take writes."""
        if not records:
            return []
        try:
            outcomes = self._write(records)
        except Exception as failure:  # any failure means "not written": narrow it down, never drop
            if refusals.is_database_wide(failure):
                return list(records)
            if len(records) == 1:
                self._reject(records[0], describe_failure(failure))
                return []
            middle = len(records) // 2
            left = self._settle(records[:middle], replaying=replaying)
            if left:
                return left + list(records[middle:])
            return self._settle(records[middle:], replaying=replaying)
        if any(isinstance(o, errors.UsagemeterError) and refusals.is_database_wide(o) for o in outcomes):
            return list(records)  # kept whole: those written are found by id when it is tried again
        written = 0
        for record, outcome in zip(records, outcomes, strict=True):
            if isinstance(outcome, writer.Recorded):
                written += 1
            else:
                self._reject(record, describe_failure(outcome))
        if replaying:
            self.counters.replayed += written
        else:
            self.counters.written += written
        return []

    def _write(self, records: Sequence[SpooledEvent]) -> list[writer.Recorded | errors.UsagemeterError]:
        items = [(record.identity, record.pending) for record in records]
        return retry.with_connection(self._pool, self._policy, lambda conn: writer.write_groups(conn, items))

    def _reject(self, record: SpooledEvent, reason: str) -> None:
        self.counters.rejected += 1
        self._spool.reject(record, reason)
        log.warning("enqueued event %s refused: %s", record.pending.id, reason)
