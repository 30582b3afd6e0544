"""The enqueue path loses nothing: poisoned spools, refusing triggers, read-only databases, full disks, dead threads."""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
import tracemalloc
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql as pgsql

from tests import factories
from tests.acceptance.test_cli_database import usagemeter
from tests.integration.test_enqueue import FAST_FAIL, spool_files, unreachable_url
from usagemeter import errors
from usagemeter.recording.recorder import EnqueueOptions, Recorder, default_spool_dir


def spool_line(user: uuid.UUID, tokens: int, **event: Any) -> str:
    """A spool record as the flusher writes it."""
    record = {
        "role": "service_role",
        "claims": {},
        "id": str(uuid.uuid4()),
        "event": {"action": "chat:message:send", "user_id": str(user), "tokens_input": tokens, **event},
    }
    return json.dumps(record, separators=(",", ":"))


def dead_process_spool(spool_dir: Path, content: bytes, *, layout: str = "per-process") -> Path:
    """A spool left by a process that ended (nobody holds its lock); "legacy": the one-file layout before."""
    directory = spool_dir / "4242-deadbeef" if layout == "per-process" else spool_dir
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "spool.jsonl").write_bytes(content)
    return directory


LAYOUTS = pytest.mark.parametrize("layout", ["per-process", "legacy"])


def rejected(spool_dir: Path) -> list[dict[str, Any]]:
    path = spool_dir / "rejected.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def stored_tokens(owner: psycopg.Connection[Any]) -> list[int]:
    return [row[0] for row in owner.execute("select tokens_input from public.usage_events order by tokens_input")]


@LAYOUTS
def test_a_poisoned_spool_is_replayed_around_its_bad_lines(
    app_database_url: str, owner: psycopg.Connection[Any], tmp_path: Path, layout: str
) -> None:
    user = factories.add_user(owner)
    torn = spool_line(user, 900)[:45]
    lines = [
        spool_line(user, 1),
        "garbage, not a record",
        torn + spool_line(user, 2),  # a write cut short, then a later append glued to it
        spool_line(user, 901, idempotency_key="req-\udc80"),  # valid JSON, but not encodable as UTF-8
        "[" * 5000 + "]" * 5000,  # deeper than the JSON parser goes
        spool_line(user, 902).replace("service_role", "postgres"),  # a role the pool must never switch to
        spool_line(user, 3),
    ]
    dead_process_spool(tmp_path, ("\n".join(lines) + "\n").encode("ascii"), layout=layout)
    with Recorder(app_database_url, enqueue_options=EnqueueOptions(spool_dir=tmp_path)) as recorder:
        assert recorder.flush(timeout=60)
        for i in range(300):
            recorder.enqueue(action="chat:message:send", user_id=user, tokens_input=1000 + i)
        assert recorder.flush(timeout=60)
        counters = recorder.counters
    assert stored_tokens(owner) == [1, 2, 3, *range(1000, 1300)]
    assert (counters.replayed, counters.written, counters.rejected) == (3, 300, 5)
    kept = rejected(tmp_path)
    assert len(kept) == 5
    unreadable = {entry["line"][:20]: entry["reason"] for entry in kept if "surrogate" not in entry["reason"]}
    assert unreadable == {
        "garbage, not a recor": "not a spool record: JSONDecodeError: Expecting value: line 1 column 1 (char 0)",
        torn[:20]: "torn write (a record cut short, then a later append)",
        "[" * 20: "not a spool record: JSON nested too deeply",
        '{"role":"postgres","': "not a spool record: ValueError: role must be one of anon, authenticated,"
        " service_role and claims an object",
    }
    # a line validation refuses (as record() would have) keeps its text and the rule it breaks
    (unwritable,) = [entry for entry in kept if "surrogate" in entry["reason"]]
    assert "req-\\udc80" in unwritable["line"]
    assert unwritable["reason"].startswith("not a valid event: idempotency_key:")
    assert spool_files(tmp_path) == []
    assert not (tmp_path / "spool.jsonl").exists() or (tmp_path / "spool.jsonl").stat().st_size == 0


@pytest.fixture
def refusing_trigger(owner: psycopg.Connection[Any]) -> None:
    """A trigger that refuses events with 13 or 42 input tokens (SQLSTATE P0001), as a site's own rule might."""
    owner.execute(
        """
        create function public.refuse_unlucky() returns trigger language plpgsql as $$
        begin
          if new.tokens_input in (13, 42) then raise exception 'unlucky number %', new.tokens_input; end if;
          return new;
        end $$;
        create trigger refuse_unlucky before insert on public.usage_events
          for each row execute function public.refuse_unlucky();
        """
    )


