"""A LiteLLM callback that records every successful call from LiteLLM's standard logging payload.

    litellm.callbacks = [meter.litellm_callback()]
    litellm.completion(model="openai/gpt-4o-mini", messages=[...],
                       metadata={"usagemeter_tenant_id": str(tenant)})

LiteLLM calls back once per successful call (a stream: once, when it has been read to its end),
after its own retries and fallbacks. Mapping: prompt_tokens -> tokens_input (cached reads from
usage's prompt_tokens_details.cached_tokens and cache writes from cache_creation_input_tokens
carried as metadata.tokens_cached_input / tokens_cache_write), completion_tokens ->
tokens_output (reasoning tokens in metadata.tokens_reasoning). Answers LiteLLM served from its own
cache cost the provider nothing and are not recorded.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from litellm.integrations.custom_logger import CustomLogger

from usagemeter.integrations.capture import Attribution, Meter, Usage

METADATA_PREFIX = "usagemeter_"  # request metadata keys the callback reads: usagemeter_tenant_id, _user_id, _action


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _uuid(value: object) -> uuid.UUID | None:
    if isinstance(value, uuid.UUID):
        return value
    return uuid.UUID(value) if isinstance(value, str) and value else None


def _detail(usage: Mapping[str, Any], group: str, name: str) -> int:
    details = usage.get(group)
    return _int(details.get(name)) if isinstance(details, Mapping) else 0


def usage_of_payload(payload: Mapping[str, Any], response: Any) -> Usage:  # noqa: ANN401 - LiteLLM's response types
    """Map a StandardLoggingPayload (and the response's model, as the provider answered it)."""
    metadata = payload.get("metadata") or {}
    usage = metadata.get("usage_object") or {}
    tokens_in = _int(payload.get("prompt_tokens"))
    cached = min(_detail(usage, "prompt_tokens_details", "cached_tokens"), tokens_in)
    cache_write = min(_int(usage.get("cache_creation_input_tokens")), tokens_in - cached)
    model = getattr(response, "model", None) or payload.get("model")
    return Usage(
        str(payload.get("custom_llm_provider") or "litellm"),
        payload.get("id") or None,
        model if isinstance(model, str) else None,
        tokens_input=tokens_in,
        tokens_output=_int(payload.get("completion_tokens")),
        cached_input=cached,
        cache_write=cache_write,
        reasoning=_detail(usage, "completion_tokens_details", "reasoning_tokens"),
    )


def attribution_of_request(kwargs: Mapping[str, Any]) -> Attribution:
    """`usagemeter_tenant_id`, `usagemeter_user_id` and `usagemeter_action` from the call's `metadata=`."""
    params = kwargs.get("litellm_params") or {}
    metadata = params.get("metadata") or kwargs.get("metadata") or {}
    return Attribution(
        tenant_id=_uuid(metadata.get(f"{METADATA_PREFIX}tenant_id")),
        user_id=_uuid(metadata.get(f"{METADATA_PREFIX}user_id")),
        action=metadata.get(f"{METADATA_PREFIX}action"),
    )


class UsageCallback(CustomLogger):
    """Records each successful LiteLLM call through a Meter (sync and async calls alike).

    Attribution: the call's `metadata={"usagemeter_tenant_id": ..., "usagemeter_user_id": ...,
    "usagemeter_action": ...}` over the `attributed(...)` context (when LiteLLM runs the callback
    in the caller's context) over the Meter's defaults.
    """

    def __init__(self, meter: Meter) -> None:
        super().__init__()
        self.meter = meter
        # LiteLLM keeps one callback per key: class name plus public str/int/bool attributes. One per Meter.
        self.meter_key = f"meter-{id(meter):x}"

    def _capture(self, kwargs: Mapping[str, Any], response: Any) -> None:  # noqa: ANN401
        payload = kwargs.get("standard_logging_object")
        if not payload or payload.get("cache_hit"):
            return
        try:
            attribution = self.meter.attribution(attribution_of_request(kwargs))
        except Exception:
            self.meter.failed("a LiteLLM call (its usagemeter_* metadata)")
            return
        self.meter.capture(lambda: usage_of_payload(payload, response), attribution)

    def log_success_event(
        self,
        kwargs: dict[str, Any],
        response_obj: Any,  # noqa: ANN401
        start_time: datetime,
        end_time: datetime,
    ) -> None:
        self._capture(kwargs, response_obj)

    async def async_log_success_event(
        self,
        kwargs: dict[str, Any],
        response_obj: Any,  # noqa: ANN401
        start_time: datetime,
        end_time: datetime,
    ) -> None:
        self._capture(kwargs, response_obj)
