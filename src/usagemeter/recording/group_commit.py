"""Group commit: one writer thread commits the events of many concurrent record() calls together.

A caller's record() returns only after the transaction holding its event has committed, so it
is as durable as a commit of its own, at a fraction of the cost: while one commit is in flight,
the next callers' events queue up and share the next one. Events of different identities share
the transaction too, each group under its own role and claims; an event the database refuses
fails alone, the others still commit.

The hand-off is deliberately lean (a deque, one condition, a pre-acquired lock per caller):
with dozens of threads, Python's own synchronisation would otherwise cost more than the database.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from psycopg_pool import ConnectionPool

from usagemeter import errors
from usagemeter.db import Identity, retry
from usagemeter.recording import writer

Outcome = writer.Recorded | BaseException


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
        self._outcome = outcome
        self._done.release()
        if self.on_settled is not None:
            self.on_settled(outcome)

    def wait(self) -> writer.Recorded:
        self._done.acquire()
        outcome = self._outcome
        if isinstance(outcome, BaseException):
            raise outcome
        assert outcome is not None
        return outcome


class GroupCommitter:
    """Tickets in, batched commits out; `max_batch` caps one transaction, `max_queue` bounds memory."""

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
        self._queue: deque[Ticket] = deque()
        self._lock = threading.Lock()
        self._has_work = threading.Condition(self._lock)
        self._has_room = threading.Condition(self._lock)
        self._writer_waiting = False
        self._closed = False
        self.commits = 0
        self._thread = threading.Thread(target=self._run, name="usagemeter-group-commit", daemon=True)
        self._thread.start()

    def submit(self, ticket: Ticket) -> Ticket:
        """Queue an event; ticket.wait() returns its Recorded once committed, or raises why it was refused."""
        with self._lock:
            if self._closed:
                raise errors.RecorderClosed("the recorder is closed")
            while len(self._queue) >= self._max_queue:
                self._has_room.wait()
            self._queue.append(ticket)
            if self._writer_waiting:
                self._has_work.notify()
        return ticket

    def close(self) -> None:
        """Commit what is queued, then stop the writer."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._has_work.notify()
        self._thread.join()

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._queue and not self._closed:
                    self._writer_waiting = True
                    self._has_work.wait()
                    self._writer_waiting = False
                if not self._queue:
                    return  # closed and drained
                batch = [self._queue.popleft() for _ in range(min(len(self._queue), self._max_batch))]
                self._has_room.notify_all()
            self._commit(batch)

    def _commit(self, batch: list[Ticket]) -> None:
        items = [(ticket.identity, ticket.pending) for ticket in batch]
        try:
            outcomes = retry.with_connection(self._pool, self._policy, lambda conn: writer.write_groups(conn, items))
        except Exception as failure:  # DatabaseUnavailable, or a bug: it must reach the callers, not kill the writer
            for ticket in batch:
                ticket.settle(failure)
            return
        self.commits += 1
        for ticket, outcome in zip(batch, outcomes, strict=True):
            ticket.settle(outcome)
