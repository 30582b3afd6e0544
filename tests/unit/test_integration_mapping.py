"""The SDK capture's pure parts: attribution precedence, keys, metadata, and the providers' usage mappings."""

from __future__ import annotations

import subprocess
import sys
import uuid

import anthropic.types
import openai.types.chat
import openai.types.responses

from usagemeter.integrations import Attribution, Meter, Usage, attributed
from usagemeter.integrations import anthropic as anthropic_capture
from usagemeter.integrations import openai as openai_capture
from usagemeter.recording.event import IDEMPOTENCY_KEY_MAX_LENGTH, UsageEvent


def test_importing_the_integrations_imports_no_sdk() -> None:
    """The SDKs are optional extras: only the module of the one in use imports its SDK."""
    probe = "import sys, usagemeter.integrations; print(sorted({'openai', 'anthropic', 'litellm'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60)
    assert result.stdout.strip() == "[]"


def test_explicit_attribution_beats_the_context_which_beats_the_meter() -> None:
    tenant, user, other = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    meter = Meter.__new__(Meter)  # no recorder needed to resolve attribution
    meter.defaults = Attribution(tenant_id=other, action="ai:chat:completion", metadata={"app": "web", "env": "prod"})
    with attributed(tenant_id=tenant, metadata={"env": "test"}), attributed(user_id=user):
        resolved = meter.attribution(Attribution(action="support:chat:reply"))
    assert resolved == Attribution(
        tenant_id=tenant, user_id=user, action="support:chat:reply", metadata={"app": "web", "env": "test"}
    )
    assert meter.attribution() == meter.defaults  # outside the blocks


def test_idempotency_keys_fit_and_stay_distinct() -> None:
    assert Usage("openai", "chatcmpl-1", None).idempotency_key() == "openai:chatcmpl-1"
    assert Usage("openai", None, None).idempotency_key() is None
    long_a, long_b = "x" * 300, "x" * 299 + "y"
    key_a, key_b = (Usage("openai", rid, None).idempotency_key() for rid in (long_a, long_b))
    assert key_a is not None
    assert key_b is not None
    assert len(key_a) <= IDEMPOTENCY_KEY_MAX_LENGTH
    assert key_a != key_b


def test_openai_chat_and_responses_usage_map_to_valid_events() -> None:
    chat = openai.types.chat.ChatCompletion.model_validate(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 0,
            "model": "gpt-4o-2024-08-06",
            "choices": [],
            "usage": {
                "prompt_tokens": 1000,
                "completion_tokens": 300,
                "total_tokens": 1300,
                "prompt_tokens_details": {"cached_tokens": 800},
                "completion_tokens_details": {"reasoning_tokens": 200},
            },
        }
    )
    usage = openai_capture.usage_of(response_id=chat.id, model=chat.model, usage=chat.usage)
    assert (usage.tokens_input, usage.tokens_output, usage.cached_input, usage.reasoning) == (1000, 300, 800, 200)
    responses_usage = openai.types.responses.ResponseUsage.model_validate(
        {
            "input_tokens": 50,
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": 7,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": 57,
        }
    )
    mapped = openai_capture.usage_of(response_id="resp_1", model="gpt-5", usage=responses_usage)
    assert (mapped.tokens_input, mapped.tokens_output) == (50, 7)
    assert mapped.metadata() == {"provider": "openai", "model": "gpt-5"}  # zero counts are left out
    event = UsageEvent(action="ai:chat:completion", user_id=uuid.uuid4(), metadata=usage.metadata(), tokens_input=1000)
    assert event.metadata["tokens_cached_input"] == 800


def test_anthropic_cache_reads_and_writes_count_as_input() -> None:
    message = anthropic.types.Message.model_validate(
        {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": "claude-sonnet-4-5-20250929",
            "content": [],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {
                "input_tokens": 3,
                "output_tokens": 9,
                "cache_read_input_tokens": 4000,
                "cache_creation_input_tokens": 600,
            },
        }
    )
    usage = anthropic_capture.usage_of_message(message)
    assert (usage.tokens_input, usage.cached_input, usage.cache_write, usage.tokens_output) == (4603, 4000, 600, 9)
    event = UsageEvent(
        action="ai:chat:completion", user_id=uuid.uuid4(), tokens_input=usage.tokens_input, metadata=usage.metadata()
    )  # the cache parts fit in tokens_input, as the database checks
    assert event.metadata["tokens_cache_write"] == 600
