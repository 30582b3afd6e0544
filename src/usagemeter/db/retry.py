"""When a write meets a dropped connection or a restarting server: how often and how long to try again.

Retrying is safe because every event's id is fixed before the first attempt (see writer.py). Only
transient failures are retried (refusals.is_transient); a refusal is not, and leaves at once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg
import tenacity
from psycopg_pool import ConnectionPool

from usagemeter.db import refusals

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """Attempts with jittered exponential backoff; the defaults ride out a server restart of a few seconds."""

    attempts: int = 8
    first_delay_s: float = 0.05
    max_delay_s: float = 2.0
    connect_timeout_s: float = 5.0

    def worst_case_s(self) -> float:
        """An upper bound of the time spent waiting for connections and between attempts."""
        delays = sum(min(self.first_delay_s * 2.0**n, self.max_delay_s) for n in range(self.attempts - 1))
        return self.attempts * self.connect_timeout_s + delays + self.first_delay_s * self.attempts


def with_connection(pool: ConnectionPool[Any], policy: RetryPolicy, work: Callable[[psycopg.Connection[Any]], T]) -> T:
    """Run `work` on a pooled connection, again on a fresh one after a transient failure.

    Raises DatabaseUnavailable (DatabaseReadOnly for a read-only database) once the attempts are
    spent; any other failure of `work` is raised at once, a raw psycopg error as a project error.
    """
    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_attempt(policy.attempts),
        wait=tenacity.wait_exponential(multiplier=policy.first_delay_s, max=policy.max_delay_s)
        + tenacity.wait_random(0, policy.first_delay_s),  # jitter: callers that failed together retry apart
        retry=tenacity.retry_if_exception(refusals.is_transient),
        reraise=True,
    )
    try:
        for attempt in retrying:
            with attempt, pool.connection(timeout=policy.connect_timeout_s) as conn:
                return work(conn)
    except psycopg.Error as failure:
        if refusals.is_transient(failure):
            raise refusals.unavailable(failure, attempts=policy.attempts) from failure
        raise refusals.refusal(failure, index=0) from failure
    raise AssertionError("tenacity ends with a result or an exception")  # pragma: no cover
