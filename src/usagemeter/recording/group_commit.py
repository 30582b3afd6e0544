"""Group commit: one writer thread commits the events of many concurrent record() calls together.

A caller's record() returns only after the transaction holding its event has committed, so it
is as durable as a commit of its own, at a fraction of the cost: while one commit is in flight,
the next callers' events queue up and share the next one. Events of different identities share
the transaction too, each group under its own role and claims; an event the database refuses
fails alone, the others still commit.

The hand-off is deliberately lean (a deque, one condition, a pre-acquired lock per caller):
with dozens of threads, Python's own synchronisation would otherwise cost more than the database.

A second writer steps in when callers outpace the first: once BACKLOG_FOR_HELPERS events wait
while the first writer's transaction is in the database, the second sends the next batch, so the
two overlap. Below that, one writer's larger batches commit more per round trip: with 32 threads
a second writer cost 15% (3.5x -> 3.0x the naive rate), with 256 asyncio callers it gained 10-25%.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from psycopg_pool import ConnectionPool

from usagemeter import errors
from usagemeter.db import Identity, retry
from usagemeter.recording import writer

Outcome = writer.Recorded | BaseException
log = logging.getLogger("usagemeter.group_commit")

# Time a commit may take beyond waiting for connections and between attempts (statements, the commit).
STATEMENT_ALLOWANCE_S = 60.0
WRITERS = 2  # concurrent transactions at most; each takes a connection of the pool while it commits
BACKLOG_FOR_HELPERS = 48  # events waiting before a writer other than the first takes a batch


class Ticket:
    """One caller's claim on the outcome of its event: wait() blocks until the writer settles it."""

    __slots__ = ("_done", "_outcome", "identity", "on_settled", "pending")

    def __init__(
        self, identity: Identity, pending: writer.Pending, on_settled: Callable[[Outcome], None] | None = None
    ) -> None:
        self.identity = identity
        self.pending = pending
        self.on_settled = on_settled
        self._outcome: Outcome | None = None
        self._done = threading.Lock()
        self._done.acquire()

    def settle(self, outcome: Outcome) -> None:
        """Hand the outcome to the caller, once; a failing callback (a closed event loop) is logged, never raised."""
        if self._outcome is not None:
            return
        self._outcome = outcome
        self._done.release()
        if self.on_settled is not None:
            try:
                self.on_settled(outcome)
            except Exception:  # the caller is gone (its loop closed); the writer serves the others
                log.warning("the caller of event %s left before its outcome: %r", self.pending.id, outcome)

    def wait(self, timeout: float, *, on_slow: Callable[[], None] | None = None) -> writer.Recorded:
        """The committed event, or its error; DatabaseUnavailable if no outcome came within `timeout` seconds.

        `on_slow` runs each second spent waiting (the committer checks its writer is alive).
        """
        deadline = time.monotonic() + timeout
        while not self._done.acquire(timeout=max(0.0, min(1.0, deadline - time.monotonic()))):
            if time.monotonic() >= deadline:
                raise errors.DatabaseUnavailable(
                    f"no outcome for event {self.pending.id} within {timeout:.0f} s; it may still be committed:"
                    " retry with the same idempotency key to be sure"
                )
            if on_slow is not None:
                on_slow()
        outcome = self._outcome
        if isinstance(outcome, BaseException):
            raise outcome
        assert outcome is not None
        return outcome


