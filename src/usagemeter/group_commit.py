"""Group commit: one writer thread commits the events of many concurrent record() calls together.

A caller's future resolves only after the transaction holding its event has committed, so
record() is as durable as a commit of its own, at a fraction of the cost: while one commit is in
flight, the next callers' events queue up and share the next one. Events of different identities
share the transaction too, each group in a savepoint of its own role and claims; an event the
database refuses fails alone, the others still commit.
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from psycopg_pool import ConnectionPool

from usagemeter import errors, retry, writer
from usagemeter.db import Identity


@dataclass
class _Request:
    identity: Identity
    pending: writer.Pending
    future: Future[writer.Recorded] = field(default_factory=Future)


class GroupCommitter:
    """Queue in, batched commits out; `max_batch` caps one transaction, `max_queue` bounds memory."""

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
        self._queue: queue.Queue[_Request | None] = queue.Queue(maxsize=max_queue)
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="usagemeter-group-commit", daemon=True)
        self._thread.start()
        self.commits = 0

    def submit(self, identity: Identity, pending: writer.Pending) -> Future[writer.Recorded]:
        """Queue an event; the future holds its Recorded once committed, or the error that refused it."""
        if self._closed:
            raise errors.RecorderClosed("the recorder is closed")
        request = _Request(identity, pending)
        self._queue.put(request)
        return request.future

    def close(self) -> None:
        """Commit what is queued, then stop the writer."""
        if not self._closed:
            self._closed = True
            self._queue.put(None)
            self._thread.join()

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            stop = False
            while len(batch) < self._max_batch:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
            self._commit(batch)
            if stop:
                return

    def _commit(self, batch: list[_Request]) -> None:
        items = [(request.identity, request.pending) for request in batch]
        try:
            outcomes = retry.with_connection(self._pool, self._policy, lambda conn: writer.write_groups(conn, items))
        except Exception as failure:  # DatabaseUnavailable, or a bug: it must reach the callers, not kill the writer
            for request in batch:
                request.future.set_exception(failure)
            return
        self.commits += 1
        for request, outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, Exception):
                request.future.set_exception(outcome)
            else:
                request.future.set_result(outcome)
