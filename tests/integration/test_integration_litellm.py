"""LiteLLM's real completion calls against a local OpenAI-format server, recorded by the usagemeter callback."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no download of the cost map at import

import litellm

from tests import factories
from tests.metering import provider, recorder, stored, tenant
from tests.provider_server import MODEL_SUFFIX, USAGE, RunningProvider
from usagemeter.integrations import Meter
from usagemeter.integrations.litellm import UsageCallback
from usagemeter.recording.recorder import Recorder

__all__ = ["provider", "recorder", "tenant"]  # fixtures

MESSAGES: list[Any] = [{"role": "user", "content": "Say hello."}]
CHAT = USAGE["chat"]


@pytest.fixture
def callback(recorder: Recorder) -> Iterator[UsageCallback]:
    installed = Meter(recorder).litellm_callback()
    litellm.callbacks = [installed]
    try:
        yield installed
    finally:  # LiteLLM promotes callbacks into other lists (and keeps one per class): remove it from all
        litellm.logging_callback_manager.remove_callback_from_all_lists(installed)


def wait_for_captures(callback: UsageCallback, count: int) -> None:
    """LiteLLM calls back from its own worker after the call returns: wait (bounded) for it."""
    deadline = time.monotonic() + 20
    while callback.meter.counters.captured + callback.meter.counters.failed < count:
        assert time.monotonic() < deadline, "LiteLLM did not call back"
        time.sleep(0.02)


def test_completion_is_recorded_from_the_standard_logging_payload(
    provider: RunningProvider,
    callback: UsageCallback,
    recorder: Recorder,
    tenant: uuid.UUID,
    owner: psycopg.Connection[Any],
) -> None:
    user = factories.add_user(owner)
    answer = litellm.completion(
        model="openai/gpt-4o-mini",
        messages=MESSAGES,
        api_base=provider.openai_base_url,
        api_key="test-key",
        metadata={"usagemeter_tenant_id": str(tenant), "usagemeter_user_id": str(user), "usagemeter_action": "a:b:c"},
    )
    wait_for_captures(callback, 1)
    (row,) = stored(owner, recorder)
    assert (row["tenant_id"], row["user_id"], row["action"]) == (tenant, user, "a:b:c")
    assert (row["tokens_input"], row["tokens_output"]) == (CHAT["prompt"], CHAT["completion"])
    assert row["metadata"] == {
        "provider": "openai",
        "model": f"gpt-4o-mini{MODEL_SUFFIX}",
        "tokens_cached_input": CHAT["cached"],
        "tokens_reasoning": CHAT["reasoning"],
    }
    assert row["idempotency_key"] == f"openai:{answer.id}"


def test_async_and_streamed_completions_are_recorded_once_each(
    provider: RunningProvider,
    callback: UsageCallback,
    recorder: Recorder,
    tenant: uuid.UUID,
    owner: psycopg.Connection[Any],
) -> None:
    attribution = {"usagemeter_tenant_id": str(tenant)}

    async def calls() -> None:
        await litellm.acompletion(
            model="openai/gpt-4o-mini",
            messages=MESSAGES,
            api_base=provider.openai_base_url,
            api_key="test-key",
            metadata=attribution,
        )
        stream = await litellm.acompletion(
            model="openai/gpt-4o-mini",
            messages=MESSAGES,
            api_base=provider.openai_base_url,
            api_key="test-key",
            metadata=attribution,
            stream=True,
            stream_options={"include_usage": True},
        )
        assert len([chunk async for chunk in stream]) > 10
        await asyncio.sleep(0.5)  # LiteLLM's async callbacks run as tasks of this loop

    asyncio.run(calls())
    wait_for_captures(callback, 2)
    time.sleep(0.5)  # a second (double) callback would arrive by now
    rows = stored(owner, recorder)
    assert len(rows) == 2
    for row in rows:
        assert row["tenant_id"] == tenant
        assert (row["tokens_input"], row["tokens_output"]) == (CHAT["prompt"], CHAT["completion"])


def test_a_stream_abandoned_early_is_not_reported_by_litellm(
    provider: RunningProvider,
    callback: UsageCallback,
    recorder: Recorder,
    tenant: uuid.UUID,
    owner: psycopg.Connection[Any],
) -> None:
    stream = litellm.completion(
        model="openai/gpt-4o-mini",
        messages=MESSAGES,
        api_base=provider.openai_base_url,
        api_key="test-key",
        metadata={"usagemeter_tenant_id": str(tenant)},
        stream=True,
    )
    for _, _chunk in zip(range(3), stream, strict=False):
        pass
    del stream
    time.sleep(1.0)  # a callback would have come by now
    assert (callback.meter.counters.captured, callback.meter.counters.failed) == (0, 0)
    assert stored(owner, recorder) == []
