"""The real OpenAI SDK, metered, against a local server speaking OpenAI's wire format, recording into PostgreSQL."""

from __future__ import annotations

import asyncio
import gc
import uuid
from pathlib import Path
from typing import Any

import openai
import psycopg
import pytest

from tests import factories
from tests.metering import provider, recorder, stored, tenant
from tests.provider_server import MODEL_SUFFIX, USAGE, RunningProvider
from usagemeter.integrations import Attribution, Meter, attributed
from usagemeter.recording.recorder import AsyncRecorder, EnqueueOptions, Recorder

__all__ = ["provider", "recorder", "tenant"]  # fixtures

MESSAGES: list[Any] = [{"role": "user", "content": "Say hello."}]
CHAT = USAGE["chat"]
RESPONSES = USAGE["responses"]


def client_for(provider: RunningProvider, **options: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=provider.openai_base_url, api_key="test-key", **options)


def test_chat_completion_is_recorded_once_with_cached_and_reasoning_tokens(
    provider: RunningProvider, recorder: Recorder, tenant: uuid.UUID, owner: psycopg.Connection[Any]
) -> None:
    meter = Meter(recorder)
    client = meter.openai(client_for(provider))
    with attributed(tenant_id=tenant):
        answer = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert answer.choices[0].message.content == "Hello there."
    (row,) = stored(owner, recorder)
    assert row["action"] == "ai:chat:completion"
    assert row["tenant_id"] == tenant
    assert (row["tokens_input"], row["tokens_output"]) == (CHAT["prompt"], CHAT["completion"])
    assert row["metadata"] == {
        "provider": "openai",
        "model": f"gpt-4o-mini{MODEL_SUFFIX}",
        "tokens_cached_input": CHAT["cached"],
        "tokens_reasoning": CHAT["reasoning"],
    }
    assert row["idempotency_key"] == f"openai:{answer.id}"
    assert meter.counters.captured == 1


def test_sdk_retries_and_a_repeated_response_id_store_one_event(
    provider: RunningProvider, recorder: Recorder, tenant: uuid.UUID, owner: psycopg.Connection[Any]
) -> None:
    client = Meter(recorder, tenant_id=tenant).openai(client_for(provider, max_retries=2))
    provider.state.fail_next = 1  # the SDK retries the 500, and the wrapper sees only the final answer
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert len(provider.state.requests) == 2
    provider.state.fixed_id = "chatcmpl-same"
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # the same response again
    rows = stored(owner, recorder)
    assert sorted(row["idempotency_key"] for row in rows) == ["openai:chatcmpl-00000000", "openai:chatcmpl-same"]


def test_stream_asks_for_usage_and_records_at_its_end_without_showing_the_usage_chunk(
    provider: RunningProvider, recorder: Recorder, tenant: uuid.UUID, owner: psycopg.Connection[Any]
) -> None:
    client = Meter(recorder).openai(client_for(provider))
    user_action = "support:chat:reply"
    stream = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=MESSAGES,
        stream=True,
        usagemeter=Attribution(tenant_id=tenant, action=user_action),
    )
    chunks = list(stream)
    assert provider.state.requests[0]["body"]["stream_options"] == {"include_usage": True}
    assert all(chunk.choices for chunk in chunks)  # the caller did not ask for the usage-only chunk
    (row,) = stored(owner, recorder)
    assert (row["action"], row["tenant_id"]) == (user_action, tenant)
    assert (row["tokens_input"], row["tokens_output"]) == (CHAT["prompt"], CHAT["completion"])
    assert row["metadata"]["tokens_cached_input"] == CHAT["cached"]
    assert "stream" not in row["metadata"]


def test_caller_asking_for_usage_still_gets_the_usage_chunk(
    provider: RunningProvider, recorder: Recorder, tenant: uuid.UUID, owner: psycopg.Connection[Any]
) -> None:
    client = Meter(recorder, tenant_id=tenant).openai(client_for(provider))
    with client.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    ) as stream:
        last = list(stream)[-1]
    assert last.usage is not None
    assert last.usage.prompt_tokens == CHAT["prompt"]
    assert len(stored(owner, recorder)) == 1


@pytest.mark.parametrize("how", ["close", "garbage"])
def test_stream_stopped_early_records_once_as_stopped_early(
    how: str, provider: RunningProvider, recorder: Recorder, tenant: uuid.UUID, owner: psycopg.Connection[Any]
) -> None:
    client = Meter(recorder, tenant_id=tenant).openai(client_for(provider))
    stream = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
    first = next(stream)
    next(stream)
    if how == "close":
        stream.close()
        stream.close()  # closing again records nothing more
    else:
        del stream
        gc.collect()
    (row,) = stored(owner, recorder)
    # Chat Completions report usage only in the last chunk: nothing was reported when the caller stopped.
    assert (row["tokens_input"], row["tokens_output"]) == (0, 0)
    assert row["metadata"]["stream"] == "stopped_early"
    assert row["idempotency_key"] == f"openai:{first.id}"