@pytest.mark.usefixtures("refusing_trigger")
def test_events_a_trigger_refuses_are_rejected_alone(
    app_database_url: str, owner: psycopg.Connection[Any], tmp_path: Path
) -> None:
    user = factories.add_user(owner)
    with Recorder(app_database_url, enqueue_options=EnqueueOptions(spool_dir=tmp_path)) as recorder:
        for i in range(100):
            recorder.enqueue(action="chat:message:send", user_id=user, tokens_input=i)
        assert recorder.flush(timeout=60)
        counters = recorder.counters
    assert (counters.written, counters.rejected) == (98, 2)
    assert stored_tokens(owner) == [i for i in range(100) if i not in (13, 42)]
    kept = sorted(rejected(tmp_path), key=lambda entry: entry["record"]["event"]["tokens_input"])
    assert [entry["record"]["event"]["tokens_input"] for entry in kept] == [13, 42]
    assert "P0001" in kept[0]["reason"]
    assert "unlucky number 13" in kept[0]["reason"]


def set_read_only(owner: psycopg.Connection[Any], read_only: bool) -> None:
    """Make the test database read-only (or writable again) for new sessions, and end the recorder's sessions."""
    name = owner.info.dbname
    value = pgsql.Literal("on" if read_only else "off")
    owner.execute(
        pgsql.SQL("alter database {} set default_transaction_read_only = {}").format(pgsql.Identifier(name), value)
    )
    owner.execute(
        "select pg_terminate_backend(pid) from pg_stat_activity where datname = %s and pid <> pg_backend_pid()",
        (name,),
    )


def test_a_read_only_database_spools_events_instead_of_rejecting_them(
    app_database_url: str, owner: psycopg.Connection[Any], tmp_path: Path
) -> None:
    user = factories.add_user(owner)
    set_read_only(owner, True)
    options = EnqueueOptions(spool_dir=tmp_path, write_policy=FAST_FAIL)
    with Recorder(app_database_url, enqueue_options=options) as recorder:
        for i in range(50):
            recorder.enqueue(action="chat:message:send", user_id=user, tokens_input=i)
        assert not recorder.flush(timeout=2)
        assert (recorder.counters.spooled, recorder.counters.rejected) == (50, 0)
        set_read_only(owner, False)
        assert recorder.flush(timeout=60)
        assert recorder.counters.replayed == 50
    assert stored_tokens(owner) == list(range(50))


def test_claims_that_json_cannot_encode_are_spooled_and_written(
    app_database_url: str, owner: psycopg.Connection[Any], tmp_path: Path
) -> None:
    user = factories.add_user(owner)
    options = EnqueueOptions(spool_dir=tmp_path, write_policy=FAST_FAIL)
    with Recorder(unreachable_url(), enqueue_options=options) as down:
        down.as_user({"sub": user, "role": "authenticated"}).enqueue(action="a:b:c", user_id=None)
        assert not down.flush(timeout=1)
        assert down.counters.spooled == 1
    with Recorder(app_database_url, enqueue_options=EnqueueOptions(spool_dir=tmp_path)) as up:
        assert up.flush(timeout=30)
        assert up.counters.replayed == 1
        up.as_user({"sub": user, "role": "authenticated"}).enqueue(action="a:b:c", user_id=None)
        assert up.flush(timeout=30)
        assert up.counters.written == 1
    assert factories.count_events(owner) == 2


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs: a disk that fills up (needs root to mount)."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount_point)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=True)


def test_a_full_disk_holds_events_and_pushes_back_never_drops(
    app_database_url: str, owner: psycopg.Connection[Any], tiny_disk: Path
) -> None:
    user = factories.add_user(owner)
    set_read_only(owner, True)  # the database takes nothing: every event must go to the spool
    options = EnqueueOptions(spool_dir=tiny_disk / "spool", max_buffer=200, on_full="raise", write_policy=FAST_FAIL)
    accepted = 0
    with Recorder(app_database_url, enqueue_options=options, max_batch=100) as recorder:
        with pytest.raises(errors.Backpressure):  # noqa: PT012 - enqueue until the full disk pushes back
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                recorder.enqueue(action="chat:message:send", user_id=user, tokens_input=accepted)
                accepted += 1
                if accepted % 200 == 0:
                    time.sleep(0.05)
        assert not recorder.flush(timeout=1), "flush() said all was settled while the disk was full"
        counters = recorder.counters
        assert counters.held > 0
        assert counters.queued == accepted
        assert counters.rejected == 0
        assert counters.spooled < accepted
        set_read_only(owner, False)
        assert recorder.flush(timeout=120)
        counters = recorder.counters
    assert counters.written + counters.replayed == accepted
    assert stored_tokens(owner) == list(range(accepted))


