"""Capture AI usage where it happens: wrap an OpenAI or Anthropic client, or add a LiteLLM callback.

    meter = Meter(recorder)                                  # records through recorder.enqueue
    client = meter.openai(OpenAI())                          # or meter.anthropic(Anthropic())
    with attributed(tenant_id=tenant, user_id=user):
        client.chat.completions.create(model="gpt-4o", messages=[...])

`capture` holds the attribution and the one recording step, `streams` the stream wrappers, and
`openai`, `anthropic` and `litellm` each map one provider's usage (each needs its SDK, an extra).
"""

from __future__ import annotations

from usagemeter.integrations.capture import DEFAULT_ACTION, Attribution, Meter, Usage, attributed

__all__ = ["DEFAULT_ACTION", "Attribution", "Meter", "Usage", "attributed"]
