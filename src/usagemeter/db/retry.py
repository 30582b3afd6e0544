"""When a write meets a dropped connection or a restarting server: how often and how long to try again.

Retrying is safe because every event's id is fixed before the first attempt (see writer.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg
from psycopg_pool import ConnectionPool

from usagemeter import errors

T = TypeVar("T")

# Failures of the connection or server, not of the data: worth another attempt on a new connection.
TRANSIENT = (psycopg.OperationalError, psycopg.InterfaceError)


@dataclass(frozen=True)
class RetryPolicy:
    """Attempts with exponential backoff; the defaults ride out a server restart of a few seconds."""

    attempts: int = 8
    first_delay_s: float = 0.05
    max_delay_s: float = 2.0
    connect_timeout_s: float = 5.0

    def delays(self) -> Iterator[float]:
        delay = self.first_delay_s
        for _ in range(self.attempts - 1):
            yield delay
            delay = min(delay * 2, self.max_delay_s)


def with_connection(pool: ConnectionPool[Any], policy: RetryPolicy, work: Callable[[psycopg.Connection[Any]], T]) -> T:
    """Run `work` on a pooled connection, again on a fresh one after a transient failure."""
    delays = policy.delays()
    while True:
        try:
            with pool.connection(timeout=policy.connect_timeout_s) as conn:
                return work(conn)
        except TRANSIENT as failure:
            delay = next(delays, None)
            if delay is None:
                raise errors.DatabaseUnavailable(
                    f"the database did not answer after {policy.attempts} attempts: {str(failure).strip()}"
                ) from failure
            time.sleep(delay)