@LAYOUTS
def test_replay_memory_does_not_grow_with_the_spool(
    app_database_url: str, owner: psycopg.Connection[Any], tmp_path: Path, layout: str
) -> None:
    user = factories.add_user(owner)
    pad = "x" * 900
    count = 20_000
    content = "".join(spool_line(user, i, metadata={"pad": pad}) + "\n" for i in range(count)).encode("ascii")
    assert len(content) > 20_000_000
    dead_process_spool(tmp_path, content, layout=layout)
    del content
    tracemalloc.start()
    try:
        with Recorder(app_database_url, enqueue_options=EnqueueOptions(spool_dir=tmp_path)) as recorder:
            tracemalloc.reset_peak()
            assert recorder.flush(timeout=300)
            peak = tracemalloc.get_traced_memory()[1]
            assert recorder.counters.replayed == count
    finally:
        tracemalloc.stop()
    print(f"replay peak {peak / 2**20:.1f} MiB")
    assert peak < 16 << 20, f"replaying a 20 MB spool peaked at {peak / 2**20:.1f} MiB"
    assert factories.count_events(owner) == count


def test_spool_files_are_private(tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    dead_process_spool(spool_dir, b"garbage\n")  # to be rejected: rejected.jsonl's mode is checked too
    previous = os.umask(0)  # the modes must not depend on the caller's umask
    try:
        options = EnqueueOptions(spool_dir=spool_dir, write_policy=FAST_FAIL)
        with Recorder(unreachable_url(), enqueue_options=options) as recorder:
            recorder.enqueue(action="a:b:c", user_id=uuid.uuid4())
            assert not recorder.flush(timeout=1)
            (spool_file,) = spool_files(spool_dir)
            own = spool_file.parent.name
            modes = {p.relative_to(spool_dir).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in spool_dir.rglob("*")}
    finally:
        os.umask(previous)
    assert stat.S_IMODE(spool_dir.stat().st_mode) == 0o700
    assert modes == {
        "rejected.jsonl": 0o600,
        own: 0o700,
        f"{own}/.lock": 0o600,
        f"{own}/spool.jsonl": 0o600,
    }


def kill_thread(thread: threading.Thread) -> None:
    """End a thread the way an uncaught BaseException would."""
    assert thread.ident is not None
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident), ctypes.py_object(SystemExit))


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_dead_flusher_thread_is_replaced(
    app_database_url: str, owner: psycopg.Connection[Any], tmp_path: Path
) -> None:
    user = factories.add_user(owner)
    with Recorder(app_database_url, enqueue_options=EnqueueOptions(spool_dir=tmp_path)) as recorder:
        recorder.enqueue(action="a:b:c", user_id=user, tokens_input=0)
        flusher = recorder._engine.get_enqueuer()._thread
        kill_thread(flusher)
        flusher.join(timeout=10)
        assert not flusher.is_alive()
        for i in range(1, 100):
            recorder.enqueue(action="a:b:c", user_id=user, tokens_input=i)
        assert recorder.flush(timeout=30)
    assert stored_tokens(owner) == list(range(100))


def test_put_racing_close_raises_or_keeps_the_event(tmp_path: Path) -> None:
    options = EnqueueOptions(
        spool_dir=tmp_path, max_buffer=1, max_spool_bytes=1, on_full="block", write_policy=FAST_FAIL
    )
    recorder = Recorder(unreachable_url(), enqueue_options=options)
    outcomes: list[str] = []

    def enqueue_forever() -> None:
        with contextlib.suppress(errors.RecorderClosed):
            for _ in range(1000):
                recorder.enqueue(action="a:b:c", user_id=uuid.uuid4())
                outcomes.append("queued")
        outcomes.append("closed")

    caller = threading.Thread(target=enqueue_forever)
    caller.start()
    time.sleep(1.0)  # the buffer is full, the spool refuses: the caller is blocked
    queued = recorder.counters.queued
    recorder.close()
    caller.join(timeout=30)
    assert not caller.is_alive()
    assert outcomes[-1] == "closed"
    lines = sum(path.read_bytes().count(b"\n") for path in spool_files(tmp_path))
    assert lines == recorder.counters.queued >= queued


ENQUEUE_UNTIL_KILLED = """
import sys, time, uuid
from pathlib import Path
from usagemeter.db import retry
from usagemeter.recording.recorder import EnqueueOptions, Recorder
url, spool_dir, user = sys.argv[1], Path(sys.argv[2]), uuid.UUID(sys.argv[3])
options = EnqueueOptions(spool_dir=spool_dir, write_policy=retry.RetryPolicy(attempts=1, connect_timeout_s=0.3))
recorder = Recorder(url, enqueue_options=options)
for i in range(10**9):
    recorder.enqueue(action="chat:message:send", user_id=user, tokens_input=100_000 + i)
    if i % 50 == 0:
        print(recorder.counters.spooled, flush=True)
        time.sleep(0.01)
"""


