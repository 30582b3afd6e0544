"""Database refusals on the synchronous write paths: each belongs to the event that caused it.

A trigger installed per test refuses chosen events the way a budget will (`raise exception`,
SQLSTATE P0001); other tests turn the database read-only, count attempts, or close an event loop
mid-commit. Every test runs against a real PostgreSQL.
"""

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
from psycopg import pq
from psycopg import sql as pgsql
from psycopg.types.json import Jsonb

from tests import factories
from usagemeter import errors
from usagemeter.db import Identity, refusals, retry
from usagemeter.recording import group_commit, writer
from usagemeter.recording.event import UsageEvent
from usagemeter.recording.recorder import AsyncRecorder, Recorder

REFUSING_TRIGGER = """
create function public.test_refuse_marked() returns trigger language plpgsql security definer as $$
begin
  if new.metadata->>'slow' = 'yes' then perform pg_sleep(0.5); end if;
  if new.metadata->>'refuse' = 'yes' then
    raise exception 'budget exceeded' using errcode = 'P0001', hint = 'raise the budget';
  end if;
  if new.metadata->>'refuse' = 'once' and nextval('public.test_once') = 1 then
    raise exception 'could not serialize access' using errcode = '40001';
  end if;
  if new.metadata->>'refuse' = 'custom' then
    raise exception 'monthly budget of tenant exceeded' using errcode = 'UB001';
  end if;
  if new.metadata->>'refuse' = 'limit' then
    perform nextval('public.test_attempts');
    raise exception 'too big to store' using errcode = '54000';
  end if;
  return new;
end $$;
create sequence public.test_attempts;
create sequence public.test_once;
create trigger test_refuse_marked before insert on public.usage_events
  for each row execute function public.test_refuse_marked();
create function public.test_refuse_at_commit() returns trigger language plpgsql as $$
begin
  if new.metadata->>'refuse' = 'at-commit' then raise exception 'refused at commit'; end if;
  return null;
end $$;
create constraint trigger test_refuse_at_commit after insert on public.usage_events
  deferrable initially deferred for each row execute function public.test_refuse_at_commit();
"""

FAST = retry.RetryPolicy(attempts=3, first_delay_s=0.01, max_delay_s=0.05, connect_timeout_s=2.0)


