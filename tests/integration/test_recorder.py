"""The Recorder against a real database: identities, idempotency, batches, group commit, bad input."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests import factories
from usagemeter import errors
from usagemeter.recording.recorder import AsyncRecorder, EnqueueOptions, Recorder


@pytest.fixture
def recorder(app_database_url: str) -> Iterator[Recorder]:
    with Recorder(app_database_url) as rec:
        yield rec


@pytest.fixture
def world(owner: psycopg.Connection[Any]) -> dict[str, uuid.UUID]:
    tenant, foreign = factories.add_tenant(owner), factories.add_tenant(owner)
    alice, bob = factories.add_user(owner), factories.add_user(owner)
    factories.add_member(owner, tenant, alice)
    factories.add_member(owner, foreign, bob)
    return {"tenant": tenant, "foreign": foreign, "alice": alice, "bob": bob}


def test_service_records_into_a_tenant_and_fills_module(
    recorder: Recorder, owner: psycopg.Connection[Any], world: dict[str, uuid.UUID]
) -> None:
    recorded = recorder.record(
        action="agency:scope:generate", user_id=world["alice"], tenant_id=world["tenant"], tokens_input=7
    )
    assert recorded.duplicate is False
    row = owner.execute(
        "select id, created_at, module_id, tokens_total from public.usage_events where id = %s", (recorded.id,)
    ).fetchone()
    assert row == (recorded.id, recorded.created_at, "agency", 7)


def test_a_user_records_only_as_themselves(
    recorder: Recorder, owner: psycopg.Connection[Any], world: dict[str, uuid.UUID]
) -> None:
    alice = recorder.as_user({"sub": str(world["alice"]), "role": "authenticated"})
    alice.record(action="chat:message:send", user_id=None, tenant_id=world["tenant"])
    alice.record(action="chat:message:send", user_id=None)  # personal, user filled from the claims
    with pytest.raises(errors.EventRejected, match="row-level security"):
        alice.record(action="chat:message:send", user_id=None, tenant_id=world["foreign"])
    with pytest.raises(errors.EventRejected, match="row-level security"):
        alice.record(action="chat:message:send", user_id=world["bob"], tenant_id=world["tenant"])
    with pytest.raises(errors.InvalidEvent, match="created_at may only be set by the service role"):
        alice.record_many([{"action": "a:b:c", "created_at": "2020-01-01T00:00:00Z"}])
    rows = owner.execute("select tenant_id, user_id from public.usage_events order by tenant_id nulls first").fetchall()
    assert rows == [(None, world["alice"]), (world["tenant"], world["alice"])]


def test_idempotent_retry_returns_the_original_and_a_changed_payload_conflicts(
    app_database_url: str, recorder: Recorder, owner: psycopg.Connection[Any], world: dict[str, uuid.UUID]
) -> None:
    event: dict[str, Any] = {
        "action": "agency:proposal:generate",
        "user_id": world["alice"],
        "tenant_id": world["tenant"],
        "tokens_input": 10,
        "metadata": {"model": "m", "cost": 0.25},
        "idempotency_key": "req-1",
    }
    first = recorder.record(**event)
    again = recorder.record(**event)
    assert (again.id, again.created_at, again.duplicate) == (first.id, first.created_at, True)
    with Recorder(app_database_url) as restarted:  # keys live in the database: a new process sees them
        assert restarted.record(**event).id == first.id
    with pytest.raises(errors.IdempotencyConflict, match="req-1") as raised:
        recorder.record(**{**event, "tokens_input": 11})
    assert raised.value.existing_id == first.id
    assert factories.count_events(owner) == 1


def test_racing_callers_with_one_key_store_exactly_one_row(
    app_database_url: str, owner: psycopg.Connection[Any], world: dict[str, uuid.UUID]
) -> None:
    recorders = [Recorder(app_database_url, pool_size=1) for _ in range(6)]
    barrier = threading.Barrier(len(recorders))
    results: list[Any] = []

    def race(rec: Recorder) -> None:
        barrier.wait()
        results.append(rec.record(action="a:b:c", user_id=world["alice"], idempotency_key="same"))

    try:
        threads = [threading.Thread(target=race, args=(rec,)) for rec in recorders]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    finally:
        for rec in recorders:
            rec.close()
    assert len(results) == len(recorders)
    assert len({r.id for r in results}) == 1
    assert sorted(r.duplicate for r in results) == [False] + [True] * (len(recorders) - 1)
    assert factories.count_events(owner) == 1


def test_record_many_returns_results_in_order_and_dedups_within_the_batch(
    recorder: Recorder, owner: psycopg.Connection[Any], world: dict[str, uuid.UUID]
) -> None:
    events = [
        {"action": "a:b:c", "user_id": world["alice"], "tokens_input": i, "idempotency_key": f"k{i % 3}"}
        for i in range(3)
    ] + [{"action": "a:b:c", "user_id": world["alice"], "tokens_input": 0, "idempotency_key": "k0"}]
    results = recorder.record_many(events)
    assert [r.duplicate for r in results] == [False, False, False, True]
    assert results[3].id == results[0].id
    stored = owner.execute("select id, tokens_input from public.usage_events order by tokens_input").fetchall()
    assert stored == [(results[i].id, i) for i in range(3)]


def test_record_many_is_atomic_and_names_the_bad_index(
    recorder: Recorder, owner: psycopg.Connection[Any], world: dict[str, uuid.UUID]
) -> None:
    good = {"action": "a:b:c", "user_id": world["alice"], "tenant_id": world["tenant"]}
    with pytest.raises(errors.InvalidEvent, match=r"event 2: tokens_input") as invalid:
        recorder.record_many([good, good, {**good, "tokens_input": -5}])
    assert invalid.value.index == 2
    assert invalid.value.field == "tokens_input"
    alice = recorder.as_user(world["alice"])
    with pytest.raises(errors.EventRejected, match="event 1: not allowed by row-level security") as refused:
        alice.record_many([good, {**good, "tenant_id": world["foreign"]}, good])
    assert refused.value.index == 1
    with pytest.raises(errors.EventRejected, match="event 1: unknown tenant_id"):
        recorder.record_many([good, {**good, "tenant_id": uuid.uuid4()}])
    assert factories.count_events(owner) == 0


def test_concurrent_record_calls_share_commits(
    recorder: Recorder, owner: psycopg.Connection[Any], world: dict[str, uuid.UUID]
) -> None:
    threads_n, per_thread = 32, 20
    alice = recorder.as_user(world["alice"])

    def work() -> None:
        for _ in range(per_thread):
            alice.record(action="chat:message:send", user_id=None, tenant_id=world["tenant"])

    threads = [threading.Thread(target=work) for _ in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert factories.count_events(owner) == threads_n * per_thread
    assert recorder._engine.committer.commits < threads_n * per_thread / 2


def test_a_killed_connection_during_record_many_stores_the_batch_once(
    recorder: Recorder, owner: psycopg.Connection[Any], world: dict[str, uuid.UUID]
) -> None:
    size = 60_000
    events = [{"action": "a:b:c", "user_id": world["alice"], "tenant_id": world["tenant"]} for _ in range(size)]
    killed: list[int] = []

    def kill_the_insert() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not killed:
            rows = owner.execute(
                "select pg_terminate_backend(pid) from pg_stat_activity where pid <> pg_backend_pid()"
                " and state = 'active' and query like '%%insert into public.usage_events%%'"
            ).fetchall()
            killed.extend(1 for (done,) in rows if done)
            time.sleep(0.005)

    killer = threading.Thread(target=kill_the_insert)
    killer.start()
    try:
        results = recorder.record_many(events)
    except errors.DatabaseUnavailable:
        results = []
    killer.join()
    assert killed, "the insert was never caught in flight: the test proved nothing"
    count = factories.count_events(owner)
    assert count in (0, size)
    if results:
        assert count == size
        assert len({r.id for r in results}) == size


BAD_INPUT = [
    ({"action": "agency:scope"}, "action"),
    ({"action": "agency:scope:generate\x00"}, "action"),
    ({"tokens_input": "12"}, "tokens_input"),
    ({"tokens_input": 1.5}, "tokens_input"),
    ({"tokens_output": -1}, "tokens_output"),
    ({"tokens_input": 2**31}, "tokens_input"),
    ({"tokens_input": 2**30, "tokens_output": 2**30}, None),
    ({"metadata": ["not", "an", "object"]}, "metadata"),
    ({"metadata": {"blob": "x" * 1_000_000}}, "metadata"),
    ({"metadata": {"nul": "a\x00b"}}, "metadata"),
    ({"metadata": {"nan": float("nan")}}, "metadata"),
    ({"module_id": "billing"}, None),
    ({"idempotency_key": ""}, "idempotency_key"),
    ({"user_id": "not-a-uuid"}, "user_id"),
    ({"unknown_field": 1}, "unknown_field"),
]


@pytest.mark.parametrize(("change", "field"), BAD_INPUT, ids=[str(i) for i in range(len(BAD_INPUT))])
def test_bad_input_is_refused_naming_the_field_and_nothing_is_written(
    recorder: Recorder, owner: psycopg.Connection[Any], world: dict[str, uuid.UUID], change: dict[str, Any], field: str
) -> None:
    event = {"action": "agency:scope:generate", "user_id": world["alice"], **change}
    with pytest.raises(errors.InvalidEvent) as raised:
        recorder.record_many([event])
    assert raised.value.field == field
    if field:
        assert f"event 0: {field}" in str(raised.value)
    assert factories.count_events(owner) == 0


def test_async_face_records_batches_and_enqueues(
    app_database_url: str, owner: psycopg.Connection[Any], world: dict[str, uuid.UUID], tmp_path: Path
) -> None:
    async def scenario() -> None:
        async with AsyncRecorder(app_database_url, enqueue_options=EnqueueOptions(spool_dir=tmp_path)) as rec:
            alice = rec.as_user(world["alice"])
            results = await asyncio.gather(
                *(alice.record(action="chat:message:send", user_id=None, tenant_id=world["tenant"]) for _ in range(50))
            )
            assert len({r.id for r in results}) == 50
            many = await alice.record_many([{"action": "a:b:c"}] * 5)
            assert len(many) == 5
            with pytest.raises(errors.EventRejected):
                await alice.record(action="a:b:c", user_id=None, tenant_id=world["foreign"])
            alice.enqueue(action="a:b:c", user_id=None)
            assert await rec.flush(timeout=30)
            assert rec.counters.written == 1

    asyncio.run(scenario())
    assert factories.count_events(owner) == 56


def test_async_callers_cancelled_midway_leave_the_others_and_their_events_whole(
    app_database_url: str, owner: psycopg.Connection[Any], world: dict[str, uuid.UUID]
) -> None:
    """Many awaiting callers share commits; cancelling some neither fails the rest nor loses a committed event."""

    async def scenario() -> list[Any]:
        async with AsyncRecorder(app_database_url) as rec:
            alice = rec.as_user(world["alice"])
            tasks = [
                asyncio.create_task(
                    alice.record(action="chat:message:send", user_id=None, tenant_id=world["tenant"], tokens_input=n)
                )
                for n in range(600)
            ]
            await asyncio.sleep(0)
            for task in tasks[::7]:
                task.cancel()
            return await asyncio.gather(*tasks, return_exceptions=True)

    outcomes = asyncio.run(scenario())
    recorded = [o for o in outcomes if not isinstance(o, BaseException)]
    cancelled = [o for o in outcomes if isinstance(o, asyncio.CancelledError)]
    assert len(recorded) + len(cancelled) == 600
    assert len(recorded) >= 600 - len(range(0, 600, 7))
    stored = {row[0] for row in owner.execute("select id from public.usage_events").fetchall()}
    assert {r.id for r in recorded} <= stored  # every answered event is stored
    assert len(stored) <= 600  # a cancelled caller's event may be stored too, never twice