class GroupCommitter:
    """Tickets in, batched commits out; `max_batch` caps one transaction, `max_queue` bounds memory.

    Every wait has a bound (`max_wait_s`, from the retry policy), and a writer thread that died is
    replaced at the next submit; the writer itself settles every ticket it takes, whatever fails.
    """

    def __init__(
        self,
        pool: ConnectionPool[Any],
        *,
        policy: retry.RetryPolicy,
        max_batch: int = 1000,
        max_queue: int = 100_000,
    ) -> None:
        self._pool = pool
        self._policy = policy
        self._max_batch = max_batch
        self._max_queue = max_queue
        self.max_wait_s = policy.worst_case_s() + STATEMENT_ALLOWANCE_S
        self._queue: deque[Ticket] = deque()
        self._lock = threading.Lock()
        self._has_work = threading.Condition(self._lock)  # the first writer's: any event
        self._has_backlog = threading.Condition(self._lock)  # the other writers': a backlog
        self._has_room = threading.Condition(self._lock)
        self._first_waiting = False
        self._helpers_waiting = 0
        self._closed = False
        self.commits = 0
        self._threads = [self._start_writer(n) for n in range(max(1, min(WRITERS, pool.max_size)))]

    def _start_writer(self, number: int) -> threading.Thread:
        thread = threading.Thread(
            target=self._run, args=(number,), name=f"usagemeter-group-commit-{number}", daemon=True
        )
        thread.start()
        return thread

    def submit(self, ticket: Ticket) -> Ticket:
        """Queue an event; ticket.wait() returns its Recorded once committed, or raises why it was refused."""
        deadline = time.monotonic() + self.max_wait_s
        with self._lock:
            while not self._closed and len(self._queue) >= self._max_queue:
                if not self._has_room.wait(timeout=max(0.0, deadline - time.monotonic())):
                    raise errors.Backpressure(f"the group-commit queue stayed full for {self.max_wait_s:.0f} s")
            if self._closed:
                raise errors.RecorderClosed("the recorder is closed")
            self._replace_dead_writer()
            self._queue.append(ticket)
            if self._first_waiting:
                self._has_work.notify()
            elif self._helpers_waiting and len(self._queue) >= BACKLOG_FOR_HELPERS:
                self._has_backlog.notify()
        return ticket

    def wait(self, ticket: Ticket) -> writer.Recorded:
        """The outcome of a submitted ticket, within max_wait_s, replacing the writer should it have died."""
        return ticket.wait(self.max_wait_s, on_slow=self.ensure_writer)

    def ensure_writer(self) -> None:
        """Start a new writer if the current one died (with events queued, they would wait for nothing)."""
        with self._lock:
            self._replace_dead_writer()

    def _replace_dead_writer(self) -> None:
        for number, thread in enumerate(self._threads):
            if not thread.is_alive():
                log.error("group-commit writer %d had stopped; starting a new one", number)
                self._threads[number] = self._start_writer(number)

    def close(self) -> None:
        """Commit what is queued, then stop the writer (waiting at most max_wait_s)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._replace_dead_writer()  # so what is queued is still committed
            self._has_work.notify_all()
            self._has_backlog.notify_all()
            self._has_room.notify_all()
        deadline = time.monotonic() + self.max_wait_s
        for thread in self._threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                log.error("group-commit writer %s did not finish within %.0f s", thread.name, self.max_wait_s)

    def _take(self, number: int) -> list[Ticket] | None:
        """The next batch, waiting for one (a helper waits for a backlog); None once closed and drained."""
        with self._lock:
            if number == 0:
                while not self._queue and not self._closed:
                    self._first_waiting = True
                    self._has_work.wait()
                    self._first_waiting = False
            else:
                while len(self._queue) < BACKLOG_FOR_HELPERS and not self._closed:
                    self._helpers_waiting += 1
                    self._has_backlog.wait()
                    self._helpers_waiting -= 1
            if not self._queue:
                return None
            batch = [self._queue.popleft() for _ in range(min(len(self._queue), self._max_batch))]
            self._has_room.notify_all()
            return batch

    def _run(self, number: int) -> None:
        while (batch := self._take(number)) is not None:
            try:
                self._commit(batch)
            except BaseException as failure:  # a bug: its callers learn it, the writer goes on serving others
                log.exception("group commit failed unexpectedly")
                for ticket in batch:
                    ticket.settle(failure)
                if not isinstance(failure, Exception):
                    raise  # interpreter shutdown and the like: the next submit starts a new writer

    def _commit(self, batch: list[Ticket]) -> None:
        items = [(ticket.identity, ticket.pending) for ticket in batch]
        try:
            outcomes = retry.with_connection(self._pool, self._policy, lambda conn: writer.write_groups(conn, items))
        except Exception as failure:  # DatabaseUnavailable: it must reach the callers, not kill the writer
            for ticket in batch:
                ticket.settle(failure)
            return
        self.commits += 1
        for ticket, outcome in zip(batch, outcomes, strict=True):
            ticket.settle(outcome)
