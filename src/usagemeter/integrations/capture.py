"""Who a model call is for, and the one recording step every integration shares.

Attribution comes from, in rising order: the Meter's defaults, the `attributed(...)` context
(a context variable: it follows threads' and asyncio tasks' contexts) and the explicit
`usagemeter=Attribution(...)` argument of one call. It is resolved when the call starts, so a
stream that ends elsewhere is still recorded for whoever made it.

Recording never raises into the caller: a failure is logged and counted (`Meter.counters`);
events go through `enqueue` by default, whose spool keeps them through a database outage.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from usagemeter.recording.event import IDEMPOTENCY_KEY_MAX_LENGTH, EventFields
from usagemeter.recording.recorder import AsyncRecorder, Recorder

if TYPE_CHECKING:
    from usagemeter.integrations.litellm import UsageCallback

DEFAULT_ACTION = "ai:chat:completion"
log = logging.getLogger("usagemeter.integrations")


@dataclass(frozen=True)
class Attribution:
    """Tenant, user, action and extra metadata of the calls it covers (None: not set here)."""

    tenant_id: uuid.UUID | None = None
    user_id: uuid.UUID | None = None
    action: str | None = None
    metadata: Mapping[str, Any] | None = None

    def over(self, base: Attribution) -> Attribution:
        """This attribution where it is set, `base` elsewhere; metadata is merged (this one wins)."""
        metadata = {**(base.metadata or {}), **(self.metadata or {})} or None
        return Attribution(
            tenant_id=self.tenant_id or base.tenant_id,
            user_id=self.user_id or base.user_id,
            action=self.action or base.action,
            metadata=metadata,
        )


_NOBODY = Attribution()
_current: ContextVar[Attribution | None] = ContextVar("usagemeter_attribution", default=None)


def current_attribution() -> Attribution:
    """What the enclosing `attributed(...)` blocks set (nothing outside them)."""
    return _current.get() or _NOBODY


@contextmanager
def attributed(
    *,
    tenant_id: uuid.UUID | None = None,
    user_id: uuid.UUID | None = None,
    action: str | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> Iterator[Attribution]:
    """Attribute the model calls made inside the block (nested blocks override what they set).

    Parameters
    ----------
    tenant_id, user_id:
        Whom the usage is recorded for (an event needs at least one).
    action:
        `<module>:<domain>:<verb>`; the Meter's action (default ai:chat:completion) otherwise.
    metadata:
        Extra metadata merged into every event (the provider's fields win on a clash).
    """
    here = Attribution(tenant_id=tenant_id, user_id=user_id, action=action, metadata=metadata)
    merged = here.over(current_attribution())
    token = _current.set(merged)
    try:
        yield merged
    finally:
        _current.reset(token)


@dataclass(frozen=True)
class Usage:
    """What a provider reported for one call, in usagemeter's terms.

    `tokens_input` includes cached reads and cache writes (`cached_input`, `cache_write`), which
    billing prices at their own rates; `reasoning` is part of `tokens_output`. `complete` is False
    for a stream the caller stopped before its end: the counts are then what the provider had
    reported by that point (possibly none).
    """

    provider: str
    response_id: str | None
    model: str | None
    tokens_input: int = 0
    tokens_output: int = 0
    cached_input: int = 0
    cache_write: int = 0
    reasoning: int = 0
    complete: bool = True

    def metadata(self) -> dict[str, Any]:
        """The event's metadata: model and provider, and the billing fields that are non-zero."""
        metadata: dict[str, Any] = {"provider": self.provider}
        if self.model:
            metadata["model"] = self.model
        if self.cached_input:
            metadata["tokens_cached_input"] = self.cached_input
        if self.cache_write:
            metadata["tokens_cache_write"] = self.cache_write
        if self.reasoning:
            metadata["tokens_reasoning"] = self.reasoning
        if not self.complete:
            metadata["stream"] = "stopped_early"
        return metadata

    def idempotency_key(self) -> str | None:
        """`<provider>:<response id>`, hashed when longer than a key may be; None without an id."""
        if not self.response_id:
            return None
        key = f"{self.provider}:{self.response_id}"
        if len(key) <= IDEMPOTENCY_KEY_MAX_LENGTH:
            return key
        return f"{self.provider}:sha256:{hashlib.sha256(self.response_id.encode('utf-8')).hexdigest()}"


@dataclass
class MeterCounters:
    """Calls the Meter handed to the recorder (`captured`) and those it could not (`failed`, logged)."""

    captured: int = 0
    failed: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, *, captured: int = 0, failed: int = 0) -> None:
        with self._lock:
            self.captured += captured
            self.failed += failed


