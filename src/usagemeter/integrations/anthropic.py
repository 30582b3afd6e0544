"""Meter an Anthropic client: `messages.create` (plain and `stream=True`) and `messages.stream`, sync and async.

`instrument(client, meter)` replaces those two methods on `client.messages` (the public API, not
the client's private request path), so the SDK's retries stay inside the call and a call is
recorded once, after its final answer, with the message id as idempotency key.

Usage mapping: Anthropic reports cache reads and cache writes apart from `input_tokens`; all
three count as input (tokens_input = input_tokens + cache_read_input_tokens +
cache_creation_input_tokens), and the two cache parts are carried as metadata.tokens_cached_input
and metadata.tokens_cache_write, which billing prices at their own rates. Thinking tokens (part
of output_tokens) go to metadata.tokens_reasoning.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import anthropic

from usagemeter.integrations import streams
from usagemeter.integrations.capture import Attribution, Meter, Usage

PROVIDER = "anthropic"
_MARK = "__usagemeter_meter__"


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _thinking(usage: Any) -> int:  # noqa: ANN401
    return _int(getattr(getattr(usage, "output_tokens_details", None), "thinking_tokens", None))


class _Counts:
    """Anthropic's usage counts as they arrive (message_start, then cumulative message_delta updates)."""

    def __init__(self) -> None:
        self.input = self.cache_read = self.cache_write = self.output = self.thinking = 0

    def update(self, usage: Any) -> None:  # noqa: ANN401 - anthropic Usage or MessageDeltaUsage
        """Take every count `usage` carries (message_delta leaves the input counts None when unchanged)."""
        for name, value in (
            ("input", usage.input_tokens),
            ("cache_read", getattr(usage, "cache_read_input_tokens", None)),
            ("cache_write", getattr(usage, "cache_creation_input_tokens", None)),
            ("output", usage.output_tokens),
        ):
            if isinstance(value, int):
                setattr(self, name, value)
        self.thinking = _thinking(usage) or self.thinking

    def usage(self, *, response_id: str | None, model: str | None, complete: bool) -> Usage:
        return Usage(
            PROVIDER,
            response_id,
            model,
            tokens_input=self.input + self.cache_read + self.cache_write,
            tokens_output=self.output,
            cached_input=self.cache_read,
            cache_write=self.cache_write,
            reasoning=self.thinking,
            complete=complete,
        )


def usage_of_message(message: Any, *, complete: bool = True) -> Usage:  # noqa: ANN401 - anthropic Message
    """Map a Message's usage."""
    counts = _Counts()
    if message.usage is not None:
        counts.update(message.usage)
    return counts.usage(response_id=message.id, model=message.model, complete=complete)


class MessageStreamWatcher:
    """Raw stream events: message_start names the message and its input, message_delta updates the counts."""

    def __init__(self) -> None:
        self.response_id: str | None = None
        self.model: str | None = None
        self.counts = _Counts()

    def observe(self, item: Any) -> bool:  # noqa: ANN401
        kind = getattr(item, "type", None)
        if kind == "message_start":
            self.response_id, self.model = item.message.id, item.message.model
            self.counts.update(item.message.usage)
        elif kind == "message_delta" and item.usage is not None:
            self.counts.update(item.usage)
        return False

    def usage(self, *, complete: bool) -> Usage:
        return self.counts.usage(response_id=self.response_id, model=self.model, complete=complete)


def _snapshot_usage(stream: Any) -> Usage:  # noqa: ANN401 - anthropic MessageStream
    """What a `messages.stream` stream had accumulated: complete once the message has its stop reason."""
    try:
        snapshot = stream.current_message_snapshot  # asserts when no message_start arrived
    except AssertionError:
        snapshot = None
    if snapshot is None:
        return Usage(PROVIDER, None, None, complete=False)
    return usage_of_message(snapshot, complete=snapshot.stop_reason is not None)


class _MeteredStreamManager:
    """`messages.stream(...)`'s context manager, recording what the stream saw when the block ends."""

    def __init__(self, inner: Any, on_usage: Callable[[Callable[[], Usage]], None]) -> None:  # noqa: ANN401
        self._inner = inner
        self._on_usage = on_usage
        self._stream: Any = None

    def __enter__(self) -> Any:  # noqa: ANN401 - the SDK's MessageStream, untouched
        self._stream = self._inner.__enter__()
        return self._stream

    def __exit__(self, *exc_info: object) -> None:
        try:
            self._inner.__exit__(*exc_info)
        finally:
            self._on_usage(lambda: _snapshot_usage(self._stream))

    async def __aenter__(self) -> Any:  # noqa: ANN401 - the SDK's AsyncMessageStream, untouched
        self._stream = await self._inner.__aenter__()
        return self._stream

    async def __aexit__(self, *exc_info: object) -> None:
        try:
            await self._inner.__aexit__(*exc_info)
        finally:
            self._on_usage(lambda: _snapshot_usage(self._stream))


def _sync_create(meter: Meter, create: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(create)
    def metered_create(*args: Any, usagemeter: Attribution | None = None, **kwargs: Any) -> Any:  # noqa: ANN401
        attribution = meter.attribution(usagemeter)
        result = create(*args, **kwargs)
        if isinstance(result, anthropic.Stream):
            watcher = MessageStreamWatcher()
            return streams.MeteredStream(result, watcher, lambda read: meter.capture(read, attribution))
        meter.capture(lambda: usage_of_message(result), attribution)
        return result

    return metered_create


def _async_create(meter: Meter, create: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(create)
    async def metered_create(*args: Any, usagemeter: Attribution | None = None, **kwargs: Any) -> Any:  # noqa: ANN401
        attribution = meter.attribution(usagemeter)
        result = await create(*args, **kwargs)
        if isinstance(result, anthropic.AsyncStream):
            return streams.AsyncMeteredStream(
                result, MessageStreamWatcher(), lambda read: meter.capture(read, attribution)
            )
        await meter.capture_async(lambda: usage_of_message(result), attribution)
        return result

    return metered_create


def _stream(meter: Meter, stream: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(stream)
    def metered_stream(*args: Any, usagemeter: Attribution | None = None, **kwargs: Any) -> Any:  # noqa: ANN401
        attribution = meter.attribution(usagemeter)
        return _MeteredStreamManager(stream(*args, **kwargs), lambda read: meter.capture(read, attribution))

    return metered_stream


def instrument(client: anthropic.Anthropic | anthropic.AsyncAnthropic, meter: Meter) -> Any:  # noqa: ANN401
    """Meter `client` in place and return it.

    Parameters
    ----------
    client:
        An `anthropic.Anthropic` or `anthropic.AsyncAnthropic`. Clients made from it later
        (`with_options`, `copy`), `client.beta.messages` and `with_raw_response` calls are not metered.
    meter:
        Where usage goes and whom it is for.

    Returns
    -------
    The same client: `messages.create` and `messages.stream` accept `usagemeter=Attribution(...)`.
    """
    messages = client.messages
    if getattr(messages.create, _MARK, None) is not None:
        return client  # already metered: wrapping twice would record twice
    is_async = isinstance(client, anthropic.AsyncAnthropic)
    create = (_async_create if is_async else _sync_create)(meter, messages.create)
    stream = _stream(meter, messages.stream)
    for function in (create, stream):
        setattr(function, _MARK, meter)
    vars(messages).update(create=create, stream=stream)
    return client
