"""HTTP ingest: single-event and 100-event POSTs through `usagemeter serve`, against in-process record_many.

    python bench/http.py [--seconds 10] [--connections 64] [--database-url URL]

The server runs as its own process (`usagemeter serve`, as users run it) on loopback; the load
comes from `wrk` (Debian's package) in another process, each request signed with a user's token.
Every 201 is sent after the event's commit, so the rates are durable ones; the benchmark checks
that the database holds exactly the events answered 201. The in-process rate is Recorder.record_many
of the same 100-event batches from as many threads as the server has write connections, in the
same run, on the same database.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

if __package__ in (None, ""):
    # Run as a script: bench/ comes first on the path, and this file would shadow the standard
    # library's `http` (which httpx imports). Put the repository there instead.
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
from rich.console import Console
from rich.table import Table

from bench import harness
from usagemeter import db
from usagemeter.api import auth
from usagemeter.ops import embedded
from usagemeter.recording.recorder import Recorder

SECRET = "bench-secret-bench-secret-bench-secret"  # noqa: S105 (a throwaway server's)
BATCH = 100
WRITE_CONNECTIONS = 4  # the server's write pool (ServerConfig.write_pool_size)
SINGLE_TARGET_PER_S = 3000
SINGLE_P99_TARGET_MS = 50.0
BATCH_TARGET_RATIO = 0.5

# One request per call: a single event, numbered so each is distinct, or a fixed batch.
WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer TOKEN"
local batch = BATCH_BODY
local n = 0
request = function()
  if batch then return wrk.format(nil, "/v1/events", nil, batch) end
  n = n + 1
  return wrk.format(nil, "/v1/events", nil,
    '{"action":"chat:message:reply","tokens_input":' .. n .. ',"tokens_output":7,"metadata":{"bench":"http"}}')
end
"""
UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


@dataclass(frozen=True)
class LoadResult:
    requests: int
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    errors: int


def _ms(text: str) -> float:
    """wrk's durations (635.91us, 1.04ms, 1.20s, 1.50m) in milliseconds."""
    found = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if found is None:
        raise RuntimeError(f"cannot read wrk's duration {text!r}")
    return float(found[1]) * UNITS_MS[found[2]]


def run_wrk(base_url: str, token: str, *, batch: bool, seconds: int, connections: int) -> LoadResult:
    """wrk's requests, rate and latency percentiles; non-2xx answers and socket errors counted apart."""
    body = json.dumps([{"action": "chat:message:reply", "tokens_input": n, "tokens_output": 7} for n in range(BATCH)])
    script = WRK_SCRIPT.replace("TOKEN", token).replace("BATCH_BODY", f"[=[{body}]=]" if batch else "nil")
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as file:
        file.write(script)
    try:
        output = subprocess.run(
            ["wrk", "-t", "2", "-c", str(connections), "-d", f"{seconds}s", "--latency", "--timeout", "10s",
             "-s", file.name, base_url],
            capture_output=True, text=True, check=True, timeout=seconds + 60,
        ).stdout  # fmt: skip
    finally:
        os.unlink(file.name)
    if "99%" not in output:
        raise RuntimeError(f"wrk printed no latency distribution:\n{output}")
    requests = int(re.search(r"(\d+) requests in", output)[1])  # type: ignore[index]
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    return LoadResult(
        requests=requests,
        requests_per_s=float(re.search(r"Requests/sec:\s+([\d.]+)", output)[1]),  # type: ignore[index]
        p50_ms=_ms(re.search(r"^\s*50%\s+(\S+)", output, re.MULTILINE)[1]),  # type: ignore[index]
        p99_ms=_ms(re.search(r"^\s*99%\s+(\S+)", output, re.MULTILINE)[1]),  # type: ignore[index]
        non_2xx=int(non_2xx[1]) if non_2xx else 0,
        errors=sum(int(n) for n in errors.groups()) if errors else 0,
    )


def start_server(admin_url: str, port: int, log: Path) -> subprocess.Popen[bytes]:
    """`usagemeter serve` in its own process, ready when /readyz answers 200; its output goes to `log`."""
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "usagemeter", "serve", "--database-url", admin_url, "--port", str(port),
             "--jwt-secret", SECRET],
            stdout=output, stderr=subprocess.STDOUT,
        )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"usagemeter serve exited: {log.read_text()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    process.kill()
    raise RuntimeError("usagemeter serve did not become ready in 60 s")