class Meter:
    """Records the usage of wrapped AI clients and callbacks through one recorder.

    Parameters
    ----------
    recorder:
        Where events go (a Recorder or AsyncRecorder, as the service role or `as_user`).
    action:
        Default action of the events (`<module>:<domain>:<verb>`).
    tenant_id, user_id, metadata:
        Defaults under the `attributed(...)` context and per-call attributions.
    wait:
        False (default): `enqueue`, which returns at once and spools through outages. True: `record`,
        which returns once committed (adds a round trip to every call; a failure is still only logged).
        With async clients pass an AsyncRecorder, so the commit is awaited instead of blocking the loop.
    """

    def __init__(
        self,
        recorder: Recorder | AsyncRecorder,
        *,
        action: str = DEFAULT_ACTION,
        tenant_id: uuid.UUID | None = None,
        user_id: uuid.UUID | None = None,
        metadata: Mapping[str, Any] | None = None,
        wait: bool = False,
    ) -> None:
        self.recorder = recorder
        self.defaults = Attribution(tenant_id=tenant_id, user_id=user_id, action=action, metadata=metadata)
        self.wait = wait
        self.counters = MeterCounters()

    def attribution(self, explicit: Attribution | None = None) -> Attribution:
        """Whom a call starting now is for: explicit over the current context over the defaults."""
        current = current_attribution().over(self.defaults)
        return current if explicit is None else explicit.over(current)

    def event_fields(self, usage: Usage, attribution: Attribution) -> EventFields:
        """The event recording `usage` for `attribution`."""
        return {
            "action": attribution.action or DEFAULT_ACTION,
            "user_id": attribution.user_id,
            "tenant_id": attribution.tenant_id,
            "tokens_input": usage.tokens_input,
            "tokens_output": usage.tokens_output,
            "metadata": {**(attribution.metadata or {}), **usage.metadata()},
            "idempotency_key": usage.idempotency_key(),
        }

    def capture(self, read: Callable[[], Usage], attribution: Attribution) -> None:
        """Read one call's usage and hand it to the recorder; never raises (failures are logged and counted).

        `read` maps the provider's answer; it runs here so that a mapping failure is caught too.
        """
        try:
            usage = read()
            fields = self.event_fields(usage, attribution)
            if self.wait and isinstance(self.recorder, Recorder):
                self.recorder.record(**fields)
            else:
                self.recorder.enqueue(**fields)
        except Exception:
            self.failed("a model call")
        else:
            self.counters.add(captured=1)

    async def capture_async(self, read: Callable[[], Usage], attribution: Attribution) -> None:
        """As capture, awaiting the commit when `wait` and the recorder is an AsyncRecorder."""
        if not (self.wait and isinstance(self.recorder, AsyncRecorder)):
            self.capture(read, attribution)
            return
        try:
            await self.recorder.record(**self.event_fields(read(), attribution))
        except Exception:
            self.failed("a model call")
        else:
            self.counters.add(captured=1)

    def failed(self, what: str) -> None:
        """Count and log a failure to record (call it while handling the exception)."""
        self.counters.add(failed=1)
        log.exception("usagemeter: could not record the usage of %s", what)

    # -- integrations (each imports its SDK only when used) ------------------------------------

    def openai(self, client: Any) -> Any:  # noqa: ANN401 - returns the very client it was given
        """Meter an `OpenAI` or `AsyncOpenAI` client in place and return it (see integrations/openai.py)."""
        from usagemeter.integrations import openai

        return openai.instrument(client, self)

    def anthropic(self, client: Any) -> Any:  # noqa: ANN401 - returns the very client it was given
        """Meter an `Anthropic` or `AsyncAnthropic` client in place and return it (see integrations/anthropic.py)."""
        from usagemeter.integrations import anthropic

        return anthropic.instrument(client, self)

    def litellm_callback(self) -> UsageCallback:
        """A LiteLLM callback recording every successful call: `litellm.callbacks.append(meter.litellm_callback())`."""
        from usagemeter.integrations.litellm import UsageCallback

        return UsageCallback(self)