def test_responses_api_plain_and_streamed(
    provider: RunningProvider, recorder: Recorder, tenant: uuid.UUID, owner: psycopg.Connection[Any]
) -> None:
    client = Meter(recorder, tenant_id=tenant, action="agent:research:answer").openai(client_for(provider))
    plain = client.responses.create(model="gpt-5-mini", input="Say hello.")
    events = list(client.responses.create(model="gpt-5-mini", input="Say hello.", stream=True))
    assert events[-1].type == "response.completed"
    rows = stored(owner, recorder)
    assert [row["idempotency_key"] for row in rows] == [f"openai:{plain.id}", f"openai:{events[-1].response.id}"]
    for row in rows:
        assert row["action"] == "agent:research:answer"
        assert (row["tokens_input"], row["tokens_output"]) == (RESPONSES["input"], RESPONSES["output"])
        assert row["metadata"]["model"] == f"gpt-5-mini{MODEL_SUFFIX}"
        assert row["metadata"]["tokens_cached_input"] == RESPONSES["cached"]
        assert row["metadata"]["tokens_cache_write"] == RESPONSES["cache_write"]
        assert row["metadata"]["tokens_reasoning"] == RESPONSES["reasoning"]


def test_async_client_plain_streamed_and_stopped_early(
    provider: RunningProvider, recorder: Recorder, tenant: uuid.UUID, owner: psycopg.Connection[Any]
) -> None:
    meter = Meter(recorder)
    user = factories.add_user(owner)

    async def calls() -> None:
        client = meter.openai(openai.AsyncOpenAI(base_url=provider.openai_base_url, api_key="test-key"))
        with attributed(tenant_id=tenant, metadata={"feature": "async"}):
            await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
            stream = await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
            assert len([chunk async for chunk in stream]) == 42
            events = await client.responses.create(model="gpt-5-mini", input="hi", stream=True)
            async for _ in events:
                break
            await events.close()
            await client.chat.completions.create(
                model="gpt-4o-mini", messages=MESSAGES, usagemeter=Attribution(user_id=user)
            )

    asyncio.run(calls())
    rows = stored(owner, recorder)
    assert [(row["tokens_input"], row["tokens_output"]) for row in rows] == [
        (CHAT["prompt"], CHAT["completion"]),
        (CHAT["prompt"], CHAT["completion"]),
        (0, 0),  # the Responses stream stopped after response.created: no usage reported yet
        (CHAT["prompt"], CHAT["completion"]),
    ]
    assert rows[2]["metadata"]["stream"] == "stopped_early"
    assert all(row["tenant_id"] == tenant and row["metadata"]["feature"] == "async" for row in rows)
    assert [row["user_id"] for row in rows] == [None, None, None, user]


def test_a_call_nobody_is_attributed_for_is_answered_and_counted_as_failed(
    provider: RunningProvider, recorder: Recorder, owner: psycopg.Connection[Any], caplog: pytest.LogCaptureFixture
) -> None:
    meter = Meter(recorder)
    client = meter.openai(client_for(provider))
    answer = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # no tenant, no user
    assert answer.choices[0].message.content == "Hello there."
    assert (meter.counters.captured, meter.counters.failed) == (0, 1)
    assert "could not record" in caplog.text
    assert stored(owner, recorder) == []


def test_wrapping_twice_records_once(
    provider: RunningProvider, recorder: Recorder, tenant: uuid.UUID, owner: psycopg.Connection[Any]
) -> None:
    meter = Meter(recorder, tenant_id=tenant)
    client = meter.openai(meter.openai(client_for(provider)))
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert len(stored(owner, recorder)) == 1


def test_wait_commits_before_the_call_returns_sync_and_async(
    provider: RunningProvider, app_database_url: str, tenant: uuid.UUID, owner: psycopg.Connection[Any], tmp_path: Path
) -> None:
    options = EnqueueOptions(spool_dir=tmp_path / "spool")
    with Recorder(app_database_url, enqueue_options=options) as sync_recorder:
        client = Meter(sync_recorder, tenant_id=tenant, wait=True).openai(client_for(provider))
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        assert factories.count_events(owner) == 1  # no flush: committed before create returned

    async def call() -> None:
        async with AsyncRecorder(app_database_url, enqueue_options=options) as recorder:
            meter = Meter(recorder, tenant_id=tenant, wait=True)
            client = meter.openai(openai.AsyncOpenAI(base_url=provider.openai_base_url, api_key="test-key"))
            await client.responses.create(model="gpt-5-mini", input="hi")
            assert factories.count_events(owner) == 2
            assert recorder.counters.queued == 0  # record(), not enqueue()

    asyncio.run(call())


def test_a_user_face_records_under_rls_and_a_refusal_never_reaches_the_caller(
    provider: RunningProvider, recorder: Recorder, tenant: uuid.UUID, owner: psycopg.Connection[Any]
) -> None:
    alice, foreign = factories.add_user(owner), factories.add_tenant(owner)
    factories.add_member(owner, tenant, alice)
    client = Meter(recorder.as_user(alice)).openai(client_for(provider))
    with attributed(tenant_id=tenant):
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    with attributed(tenant_id=foreign):  # not her tenant: the database refuses, the call is answered
        answer = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert answer.choices[0].message.content == "Hello there."
    (row,) = stored(owner, recorder)
    assert (row["tenant_id"], row["user_id"]) == (tenant, alice)  # the user comes from the face
    assert recorder.counters.rejected == 1
