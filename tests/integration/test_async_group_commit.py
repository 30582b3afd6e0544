"""AsyncRecorder.record() on one event loop: the bounded wait, and a writer that dies while callers wait.

The writers are held back by a table lock taken from the owner's connection, so callers are
queued or mid-commit exactly when the test acts.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from tests import factories
from usagemeter import errors
from usagemeter.db import Identity
from usagemeter.recording import group_commit, writer
from usagemeter.recording.event import UsageEvent
from usagemeter.recording.recorder import AsyncRecorder

HOLD_WRITES = "lock table public.usage_events in share mode"  # inserts wait until the transaction ends


@pytest.fixture
def tenant(owner: psycopg.Connection[Any]) -> uuid.UUID:
    return factories.add_tenant(owner)


@pytest.fixture
def rec(app_database_url: str) -> Iterator[AsyncRecorder]:
    recorder = AsyncRecorder(app_database_url)
    yield recorder
    asyncio.run(recorder.close())


def _committer(rec: AsyncRecorder) -> group_commit.GroupCommitter:
    return rec._sync._engine.committer


def test_a_record_without_an_outcome_in_time_raises_database_unavailable_and_the_loop_keeps_running(
    rec: AsyncRecorder, owner: psycopg.Connection[Any], tenant: uuid.UUID
) -> None:
    _committer(rec).max_wait_s = 0.5
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.05)
            ticks += 1

    async def scenario() -> float:
        ticker = asyncio.create_task(tick())
        started = time.monotonic()
        with owner.transaction():
            owner.execute(HOLD_WRITES)
            with pytest.raises(errors.DatabaseUnavailable, match="may still be committed"):
                await rec.record(action="chat:message:send", user_id=None, tenant_id=tenant)
        ticker.cancel()
        return time.monotonic() - started

    waited = asyncio.run(scenario())
    assert 0.45 <= waited < 5  # ended by the loop's watchdog, which looks each second
    assert ticks >= 5  # the wait never blocked the loop
    asyncio.run(rec.close())
    assert factories.count_events(owner) == 1  # committed once the lock went: the caller was told it may be


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the death is the point
def test_a_writer_that_dies_with_async_callers_queued_is_replaced_by_the_loops_watchdog(
    rec: AsyncRecorder, owner: psycopg.Connection[Any], tenant: uuid.UUID
) -> None:
    committer = _committer(rec)
    first_writer = committer._threads[0]

    def leave(outcome: object) -> None:
        raise SystemExit  # not an Exception: it ends the writer thread after it settled its batch

    async def scenario() -> writer.Recorded:
        with owner.transaction():
            owner.execute(HOLD_WRITES)
            event = UsageEvent.model_validate({"action": "a:b:c", "tenant_id": tenant})
            committer.submit(group_commit.Ticket(Identity.service(), writer.Pending.of(event), leave))
            await asyncio.sleep(0.3)  # the first writer took it and waits for the lock
            queued = asyncio.create_task(rec.record(action="chat:message:send", user_id=None, tenant_id=tenant))
            await asyncio.sleep(0.1)
        # The writer commits the first event, dies in its callback, and leaves `queued` to no writer
        # (one waiting event is no backlog for the second writer): the watchdog must start a new one.
        return await asyncio.wait_for(queued, timeout=10)

    started = time.monotonic()
    recorded = asyncio.run(scenario())
    assert recorded.duplicate is False
    assert time.monotonic() - started < 10
    first_writer.join(timeout=10)
    assert not first_writer.is_alive()
    assert committer._threads[0] is not first_writer
    assert factories.count_events(owner) == 2
