"""A database outage never reaches the caller of a metered model call, and its usage arrives afterwards."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

from tests import factories
from tests.metering import provider
from tests.provider_server import USAGE, RunningProvider
from tests.servers import migrated_own_server, server_binaries
from usagemeter import db
from usagemeter.db import retry
from usagemeter.integrations import Meter
from usagemeter.ops import embedded
from usagemeter.recording.recorder import EnqueueOptions, Recorder

__all__ = ["provider"]  # fixtures

MESSAGES: list[Any] = [{"role": "user", "content": "Say hello."}]


@pytest.fixture(params=server_binaries()[-1:])  # one server is enough: PostgreSQL 15 when installed
def own_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[embedded.EmbeddedPostgres]:
    with migrated_own_server(tmp_path / "pgdata", request.param) as server:
        yield server


def test_calls_during_an_outage_are_answered_and_recorded_once_the_database_is_back(
    own_server: embedded.EmbeddedPostgres, provider: RunningProvider, tmp_path: Path
) -> None:
    with db.connect(own_server.url(), autocommit=True) as conn:
        tenant = factories.add_tenant(conn)
    options = EnqueueOptions(spool_dir=tmp_path / "spool", write_policy=retry.RetryPolicy(attempts=1))
    with Recorder(own_server.app_url(), enqueue_options=options) as recorder:
        meter = Meter(recorder, tenant_id=tenant)
        chat = meter.openai(openai.OpenAI(base_url=provider.openai_base_url, api_key="k"))
        claude = meter.anthropic(anthropic.Anthropic(base_url=provider.url, api_key="k"))
        own_server.stop(mode="fast")
        started = time.monotonic()
        answer = chat.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        chunks = list(chat.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True))
        message = claude.messages.create(model="claude-sonnet-4-5", max_tokens=10, messages=MESSAGES)
        assert time.monotonic() - started < 5, "the outage slowed the model calls down"
        assert (answer.choices[0].message.content, len(chunks), message.stop_reason) == ("Hello there.", 42, "end_turn")
        assert meter.counters.failed == 0
        deadline = time.monotonic() + 30
        while recorder.counters.spooled < 3:  # the flusher met the outage and kept the events on disk
            assert time.monotonic() < deadline
            time.sleep(0.05)
        own_server.start()
        assert recorder.flush(timeout=60)
        assert recorder.counters.replayed == 3
    with db.connect(own_server.url()) as conn:
        rows = conn.execute(
            "select tokens_input, metadata->>'provider' from public.usage_events where tenant_id = %s order by 2, 1",
            (tenant,),
        ).fetchall()
    m = USAGE["messages"]
    anthropic_input = m["input"] + m["cache_read"] + m["cache_creation"]
    assert rows == [
        (anthropic_input, "anthropic"),
        (USAGE["chat"]["prompt"], "openai"),
        (USAGE["chat"]["prompt"], "openai"),
    ]
