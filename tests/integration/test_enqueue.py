"""enqueue(): fire-and-forget with a durable spool, driven through real failures."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests import factories
from tests.servers import migrated_own_server, server_binaries
from usagemeter import db, errors
from usagemeter.db import retry
from usagemeter.ops import embedded
from usagemeter.recording.recorder import EnqueueOptions, Recorder

FAST_FAIL = retry.RetryPolicy(attempts=1, connect_timeout_s=0.3)


def unreachable_url() -> str:
    return f"postgresql://postgres@127.0.0.1:{embedded.free_port()}/postgres?connect_timeout=1"


def spool_files(spool_dir: Path) -> list[Path]:
    """The per-process spool files under a spool directory."""
    return sorted(spool_dir.glob("*/spool.jsonl"))


def spooled_lines(spool_dir: Path) -> int:
    return sum(path.read_bytes().count(b"\n") for path in spool_files(spool_dir))


def test_enqueued_events_are_written_and_counted(
    app_database_url: str, owner: psycopg.Connection[Any], tmp_path: Path
) -> None:
    tenant = factories.add_tenant(owner)
    with Recorder(app_database_url, enqueue_options=EnqueueOptions(spool_dir=tmp_path)) as recorder:
        for i in range(2500):
            recorder.enqueue(action="chat:message:send", user_id=None, tenant_id=tenant, tokens_input=i)
        assert recorder.flush(timeout=60)
        counters = recorder.counters
    assert (counters.queued, counters.written, counters.spooled, counters.rejected) == (2500, 2500, 0, 0)
    assert owner.execute("select count(*), sum(tokens_input) from public.usage_events").fetchone() == (
        2500,
        sum(range(2500)),
    )


def test_invalid_events_are_refused_at_once(app_database_url: str, tmp_path: Path) -> None:
    with Recorder(app_database_url, enqueue_options=EnqueueOptions(spool_dir=tmp_path)) as recorder:
        with pytest.raises(errors.InvalidEvent, match="tokens_output"):
            recorder.enqueue(action="a:b:c", user_id=uuid.uuid4(), tokens_output=-1)
        assert recorder.counters.queued == 0


def test_refused_events_are_counted_and_kept_not_dropped(
    app_database_url: str, owner: psycopg.Connection[Any], tmp_path: Path
) -> None:
    tenant, alice = factories.add_tenant(owner), factories.add_user(owner)
    with Recorder(app_database_url, enqueue_options=EnqueueOptions(spool_dir=tmp_path)) as recorder:
        me = recorder.as_user(alice)
        me.enqueue(action="a:b:c", user_id=None)
        me.enqueue(action="a:b:c", user_id=None, tenant_id=tenant)  # not a member: refused by RLS
        assert recorder.flush(timeout=30)
        assert (recorder.counters.written, recorder.counters.rejected) == (1, 1)
    (kept,) = [json.loads(line) for line in (tmp_path / "rejected.jsonl").read_text().splitlines()]
    assert "row-level security" in kept["reason"]
    assert kept["record"]["event"]["tenant_id"] == str(tenant)
    assert factories.count_events(owner) == 1


def test_full_buffer_and_spool_raise_backpressure_instead_of_dropping(tmp_path: Path) -> None:
    options = EnqueueOptions(
        spool_dir=tmp_path, max_buffer=50, max_spool_bytes=600, on_full="raise", write_policy=FAST_FAIL
    )
    with Recorder(unreachable_url(), enqueue_options=options) as recorder:
        recorder.enqueue(action="a:b:c", user_id=uuid.uuid4())
        accepted = 1
        deadline = time.monotonic() + 20
        while recorder.counters.spooled == 0 and time.monotonic() < deadline:
            time.sleep(0.01)  # the write fails, the event goes to the spool
        refused: errors.Backpressure | None = None
        for _ in range(10_000):
            try:
                recorder.enqueue(action="a:b:c", user_id=uuid.uuid4())
            except errors.Backpressure as failure:
                refused = failure
                break
            accepted += 1
        assert refused is not None, "10,000 events fit in a 50-event buffer and a 600-byte spool"
        counters = recorder.counters
        assert counters.queued == accepted
        assert counters.spooled > 0
        assert spooled_lines(tmp_path) == counters.spooled
    # Closing with the database down spools everything still in memory, over the limit: nothing is lost.
    assert spooled_lines(tmp_path) == accepted


@pytest.fixture(params=server_binaries())
def own_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[embedded.EmbeddedPostgres]:
    """A cluster of our own, to stop and start without disturbing other tests."""
    with migrated_own_server(tmp_path / "pgdata", request.param) as server:
        yield server


@pytest.mark.slow
def test_a_database_restart_mid_stream_loses_and_doubles_nothing(
    own_server: embedded.EmbeddedPostgres, tmp_path: Path
) -> None:
    total = 10_000
    options = EnqueueOptions(spool_dir=tmp_path / "spool", write_policy=FAST_FAIL)
    with db.connect(own_server.url(), autocommit=True) as conn:
        user = factories.add_user(conn)
    with Recorder(own_server.app_url(), enqueue_options=options) as recorder:
        restarted = threading.Event()

        def restart_in_the_middle() -> None:
            while recorder.counters.queued < total // 3:
                time.sleep(0.005)
            own_server.stop(mode="fast")
            time.sleep(2.0)
            own_server.start()
            restarted.set()

        restarter = threading.Thread(target=restart_in_the_middle)
        restarter.start()
        for i in range(total):
            recorder.enqueue(action="chat:message:send", user_id=user, tokens_input=i)
            if i % 100 == 0:
                time.sleep(0.01)
        restarter.join(timeout=60)
        assert restarted.is_set()
        assert recorder.flush(timeout=120)
        counters = recorder.counters
    assert counters.spooled > 0, "the restart never sent events to the spool: the test proved nothing"
    assert counters.replayed == counters.spooled
    assert counters.written + counters.replayed == total
    with db.connect(own_server.url()) as conn:
        row = conn.execute("select count(*), count(distinct tokens_input) from public.usage_events").fetchone()
    assert row == (total, total)


CHILD = """
import os, signal, sys, uuid
from pathlib import Path
from usagemeter.db import retry
from usagemeter.recording.recorder import EnqueueOptions, Recorder
url, spool_dir, user = sys.argv[1], Path(sys.argv[2]), uuid.UUID(sys.argv[3])
options = EnqueueOptions(spool_dir=spool_dir, write_policy=retry.RetryPolicy(attempts=1, connect_timeout_s=0.3))
recorder = Recorder(url, enqueue_options=options)
for i in range(500):
    recorder.enqueue(action="chat:message:send", user_id=user, tokens_input=i)
