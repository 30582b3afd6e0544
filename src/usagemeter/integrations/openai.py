"""Meter an OpenAI client: Chat Completions and the Responses API, plain and streamed, sync and async.

`instrument(client, meter)` replaces `client.chat.completions.create` and `client.responses.create`
on that client object (its type and every other method stay the SDK's). The SDK's own retries
happen inside `create`, so a call is recorded once, after its final answer; the response id is
the event's idempotency key, so recording it again stores nothing twice.

Usage mapping: prompt_tokens / input_tokens -> tokens_input (cached reads and cache writes
included, and also in metadata.tokens_cached_input / tokens_cache_write); completion_tokens /
output_tokens -> tokens_output (reasoning included, and also in metadata.tokens_reasoning).
Streamed chat completions ask for the final usage chunk (`stream_options.include_usage`); when
the meter added that option, the usage-only chunk is not shown to the caller.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import openai
from openai.types.responses import ResponseUsage

from usagemeter.integrations import streams
from usagemeter.integrations.capture import Attribution, Meter, Usage

PROVIDER = "openai"
_MARK = "__usagemeter_meter__"


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _detail(details: object, name: str) -> int:
    return _int(getattr(details, name, None)) if details is not None else 0


def usage_of(*, response_id: str | None, model: str | None, usage: Any, complete: bool = True) -> Usage:  # noqa: ANN401
    """Map a Chat Completions (`CompletionUsage`) or Responses (`ResponseUsage`) usage object; None counts nothing."""
    if usage is None:
        return Usage(PROVIDER, response_id, model, complete=complete)
    if isinstance(usage, ResponseUsage):  # (hasattr on a pydantic model that lacks the field costs µs)
        tokens_in, tokens_out = _int(usage.input_tokens), _int(usage.output_tokens)
        details_in, details_out = usage.input_tokens_details, usage.output_tokens_details
    else:  # Chat Completions
        tokens_in, tokens_out = _int(usage.prompt_tokens), _int(usage.completion_tokens)
        details_in, details_out = usage.prompt_tokens_details, usage.completion_tokens_details
    cached = min(_detail(details_in, "cached_tokens"), tokens_in)
    return Usage(
        PROVIDER,
        response_id,
        model,
        tokens_input=tokens_in,
        tokens_output=tokens_out,
        cached_input=cached,
        cache_write=min(_detail(details_in, "cache_write_tokens"), tokens_in - cached),
        reasoning=_detail(details_out, "reasoning_tokens"),
        complete=complete,
    )


class ChatStreamWatcher:
    """Chat Completions chunks: the id and model come with every chunk, usage with the last one."""

    def __init__(self, *, hide_usage_chunk: bool) -> None:
        self.hide_usage_chunk = hide_usage_chunk
        self.response_id: str | None = None
        self.model: str | None = None
        self.reported: Any = None

    def observe(self, item: Any) -> bool:  # noqa: ANN401
        self.response_id = self.response_id or getattr(item, "id", None)
        self.model = self.model or getattr(item, "model", None)
        usage = getattr(item, "usage", None)
        if usage is None:
            return False
        self.reported = usage
        return self.hide_usage_chunk and not getattr(item, "choices", None)

    def usage(self, *, complete: bool) -> Usage:
        return usage_of(response_id=self.response_id, model=self.model, usage=self.reported, complete=complete)


class ResponsesStreamWatcher:
    """Responses API events: `response.created` names the response, a final event carries its usage."""

    FINAL = frozenset({"response.completed", "response.incomplete", "response.failed"})

    def __init__(self) -> None:
        self.response_id: str | None = None
        self.model: str | None = None
        self.reported: Any = None

    def observe(self, item: Any) -> bool:  # noqa: ANN401
        response = getattr(item, "response", None)
        if response is not None:
            self.response_id = self.response_id or response.id
            self.model = response.model or self.model
            if getattr(item, "type", None) in self.FINAL:
                self.reported = response.usage
        return False

    def usage(self, *, complete: bool) -> Usage:
        return usage_of(response_id=self.response_id, model=self.model, usage=self.reported, complete=complete)


def _chat_stream_kwargs(kwargs: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """Ask for the final usage chunk; True when the meter asked (so the caller does not expect it)."""
    options = kwargs.get("stream_options")
    if isinstance(options, dict) and options.get("include_usage"):
        return kwargs, False
    return {**kwargs, "stream_options": {**(options if isinstance(options, dict) else {}), "include_usage": True}}, True


def _watcher_for(endpoint: str, kwargs: dict[str, Any]) -> tuple[dict[str, Any], streams.UsageWatcher | None]:
    """The arguments to send and, for a stream, what watches it."""
    if not kwargs.get("stream"):
        return kwargs, None
    if endpoint == "chat":
        kwargs, hide = _chat_stream_kwargs(kwargs)
        return kwargs, ChatStreamWatcher(hide_usage_chunk=hide)
    return kwargs, ResponsesStreamWatcher()


def _usage_of_result(result: Any) -> Usage:  # noqa: ANN401
    return usage_of(response_id=getattr(result, "id", None), model=getattr(result, "model", None), usage=result.usage)


def _sync_create(meter: Meter, endpoint: str, create: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(create)
    def metered_create(*args: Any, usagemeter: Attribution | None = None, **kwargs: Any) -> Any:  # noqa: ANN401
        attribution = meter.attribution(usagemeter)
        kwargs, watcher = _watcher_for(endpoint, kwargs)
        result = create(*args, **kwargs)
        if isinstance(result, openai.Stream):
            if watcher is None:
                return result
            return streams.MeteredStream(result, watcher, lambda read: meter.capture(read, attribution))
        meter.capture(lambda: _usage_of_result(result), attribution)
        return result

    setattr(metered_create, _MARK, meter)
    return metered_create


def _async_create(meter: Meter, endpoint: str, create: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(create)
    async def metered_create(*args: Any, usagemeter: Attribution | None = None, **kwargs: Any) -> Any:  # noqa: ANN401
        attribution = meter.attribution(usagemeter)
        kwargs, watcher = _watcher_for(endpoint, kwargs)
        result = await create(*args, **kwargs)
        if isinstance(result, openai.AsyncStream):
            if watcher is None:
                return result
            return streams.AsyncMeteredStream(result, watcher, lambda read: meter.capture(read, attribution))
        await meter.capture_async(lambda: _usage_of_result(result), attribution)
        return result

    setattr(metered_create, _MARK, meter)
    return metered_create


def _replace_create(resource: Any, meter: Meter, endpoint: str, *, is_async: bool) -> None:  # noqa: ANN401
    if getattr(resource.create, _MARK, None) is not None:
        return  # already metered: wrapping twice would record twice
    wrap = _async_create if is_async else _sync_create
    vars(resource)["create"] = wrap(meter, endpoint, resource.create)


def instrument(client: openai.OpenAI | openai.AsyncOpenAI, meter: Meter) -> Any:  # noqa: ANN401
    """Meter `client` in place and return it.

    Parameters
    ----------
    client:
        An `openai.OpenAI` or `openai.AsyncOpenAI` (also Azure's subclasses). Clients made from it
        later (`with_options`, `copy`) are not metered; `with_raw_response` calls are not either.
    meter:
        Where usage goes and whom it is for.

    Returns
    -------
    The same client: `create` of chat.completions and responses accept `usagemeter=Attribution(...)`.
    """
    is_async = isinstance(client, openai.AsyncOpenAI)
    _replace_create(client.chat.completions, meter, "chat", is_async=is_async)
    _replace_create(client.responses, meter, "responses", is_async=is_async)
    return client
