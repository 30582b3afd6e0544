"""The real Anthropic SDK, metered, against a local server speaking its wire format, recording into PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import anthropic
import psycopg

from tests.metering import provider, recorder, stored, tenant
from tests.provider_server import MODEL_SUFFIX, USAGE, RunningProvider
from usagemeter.integrations import Meter, attributed
from usagemeter.recording.recorder import Recorder

__all__ = ["provider", "recorder", "tenant"]  # fixtures

MESSAGES: list[Any] = [{"role": "user", "content": "Say hello."}]
COUNTS = USAGE["messages"]
ALL_INPUT = COUNTS["input"] + COUNTS["cache_read"] + COUNTS["cache_creation"]


def client_for(provider: RunningProvider) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=provider.url, api_key="test-key")


def assert_full_usage(row: dict[str, Any], tenant: uuid.UUID) -> None:
    assert row["tenant_id"] == tenant
    assert row["action"] == "ai:chat:completion"
    assert (row["tokens_input"], row["tokens_output"]) == (ALL_INPUT, COUNTS["output"])
    assert row["metadata"] == {
        "provider": "anthropic",
        "model": f"claude-sonnet-4-5{MODEL_SUFFIX}",
        "tokens_cached_input": COUNTS["cache_read"],
        "tokens_cache_write": COUNTS["cache_creation"],
    }


def test_message_counts_cache_reads_and_writes_as_input(
    provider: RunningProvider, recorder: Recorder, tenant: uuid.UUID, owner: psycopg.Connection[Any]
) -> None:
    client = Meter(recorder).anthropic(client_for(provider))
    with attributed(tenant_id=tenant):
        message = client.messages.create(model="claude-sonnet-4-5", max_tokens=100, messages=MESSAGES)
    assert message.content[0].type == "text"
    (row,) = stored(owner, recorder)
    assert_full_usage(row, tenant)
    assert row["idempotency_key"] == f"anthropic:{message.id}"


def test_raw_stream_and_stream_helper_record_once_at_their_end(
    provider: RunningProvider, recorder: Recorder, tenant: uuid.UUID, owner: psycopg.Connection[Any]
) -> None:
    client = Meter(recorder, tenant_id=tenant).anthropic(client_for(provider))
    events = list(client.messages.create(model="claude-sonnet-4-5", max_tokens=100, messages=MESSAGES, stream=True))
    assert events[-1].type == "message_stop"
    with client.messages.stream(model="claude-sonnet-4-5", max_tokens=100, messages=MESSAGES) as stream:
        text = stream.get_final_text()
    assert text.startswith("w0 w1 ")
    rows = stored(owner, recorder)
    assert len(rows) == 2
    for row in rows:
        assert_full_usage(row, tenant)


def test_streams_stopped_early_record_what_anthropic_had_reported(
    provider: RunningProvider, recorder: Recorder, tenant: uuid.UUID, owner: psycopg.Connection[Any]
) -> None:
    client = Meter(recorder, tenant_id=tenant).anthropic(client_for(provider))
    raw = client.messages.create(model="claude-sonnet-4-5", max_tokens=100, messages=MESSAGES, stream=True)
    for _, _event in zip(range(3), raw, strict=False):
        pass
    raw.close()
    with client.messages.stream(model="claude-sonnet-4-5", max_tokens=100, messages=MESSAGES) as stream:
        for _, _event in zip(range(3), stream, strict=False):
            pass
    rows = stored(owner, recorder)
    assert len(rows) == 2
    for row in rows:
        # message_start reported the input and cache counts and one output token; the rest never came.
        assert (row["tokens_input"], row["tokens_output"]) == (ALL_INPUT, 1)
        assert row["metadata"]["tokens_cached_input"] == COUNTS["cache_read"]
        assert row["metadata"]["tokens_cache_write"] == COUNTS["cache_creation"]
        assert row["metadata"]["stream"] == "stopped_early"


def test_async_client_plain_and_both_streams(
    provider: RunningProvider, recorder: Recorder, tenant: uuid.UUID, owner: psycopg.Connection[Any]
) -> None:
    meter = Meter(recorder)

    async def calls() -> None:
        client = meter.anthropic(anthropic.AsyncAnthropic(base_url=provider.url, api_key="test-key"))
        with attributed(tenant_id=tenant):
            await client.messages.create(model="claude-sonnet-4-5", max_tokens=100, messages=MESSAGES)
            raw = await client.messages.create(
                model="claude-sonnet-4-5", max_tokens=100, messages=MESSAGES, stream=True
            )
            assert [event.type async for event in raw][-1] == "message_stop"
            async with client.messages.stream(model="claude-sonnet-4-5", max_tokens=100, messages=MESSAGES) as s:
                await s.until_done()

    asyncio.run(calls())
    rows = stored(owner, recorder)
    assert len(rows) == 3
    for row in rows:
        assert_full_usage(row, tenant)
    assert meter.counters.captured == 3


def test_sdk_retries_and_a_repeated_message_id_store_one_event(
    provider: RunningProvider, recorder: Recorder, tenant: uuid.UUID, owner: psycopg.Connection[Any]
) -> None:
    meter = Meter(recorder, tenant_id=tenant)
    client = meter.anthropic(anthropic.Anthropic(base_url=provider.url, api_key="test-key", max_retries=2))
    provider.state.fail_next = 1  # answered 500 first: the SDK retries, the wrapper sees the final answer only
    provider.state.fixed_id = "msg_same"
    client.messages.create(model="claude-sonnet-4-5", max_tokens=100, messages=MESSAGES)
    assert len(provider.state.requests) == 2
    client.messages.create(model="claude-sonnet-4-5", max_tokens=100, messages=MESSAGES)  # the same message again
    (row,) = stored(owner, recorder)
    assert row["idempotency_key"] == "anthropic:msg_same"
    assert meter.counters.captured == 2  # both handed over; the database kept one
