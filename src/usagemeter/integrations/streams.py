"""Streams that record their usage once: at their end, or when the caller stops early (close, exit or GC).

The wrapper passes every item through (except those its watcher hides: the usage-only chunk the
meter asked for and the caller did not) and delegates every other attribute to the SDK's stream.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Protocol

from usagemeter.integrations.capture import Usage, log

OnUsage = Callable[[Callable[[], Usage]], None]  # called once with a reader of the stream's usage


class UsageWatcher(Protocol):
    """Reads a provider's stream items and says what usage they reported."""

    def observe(self, item: Any) -> bool:  # noqa: ANN401 - items are the SDK's event types
        """Note what `item` reports; True hides it from the caller."""
        ...

    def usage(self, *, complete: bool) -> Usage:
        """The usage reported so far (`complete`: the stream reached its end)."""
        ...


class _Once:
    """Passes items to the watcher, and records its usage the first time the stream ends, however it ends."""

    def __init__(self, watcher: UsageWatcher, on_usage: OnUsage) -> None:
        self._watcher = watcher
        self._on_usage = on_usage
        self._lock = threading.Lock()
        self._done = False

    def finish(self, *, complete: bool) -> None:
        with self._lock:
            if self._done:
                return
            self._done = True
        self._on_usage(lambda: self._watcher.usage(complete=complete))

    def observe(self, item: Any) -> bool:  # noqa: ANN401
        """The watcher's verdict on `item` (hide it?); a watcher that fails is logged, and the item shown."""
        try:
            return self._watcher.observe(item)
        except Exception:
            log.exception("usagemeter: could not read a stream item's usage")
            return False


class MeteredStream:
    """A synchronous SDK stream (openai.Stream, anthropic.Stream) that records its usage once."""

    def __init__(self, inner: Any, watcher: UsageWatcher, on_usage: OnUsage) -> None:  # noqa: ANN401
        self._inner = inner
        self._iterator = iter(inner)
        self._once = _Once(watcher, on_usage)

    def __iter__(self) -> MeteredStream:
        return self

    def __next__(self) -> Any:  # noqa: ANN401 - the SDK's item type
        while True:
            try:
                item = next(self._iterator)
            except StopIteration:
                self._once.finish(complete=True)
                raise
            except BaseException:
                self._once.finish(complete=False)
                raise
            if not self._once.observe(item):
                return item

    def close(self) -> None:
        """Close the SDK's stream; usage not recorded yet is recorded as stopped early."""
        try:
            self._inner.close()
        finally:
            self._once.finish(complete=False)

    def __enter__(self) -> MeteredStream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        once = self.__dict__.get("_once")
        if once is not None:
            once.finish(complete=False)

    def __getattr__(self, name: str) -> Any:  # noqa: ANN401 - whatever the SDK's stream has
        return getattr(self._inner, name)


class AsyncMeteredStream:
    """An asyncio SDK stream (openai.AsyncStream, anthropic.AsyncStream) that records its usage once."""

    def __init__(self, inner: Any, watcher: UsageWatcher, on_usage: OnUsage) -> None:  # noqa: ANN401
        self._inner = inner
        self._iterator = inner.__aiter__()
        self._once = _Once(watcher, on_usage)

    def __aiter__(self) -> AsyncMeteredStream:
        return self

    async def __anext__(self) -> Any:  # noqa: ANN401 - the SDK's item type
        while True:
            try:
                item = await self._iterator.__anext__()
            except StopAsyncIteration:
                self._once.finish(complete=True)
                raise
            except BaseException:
                self._once.finish(complete=False)
                raise
            if not self._once.observe(item):
                return item

    async def close(self) -> None:
        """Close the SDK's stream; usage not recorded yet is recorded as stopped early."""
        try:
            await self._inner.close()
        finally:
            self._once.finish(complete=False)

    async def __aenter__(self) -> AsyncMeteredStream:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __del__(self) -> None:
        once = self.__dict__.get("_once")
        if once is not None:
            once.finish(complete=False)

    def __getattr__(self, name: str) -> Any:  # noqa: ANN401 - whatever the SDK's stream has
        return getattr(self._inner, name)
