"""SDK capture: what metering an OpenAI client adds to each call, against the bare client on the same local server.

    python bench/integrations.py [--calls 2000] [--database-url URL]

The real OpenAI SDK calls a local server speaking its wire format (tests/provider_server.py)
over keep-alive loopback HTTP. Bare and metered calls alternate in one loop, so both see the
same machine; the overhead is the difference of their medians. The wrapper's own work (mapping
the usage, resolving the attribution, enqueue with its validation) is also timed inline, without
HTTP: a precise figure where the end-to-end difference is within the noise of a ~1 ms call.
`Meter(wait=True)` (a commit per call) is measured the same way. Every metered call must be
stored once: the run checks the row count. Then OTLP ingest against record_many
(bench/integrations_otlp.py): `otlp_vs_record_many`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    # Run as a script: bench/ would come first on the path, and bench/http.py would shadow the
    # standard library's `http` (which the SDKs import). Put the repository there instead.
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import openai
from rich.console import Console
from rich.table import Table

from bench import harness, integrations_otlp
from tests.provider_server import running_provider
from usagemeter import db
from usagemeter.integrations import Meter
from usagemeter.integrations import openai as openai_integration
from usagemeter.recording.recorder import Recorder

TARGET_OVERHEAD_US = 50.0
MESSAGES: list[Any] = [{"role": "user", "content": "Say hello."}]


def _timed_us(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return (time.perf_counter() - started) * 1e6


def _alternating(bare: Callable[[], object], metered: Callable[[], object], calls: int) -> tuple[float, float]:
    """Medians (µs) of bare and metered calls made in turn."""
    for _ in range(min(50, calls)):  # warm up connections, the SDK's caches and the recorder
        bare()
        metered()
    bare_us, metered_us = [], []
    for n in range(calls):  # each goes first every other time: the one after a metered call shares the
        if n % 2:  # machine with the recorder's flusher, and neither side should always be that one
            bare_us.append(_timed_us(bare))
            metered_us.append(_timed_us(metered))
        else:
            metered_us.append(_timed_us(metered))
            bare_us.append(_timed_us(bare))
    return statistics.median(bare_us), statistics.median(metered_us)


def _inline_us(meter: Meter, canned: Any, calls: int) -> float:  # noqa: ANN401 - the SDK's ChatCompletion
    """Median µs of the wrapper's own work around a create() that answers at once with a parsed response.

    Each answer is a copy of `canned` with an id of its own (made beforehand), as real answers have.
    """
    warmup = min(200, calls)
    answers = iter([canned.model_copy(update={"id": f"inline-{n}"}) for n in range(warmup + calls)])
    create = openai_integration._sync_create(meter, "chat", lambda **_: next(answers))
    for _ in range(warmup):
        create(model="gpt-4o-mini", messages=MESSAGES)
    return statistics.median(_timed_us(lambda: create(model="gpt-4o-mini", messages=MESSAGES)) for _ in range(calls))


def measure(*, database_url: str, tenant_id: uuid.UUID, calls: int) -> dict[str, float]:
    """Run the SDK-capture measurements on a migrated database (admin URL); the figures of the summary line.

    Returns bare/metered medians in µs, `wrapper_overhead_us_p50` (metered - bare, enqueue),
    `wrapper_inline_us_p50` (the wrapper's own work), `wait_overhead_us_p50` (metered with a
    commit per call - bare) and `metered_vs_bare` (ratio of medians), plus `events_stored`.
    """
    with running_provider() as provider, Recorder(harness.app_url(database_url)) as recorder:
        bare_client = openai.OpenAI(base_url=provider.openai_base_url, api_key="bench", max_retries=0)
        meter = Meter(recorder, tenant_id=tenant_id)
        metered_client = meter.openai(openai.OpenAI(base_url=provider.openai_base_url, api_key="bench", max_retries=0))
        waiting = Meter(recorder, tenant_id=tenant_id, wait=True)
        waiting_client = waiting.openai(
            openai.OpenAI(base_url=provider.openai_base_url, api_key="bench", max_retries=0)
        )

        def bare() -> object:
            return bare_client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

        bare_us, metered_us = _alternating(
            bare, lambda: metered_client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES), calls
        )
        wait_bare_us, waiting_us = _alternating(
            bare, lambda: waiting_client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES), calls // 4
        )
        inline = Meter(recorder, tenant_id=tenant_id)
        inline_us = _inline_us(inline, bare(), calls)
        if not recorder.flush(timeout=120):
            raise SystemExit("the recorder did not drain within 120 s")
        meters = (meter, waiting, inline)
        if any(m.counters.failed for m in meters):
            raise SystemExit("metered calls failed to record")
    with db.connect(database_url) as conn:
        row = conn.execute("select count(*) from public.usage_events where tenant_id = %s", (tenant_id,)).fetchone()
    stored = int(row[0]) if row else 0
    expected = sum(m.counters.captured for m in meters)  # every response id is new: one row per call
    if stored != expected:
        raise SystemExit(f"stored {stored} events for {expected} metered calls")
    return {
        "bare_call_us_p50": round(bare_us, 1),
        "metered_call_us_p50": round(metered_us, 1),
        "wrapper_overhead_us_p50": round(metered_us - bare_us, 1),
        "metered_vs_bare": round(metered_us / bare_us, 4),
        "wrapper_inline_us_p50": round(inline_us, 2),
        "wait_overhead_us_p50": round(waiting_us - wait_bare_us, 1),
        "events_stored": stored,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000, help="bare and metered calls each")
    parser.add_argument("--spans", type=int, default=20_000, help="GenAI spans posted to /v1/traces (and recorded)")
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    console = Console(stderr=True)
    with harness.server(args.database_url) as server_url, harness.scratch_database(server_url) as admin_url:
        with db.connect(admin_url, autocommit=True) as conn:
            row = conn.execute(
                "insert into public.tenants (name, slug) values ('bench', 'bench') returning id"
            ).fetchone()
            assert row is not None
            description = harness.server_description(conn)
        summary: dict[str, Any] = measure(database_url=admin_url, tenant_id=row[0], calls=args.calls)
        with db.connect(admin_url, autocommit=True) as conn:
            other = conn.execute(
                "insert into public.tenants (name, slug) values ('otlp', 'otlp') returning id"
            ).fetchone()
            assert other is not None
        summary |= integrations_otlp.measure_otlp(database_url=admin_url, tenant_id=other[0], spans=args.spans)
    table = Table(title=f"SDK capture, OpenAI chat completions, {args.calls} calls each ({description})")
    for column in ("path", "p50 µs"):
        table.add_column(column, justify="left" if column == "path" else "right")
    table.add_row("bare OpenAI client", f"{summary['bare_call_us_p50']:,.1f}")
    table.add_row("metered (enqueue)", f"{summary['metered_call_us_p50']:,.1f}")
    table.add_row("  added per call", f"{summary['wrapper_overhead_us_p50']:,.1f}")
    table.add_row("  wrapper's own work, timed inline", f"{summary['wrapper_inline_us_p50']:,.2f}")
    table.add_row("metered (wait=True: a commit per call), added", f"{summary['wait_overhead_us_p50']:,.1f}")
    console.print(table)
    console.print(
        f"metered/bare {summary['metered_vs_bare']:.3f}x; added {summary['wrapper_overhead_us_p50']:.1f} µs, "
        f"inline {summary['wrapper_inline_us_p50']:.1f} µs (target < {TARGET_OVERHEAD_US:.0f} µs)",
        highlight=False,
    )
    console.print(
        f"OTLP ingest {summary['otlp_spans_per_s']:,} spans/s against record_many"
        f" {summary['record_many_events_per_s']:,} events/s: {summary['otlp_vs_record_many']:.2f}x (target >= 0.5x)",
        highlight=False,
    )
    harness.print_summary(summary)


if __name__ == "__main__":
    main()