recorder.flush(timeout=5)
print(recorder.counters.spooled, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.slow
def test_events_spooled_before_sigkill_are_replayed_exactly_once(
    app_database_url: str, owner: psycopg.Connection[Any], tmp_path: Path
) -> None:
    user = factories.add_user(owner)
    spool_dir = tmp_path / "spool"
    child = subprocess.run(
        [sys.executable, "-c", CHILD, unreachable_url(), str(spool_dir), str(user)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr
    assert child.stdout.strip() == "500"
    (spool_file,) = spool_files(spool_dir)
    spooled = spool_file.read_bytes()
    assert spooled.count(b"\n") == 500
    killed_at = time.time()

    with Recorder(app_database_url, enqueue_options=EnqueueOptions(spool_dir=spool_dir)) as recorder:
        assert recorder.flush(timeout=60)
        assert recorder.counters.replayed == 500
    assert spool_files(spool_dir) == [], "a replayed spool of a dead process is removed"

    # A crash in the middle of that replay, before its progress was saved, leaves the spool as it
    # was: replaying it again adds nothing.
    spool_file.parent.mkdir()
    spool_file.write_bytes(spooled)
    with Recorder(app_database_url, enqueue_options=EnqueueOptions(spool_dir=spool_dir)) as recorder:
        assert recorder.flush(timeout=60)
        assert recorder.counters.replayed == 500
    row = owner.execute(
        "select count(*), count(distinct tokens_input), max(extract(epoch from created_at)) from public.usage_events"
    ).fetchone()
    assert row is not None
    assert row[:2] == (500, 500)
    assert float(row[2]) < killed_at, "events keep the time they were enqueued, not the replay time"


def test_recorders_share_a_spool_directory(
    app_database_url: str, owner: psycopg.Connection[Any], tmp_path: Path
) -> None:
    user = factories.add_user(owner)
    options = EnqueueOptions(spool_dir=tmp_path)
    with (
        Recorder(app_database_url, enqueue_options=options) as first,
        Recorder(app_database_url, enqueue_options=options) as second,
    ):
        first.enqueue(action="a:b:c", user_id=user)
        second.enqueue(action="a:b:c", user_id=user)
        assert first.flush(timeout=30)
        assert second.flush(timeout=30)
    assert factories.count_events(owner) == 2


EXIT_WITHOUT_CLOSE = """
import sys, uuid
from pathlib import Path
from usagemeter.db import retry
from usagemeter.recording.recorder import EnqueueOptions, Recorder
options = EnqueueOptions(spool_dir=Path(sys.argv[2]), write_policy=retry.RetryPolicy(attempts=1, connect_timeout_s=0.3))
me = Recorder(sys.argv[1], enqueue_options=options).as_user(uuid.UUID(sys.argv[3]))  # the root is not kept
for i in range(50):
    me.enqueue(action="chat:message:send", user_id=None, tokens_input=i)
"""


def test_events_enqueued_by_a_process_that_never_closes_are_spooled_at_exit(tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    child = subprocess.run(
        [sys.executable, "-c", EXIT_WITHOUT_CLOSE, unreachable_url(), str(spool_dir), str(uuid.uuid4())],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert child.returncode == 0, child.stderr
    assert spooled_lines(spool_dir) == 50