def in_process_batches(app_url: str, user: uuid.UUID, seconds: float) -> float:
    """Events per second of Recorder.record_many(100 events) from WRITE_CONNECTIONS threads."""
    batch = [
        {"action": "chat:message:reply", "user_id": user, "tokens_input": n, "tokens_output": 7} for n in range(BATCH)
    ]
    written = [0] * WRITE_CONNECTIONS
    with Recorder(app_url, pool_size=WRITE_CONNECTIONS) as recorder:
        recorder.record_many(batch)  # warm the pool
        stop = time.monotonic() + seconds

        def write(slot: int) -> None:
            while time.monotonic() < stop:
                recorder.record_many(batch)
                written[slot] += BATCH

        started = time.monotonic()
        threads = [threading.Thread(target=write, args=(slot,)) for slot in range(WRITE_CONNECTIONS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return sum(written) / (time.monotonic() - started)


def stored_events(admin_url: str) -> int:
    with db.connect(admin_url) as conn:
        row = conn.execute("select count(*) from public.usage_events").fetchone()
    return int(row[0]) if row else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--port", type=int, default=None)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("bench/http.py needs wrk: apt-get install wrk")
    console = Console(stderr=True)
    with harness.server(args.database_url) as server_url, harness.scratch_database(server_url) as admin_url:
        with db.connect(admin_url, autocommit=True) as conn:
            user = uuid.uuid4()
            conn.execute("insert into auth.users (id, email) values (%s, 'bench@example.test')", (user,))
            description = harness.server_description(conn)
        token = auth.mint(SECRET, user_id=user, ttl=timedelta(hours=1))
        port = args.port or embedded.free_port()
        log = Path(tempfile.gettempdir()) / f"usagemeter-bench-http-{port}.log"
        server = start_server(admin_url, port, log)
        try:
            base_url = f"http://127.0.0.1:{port}"
            run_wrk(base_url, token, batch=False, seconds=2, connections=args.connections)  # warm up
            before = stored_events(admin_url)
            single = run_wrk(base_url, token, batch=False, seconds=args.seconds, connections=args.connections)
            after_single = stored_events(admin_url)
            batches = run_wrk(base_url, token, batch=True, seconds=args.seconds, connections=args.connections)
            after_batches = stored_events(admin_url)
        finally:
            server.terminate()
            server.wait(timeout=30)
        inprocess = in_process_batches(harness.app_url(admin_url), user, args.seconds)
    # wrk stops counting at the deadline while late answers may still commit: stored >= answered.
    answered_single = single.requests - single.non_2xx
    answered_batches = (batches.requests - batches.non_2xx) * BATCH
    if not answered_single <= after_single - before or not answered_batches <= after_batches - after_single:
        sys.exit(f"fewer events stored than answered 2xx: {after_single - before} < {answered_single} or "
                 f"{after_batches - after_single} < {answered_batches}")  # fmt: skip
    batch_events_per_s = batches.requests_per_s * BATCH
    table = Table(title=f"HTTP ingest, {args.connections} connections, {args.seconds} s each ({description})")
    for column in ("load", "events/s", "p50 ms", "p99 ms", "non-2xx", "socket errors"):
        table.add_column(column, justify="left" if column == "load" else "right")
    table.add_row("single-event POSTs", f"{single.requests_per_s:,.0f}", f"{single.p50_ms:.2f}", f"{single.p99_ms:.2f}",
                  str(single.non_2xx), str(single.errors))  # fmt: skip
    table.add_row(f"{BATCH}-event POSTs", f"{batch_events_per_s:,.0f}", f"{batches.p50_ms:.2f}",
                  f"{batches.p99_ms:.2f}", str(batches.non_2xx), str(batches.errors))  # fmt: skip
    table.add_row(f"in-process record_many({BATCH}), {WRITE_CONNECTIONS} threads", f"{inprocess:,.0f}", "", "", "", "")
    console.print(table)
    console.print(
        f"single: {single.requests_per_s:,.0f}/s (target {SINGLE_TARGET_PER_S:,}), p99 {single.p99_ms:.1f} ms "
        f"(target < {SINGLE_P99_TARGET_MS:.0f}); batches {batch_events_per_s / inprocess:.2f}x in-process "
        f"(target {BATCH_TARGET_RATIO}x)",
        highlight=False,
    )
    harness.print_summary(
        {
            "single_events_per_s": round(single.requests_per_s, 1),
            "single_p50_ms": single.p50_ms,
            "single_p99_ms": single.p99_ms,
            "batch_events_per_s": round(batch_events_per_s, 1),
            "batch_p99_ms": batches.p99_ms,
            "inprocess_batch_events_per_s": round(inprocess, 1),
            "batch_vs_inprocess": round(batch_events_per_s / inprocess, 3),
            "non_2xx": single.non_2xx + batches.non_2xx,
        }
    )


if __name__ == "__main__":
    main()