def test_a_killed_process_spool_is_replayed_once_by_a_process_sharing_the_directory(
    app_database_url: str, owner: psycopg.Connection[Any], tmp_path: Path
) -> None:
    user = factories.add_user(owner)
    spool_dir = tmp_path / "spool"
    options = EnqueueOptions(spool_dir=spool_dir)
    with Recorder(app_database_url, enqueue_options=options) as survivor:
        # The other process cannot reach the database (a network split): it spools, in the same directory.
        child = subprocess.Popen(
            [sys.executable, "-c", ENQUEUE_UNTIL_KILLED, unreachable_url(), str(spool_dir), str(user)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdout is not None
        mine = 0
        for line in child.stdout:
            survivor.enqueue(action="chat:message:send", user_id=user, tokens_input=mine)
            mine += 1
            if int(line) >= 300:
                break
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        (left,) = [path for path in spool_files(spool_dir) if not path.parent.name.startswith(f"{os.getpid()}-")]
        lines = left.read_bytes().split(b"\n")
        spooled = {json.loads(line)["id"] for line in lines[:-1]}
        torn = 1 if lines[-1] else 0  # SIGKILL may land in the middle of an append
        assert len(spooled) >= 300
        for i in range(mine, mine + 100):
            survivor.enqueue(action="chat:message:send", user_id=user, tokens_input=i)
        mine += 100
        assert survivor.flush(timeout=120)
        counters = survivor.counters
    assert (counters.written, counters.replayed, counters.rejected) == (mine, len(spooled), torn)
    rows = owner.execute("select id::text, tokens_input from public.usage_events").fetchall()
    assert len(rows) == mine + len(spooled)
    assert {row[0] for row in rows if row[1] >= 100_000} == spooled
    assert spool_files(spool_dir) == []
    with Recorder(app_database_url, enqueue_options=options) as later:
        assert later.flush(timeout=30)
        assert later.counters.replayed == 0
    assert factories.count_events(owner) == mine + len(spooled)


FLUSH_AND_COUNT = """
import sys
from pathlib import Path
from usagemeter.recording.recorder import EnqueueOptions, Recorder
with Recorder(sys.argv[1], enqueue_options=EnqueueOptions(spool_dir=Path(sys.argv[2]))) as recorder:
    assert recorder.flush(timeout=120)
    print(recorder.counters.replayed, flush=True)
"""


@LAYOUTS
def test_processes_starting_together_replay_a_dead_process_spool_once(
    app_database_url: str, owner: psycopg.Connection[Any], tmp_path: Path, layout: str
) -> None:
    user = factories.add_user(owner)
    content = "".join(spool_line(user, i) + "\n" for i in range(3000)).encode("ascii")
    dead_process_spool(tmp_path, content, layout=layout)
    starters = [
        subprocess.Popen(
            [sys.executable, "-c", FLUSH_AND_COUNT, app_database_url, str(tmp_path)], stdout=subprocess.PIPE, text=True
        )
        for _ in range(3)
    ]
    replayed = sorted(int(process.communicate(timeout=180)[0]) for process in starters)
    assert [process.returncode for process in starters] == [0, 0, 0]
    assert replayed == [0, 0, 3000], "exactly one process claims the spool"
    assert stored_tokens(owner) == list(range(3000))
    assert spool_files(tmp_path) == []


def test_the_cli_records_while_a_live_process_holds_events_in_the_shared_spool(
    app_database_url: str, owner: psycopg.Connection[Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = factories.add_user(owner)
    monkeypatch.setenv("USAGEMETER_DATA_DIR", str(tmp_path))
    shared = default_spool_dir(app_database_url)
    options = EnqueueOptions(spool_dir=shared, write_policy=FAST_FAIL)
    with Recorder(unreachable_url(), enqueue_options=options) as cut_off:  # a live process with spooled events
        cut_off.enqueue(action="a:b:c", user_id=user)
        assert not cut_off.flush(timeout=1)
        assert cut_off.counters.spooled == 1
        result = usagemeter(
            "record", "--database-url", app_database_url, "--user", str(user), "--action", "a:b:c",
            env={"USAGEMETER_DATA_DIR": str(tmp_path)},
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert factories.count_events(owner) == 1, "the CLI stored its event and left the live spool alone"
        (spool_file,) = spool_files(shared)
        assert spool_file.read_bytes().count(b"\n") == 1