@pytest.fixture
def refusing(owner: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    owner.execute(REFUSING_TRIGGER)
    return owner


@pytest.fixture
def tenant(refusing: psycopg.Connection[Any]) -> uuid.UUID:
    return factories.add_tenant(refusing)


@pytest.fixture
def recorder(app_database_url: str, refusing: psycopg.Connection[Any]) -> Iterator[Recorder]:
    with Recorder(app_database_url, retry_policy=FAST) as rec:
        yield rec


def _event(tenant: uuid.UUID, **metadata: Any) -> dict[str, Any]:
    return {"action": "agency:scope:generate", "tenant_id": tenant, "tokens_input": 3, "metadata": metadata}


def _count(owner: psycopg.Connection[Any], **metadata: Any) -> int:
    row = owner.execute(
        "select count(*) from public.usage_events where metadata @> %s::jsonb", (Jsonb(metadata),)
    ).fetchone()
    assert row is not None
    return int(row[0])


def test_record_names_the_refusal_of_a_trigger(recorder: Recorder, tenant: uuid.UUID) -> None:
    with pytest.raises(errors.WriteRefused, match="budget exceeded") as caught:
        recorder.record(action="agency:scope:generate", user_id=None, tenant_id=tenant, metadata={"refuse": "yes"})
    assert caught.value.sqlstate == "P0001"
    assert caught.value.hint == "raise the budget"
    assert isinstance(caught.value, errors.EventRejected)
    assert recorder.record(action="agency:scope:generate", user_id=None, tenant_id=tenant).duplicate is False


def test_record_many_raises_a_project_error_with_the_index(
    recorder: Recorder, refusing: psycopg.Connection[Any], tenant: uuid.UUID
) -> None:
    batch = [_event(tenant, n=n) for n in range(250)]
    batch[137] = _event(tenant, refuse="yes")
    with pytest.raises(errors.WriteRefused, match="event 137: budget exceeded") as caught:
        recorder.record_many(batch)
    assert caught.value.index == 137
    assert not isinstance(caught.value, psycopg.Error)
    assert factories.count_events(refusing) == 0  # atomic: nothing of the batch


def test_group_commit_fails_only_the_offender_among_concurrent_callers(
    recorder: Recorder, refusing: psycopg.Connection[Any], tenant: uuid.UUID
) -> None:
    outcomes: dict[int, object] = {}
    start = threading.Barrier(30)

    def call(n: int) -> None:
        start.wait()
        try:
            outcomes[n] = recorder.record(
                action="agency:scope:generate",
                user_id=None,
                tenant_id=tenant,
                metadata={"n": n, "refuse": "yes" if n == 13 else "no"},
            )
        except Exception as failure:
            outcomes[n] = failure

    for _ in range(3):  # three rounds, so the offender shares commits with others
        threads = [threading.Thread(target=call, args=(n,)) for n in range(30)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert isinstance(outcomes.pop(13), errors.WriteRefused)
        assert all(isinstance(o, writer.Recorded) for o in outcomes.values()), outcomes
        outcomes.clear()
    assert _count(refusing, refuse="no") == 29 * 3


def test_async_group_commit_fails_only_the_offender(
    app_database_url: str, refusing: psycopg.Connection[Any], tenant: uuid.UUID
) -> None:
    async def scenario() -> list[object]:
        async with AsyncRecorder(app_database_url, retry_policy=FAST) as rec:
            return await asyncio.gather(
                *(
                    rec.record(
                        action="agency:scope:generate",
                        user_id=None,
                        tenant_id=tenant,
                        metadata={"n": n, "refuse": "yes" if n == 7 else "no"},
                    )
                    for n in range(40)
                ),
                return_exceptions=True,
            )

    results = asyncio.run(scenario())
    assert isinstance(results.pop(7), errors.WriteRefused)
    assert all(isinstance(r, writer.Recorded) for r in results), results
    assert _count(refusing, refuse="no") == 39


def test_write_groups_isolates_one_bad_event_among_100(
    app_database_url: str, refusing: psycopg.Connection[Any], tenant: uuid.UUID
) -> None:
    alice = factories.add_user(refusing)
    factories.add_member(refusing, tenant, alice)
    service, user = Identity.service(), Identity.user(alice)
    items = []
    for n in range(100):
        metadata = {"n": n, "refuse": "yes" if n == 42 else "no"}
        identity = service if n % 2 else user
        fields = {"action": "a:b:c", "tenant_id": tenant, "user_id": alice, "metadata": metadata}
        items.append((identity, writer.Pending.of(UsageEvent.model_validate(fields))))
    with psycopg.connect(app_database_url, autocommit=True) as conn:
        outcomes = writer.write_groups(conn, items)
    assert len(outcomes) == 100
    assert isinstance(outcomes[42], errors.WriteRefused)
    others = [o for n, o in enumerate(outcomes) if n != 42]
    assert all(isinstance(o, writer.Recorded) for o in others), others
    expected_ids = [p.id for n, (_, p) in enumerate(items) if n != 42]
    assert [o.id for o in others if isinstance(o, writer.Recorded)] == expected_ids
    assert _count(refusing, refuse="no") == 99


def test_record_each_keeps_the_good_events_and_indexes_the_bad(
    recorder: Recorder, refusing: psycopg.Connection[Any], tenant: uuid.UUID
) -> None:
    outcomes = recorder.record_each([_event(tenant, n=0), _event(tenant, refuse="yes"), _event(tenant, n=2)])
    assert isinstance(outcomes[1], errors.WriteRefused)
    assert str(outcomes[1]) == "event 0: budget exceeded"  # each outcome is about its event written alone
    assert isinstance(outcomes[0], writer.Recorded)
    assert isinstance(outcomes[2], writer.Recorded)
    assert factories.count_events(refusing) == 2


def test_a_non_transient_error_is_not_retried(
    recorder: Recorder, refusing: psycopg.Connection[Any], tenant: uuid.UUID
) -> None:
    started = time.monotonic()
    with pytest.raises(errors.EventRejected, match="too big to store") as caught:
        recorder.record_many([_event(tenant, n=0), _event(tenant, refuse="limit")])
    assert caught.value.index == 1
    assert caught.value.sqlstate == "54000"
    with pytest.raises(errors.EventRejected, match="too big to store"):
        recorder.record(action="agency:scope:generate", user_id=None, tenant_id=tenant, metadata={"refuse": "limit"})
    row = refusing.execute("select last_value from public.test_attempts").fetchone()
    assert row is not None
    assert row[0] <= 6  # each path tries the offender at most a few times to find it, never once per retry
    assert time.monotonic() - started < 5


def test_a_read_only_database_is_an_error_naming_the_cause(
    app_database_url: str, owner: psycopg.Connection[Any]
) -> None:
    tenant = factories.add_tenant(owner)
    name = owner.info.dbname
    owner.execute(pgsql.SQL("alter database {} set default_transaction_read_only = on").format(pgsql.Identifier(name)))
    with Recorder(app_database_url, retry_policy=FAST) as rec:
        with pytest.raises(errors.DatabaseReadOnly, match="read-only"):
            rec.record(action="agency:scope:generate", user_id=None, tenant_id=tenant)
        with pytest.raises(errors.DatabaseReadOnly, match="read-only"):
            rec.record_many([_event(tenant, n=1)])
        with pytest.raises(errors.DatabaseReadOnly, match="read-only"):
            rec.record_each([_event(tenant, n=1)])
    owner.execute(pgsql.SQL("alter database {} reset default_transaction_read_only").format(pgsql.Identifier(name)))
    with Recorder(app_database_url, retry_policy=FAST) as rec:
        assert rec.record(action="agency:scope:generate", user_id=None, tenant_id=tenant).duplicate is False


def test_uuid_objects_in_claims_are_sent_as_strings(
    recorder: Recorder, refusing: psycopg.Connection[Any], tenant: uuid.UUID
) -> None:
    alice = factories.add_user(refusing)
    factories.add_member(refusing, tenant, alice)
    me = recorder.as_user({"sub": alice, "role": "authenticated", "session_id": uuid.uuid4()})
    assert me.identity.claims["sub"] == str(alice)
    recorded = me.record(action="agency:scope:generate", user_id=None, tenant_id=tenant)
    assert me.record_many([{"action": "agency:scope:generate", "tenant_id": tenant}])[0].duplicate is False
    row = refusing.execute("select user_id from public.usage_events where id = %s", (recorded.id,)).fetchone()
    assert row == (alice,)


def test_claims_the_database_cannot_take_are_refused_at_as_user(recorder: Recorder) -> None:
    user = str(uuid.uuid4())
    with pytest.raises(ValueError, match=r"claims.*email.*surrogate"):
        recorder.as_user({"sub": user, "email": "a\udc80@example.com"})
    with pytest.raises(ValueError, match=r"claims.*nick.*NUL"):
        recorder.as_user({"sub": user, "nick": "a\x00b"})
    with pytest.raises(ValueError, match=r"claims.*when.*object"):
        recorder.as_user({"sub": user, "when": object()})


@pytest.mark.parametrize("key", ["req-\udc80", "req-\x00"])
def test_strings_the_database_cannot_take_are_refused_at_validation(
    recorder: Recorder, refusing: psycopg.Connection[Any], tenant: uuid.UUID, key: str
) -> None:
    with pytest.raises(errors.InvalidEvent, match="idempotency_key") as caught:
        recorder.record(action="agency:scope:generate", user_id=None, tenant_id=tenant, idempotency_key=key)
    assert caught.value.field == "idempotency_key"
    with pytest.raises(errors.InvalidEvent, match="event 1: idempotency_key"):
        recorder.record_many([_event(tenant, n=0), {**_event(tenant), "idempotency_key": key}])
    assert factories.count_events(refusing) == 0


def test_an_idempotent_retry_with_a_large_float_is_a_duplicate(recorder: Recorder, tenant: uuid.UUID) -> None:
    fields: dict[str, Any] = {"action": "agency:scope:generate", "user_id": None, "tenant_id": tenant}
    first = recorder.record(**fields, metadata={"cost": 1e23, "tiny": 5e-324}, idempotency_key="big-1")
    again = recorder.record(**fields, metadata={"cost": 1e23, "tiny": 5e-324}, idempotency_key="big-1")
    assert again.duplicate is True
    assert again.id == first.id
    many = recorder.record_many([{**fields, "metadata": {"cost": 1e23, "tiny": 5e-324}, "idempotency_key": "big-1"}])
    assert many[0].id == first.id
    assert many[0].duplicate is True
    with pytest.raises(errors.IdempotencyConflict):
        recorder.record(**fields, metadata={"cost": 1e22}, idempotency_key="big-1")


def test_a_closed_event_loop_does_not_stop_later_records(
    app_database_url: str, refusing: psycopg.Connection[Any], tenant: uuid.UUID
) -> None:
    rec = AsyncRecorder(app_database_url, retry_policy=FAST)

    async def abandon() -> None:
        task = asyncio.ensure_future(
            rec.record(action="agency:scope:generate", user_id=None, tenant_id=tenant, metadata={"slow": "yes"})
        )
        await asyncio.sleep(0.05)
        assert not task.done()  # asyncio.run now cancels it and closes the loop before the commit

    asyncio.run(abandon())
    time.sleep(0.8)  # the commit settles the abandoned ticket into the closed loop
    result: list[object] = []
    later = threading.Thread(
        target=lambda: result.append(
            rec._sync.record(action="agency:scope:generate", user_id=None, tenant_id=tenant, metadata={"n": 1})
        )
    )
    later.start()
    later.join(timeout=10)
    assert result
    assert isinstance(result[0], writer.Recorded)
    assert (
        asyncio.run(
            rec.record(action="agency:scope:generate", user_id=None, tenant_id=tenant, metadata={"n": 2})
        ).duplicate
        is False
    )
    assert _count(refusing, slow="yes") == 1  # the abandoned event was committed, not lost
    asyncio.run(rec.close())


def test_a_transient_failure_is_retried_and_stored_once(
    recorder: Recorder, refusing: psycopg.Connection[Any], tenant: uuid.UUID
) -> None:
    recorded = recorder.record(
        action="agency:scope:generate", user_id=None, tenant_id=tenant, metadata={"refuse": "once"}
    )
    assert recorded.duplicate is False
    assert _count(refusing, refuse="once") == 1
    row = refusing.execute("select last_value from public.test_once").fetchone()
    assert row is not None
    assert row[0] >= 2  # the first attempt met a serialization failure


def test_a_refusal_at_commit_fails_only_its_event(
    app_database_url: str, refusing: psycopg.Connection[Any], tenant: uuid.UUID
) -> None:
    service = Identity.service()
    items = [
        (
            service,
            writer.Pending.of(UsageEvent.model_validate(_event(tenant, n=n, refuse="at-commit" if n == 3 else "no"))),
        )
        for n in range(10)
    ]
    with psycopg.connect(app_database_url, autocommit=True) as conn:
        outcomes = writer.write_groups(conn, items)
        assert conn.info.transaction_status == pq.TransactionStatus.IDLE
    assert isinstance(outcomes.pop(3), errors.WriteRefused)
    assert all(isinstance(o, writer.Recorded) for o in outcomes), outcomes
    assert _count(refusing, refuse="no") == 9
    assert _count(refusing, refuse="at-commit") == 0


def test_the_fast_path_is_one_round_trip_and_a_refusal_in_it_is_rolled_back(
    app_database_url: str, refusing: psycopg.Connection[Any], tenant: uuid.UUID, tmp_path: Path
) -> None:
    alice = factories.add_user(refusing)
    factories.add_member(refusing, tenant, alice)
    service, user = Identity.service(), Identity.user(alice)
    events = [UsageEvent.model_validate({**_event(tenant, n=n, refuse="no"), "user_id": alice}) for n in range(4)]
    trace = tmp_path / "libpq.trace"
    with psycopg.connect(app_database_url, autocommit=True) as conn, trace.open("w") as out:
        conn.pgconn.trace(out.fileno())
        conn.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS)
        groups = [(service, [[writer.Pending.of(e) for e in events[:2]]]), (user, [[writer.Pending.of(events[2])]])]
        assert len(writer.write_fast(conn, groups)) == 3
        conn.pgconn.untrace()
        refused = UsageEvent.model_validate(_event(tenant, n=9, refuse="yes"))
        with pytest.raises(psycopg.errors.RaiseException):
            writer.write_fast(conn, [(service, [[writer.Pending.of(events[3]), writer.Pending.of(refused)]])])
        assert conn.info.transaction_status == pq.TransactionStatus.IDLE  # rolled back, ready for the careful path
    syncs = [line for line in trace.read_text().splitlines() if line.startswith("F") and "\tSync" in line]
    assert len(syncs) == 1, syncs  # BEGIN, both identities, the inserts and COMMIT: one round trip
    assert _count(refusing, refuse="no") == 3


def test_an_unknown_sqlstate_fails_its_event_alone_and_can_get_its_own_error(
    recorder: Recorder, refusing: psycopg.Connection[Any], tenant: uuid.UUID, monkeypatch: pytest.MonkeyPatch
) -> None:
    outcomes = recorder.record_each([_event(tenant, n=0), _event(tenant, refuse="custom")])
    assert isinstance(outcomes[0], writer.Recorded)
    assert isinstance(outcomes[1], errors.EventRejected)
    assert outcomes[1].sqlstate == "UB001"
    assert "monthly budget" in str(outcomes[1])

    class BudgetExceeded(errors.EventRejected):
        pass

    monkeypatch.setattr(refusals, "_REFUSERS", dict(refusals._REFUSERS))
    refusals.register("UB", lambda failure, index: BudgetExceeded(str(failure.diag.message_primary), index=index))
    with pytest.raises(BudgetExceeded, match="monthly budget"):
        recorder.record(action="agency:scope:generate", user_id=None, tenant_id=tenant, metadata={"refuse": "custom"})


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the death is the point
def test_a_writer_thread_that_died_is_replaced(recorder: Recorder, tenant: uuid.UUID) -> None:
    committer = recorder._engine.committer

    def leave(outcome: object) -> None:
        raise SystemExit  # not an Exception: it ends the writer thread

    event = UsageEvent.model_validate(_event(tenant, n=0))
    ticket = committer.submit(group_commit.Ticket(Identity.service(), writer.Pending.of(event), leave))
    assert isinstance(ticket.wait(30), writer.Recorded)  # settled before its callback ended the thread
    deadline = time.monotonic() + 10
    while all(thread.is_alive() for thread in committer._threads) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not all(thread.is_alive() for thread in committer._threads)
    assert recorder.record(action="agency:scope:generate", user_id=None, tenant_id=tenant).duplicate is False
    assert all(thread.is_alive() for thread in committer._threads)


def test_record_racing_close_is_either_stored_or_told_closed(
    app_database_url: str, refusing: psycopg.Connection[Any], tenant: uuid.UUID
) -> None:
    rec = Recorder(app_database_url, retry_policy=FAST)
    outcomes: list[object] = []
    start = threading.Barrier(21)

    def call(n: int) -> None:
        start.wait()
        for m in range(20):
            try:
                outcomes.append(
                    rec.record(
                        action="agency:scope:generate", user_id=None, tenant_id=tenant, metadata={"n": n * 100 + m}
                    )
                )
            except errors.RecorderClosed as closed:
                outcomes.append(closed)
                return

    threads = [threading.Thread(target=call, args=(n,)) for n in range(20)]
    for thread in threads:
        thread.start()
    start.wait()
    time.sleep(0.05)
    rec.close()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in threads)  # nobody waits for an orphaned event
    stored = [o for o in outcomes if isinstance(o, writer.Recorded)]
    assert all(isinstance(o, writer.Recorded | errors.RecorderClosed) for o in outcomes), outcomes
    assert factories.count_events(refusing) == len(stored)
