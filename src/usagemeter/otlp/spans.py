"""GenAI spans (OpenTelemetry's semantic conventions) as usage events.

A span is usage when it carries `gen_ai.usage.input_tokens` or `gen_ai.usage.output_tokens` (or
the older `prompt_tokens` / `completion_tokens`); other spans are acknowledged and ignored.
Attributes on the span override those of its resource. The event's idempotency key is
`otlp:<trace id>:<span id>`, so an exporter's retry of the same spans stores nothing twice.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

# An attribute's value, as OTLP sends scalars (arrays, maps and bytes are not usage: read as None).
Scalar = str | int | float | bool | None

DEFAULT_ACTION = "ai:chat:completion"
INPUT_TOKENS = ("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens")
OUTPUT_TOKENS = ("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens")
MODEL = ("gen_ai.response.model", "gen_ai.request.model")
PROVIDER = ("gen_ai.provider.name", "gen_ai.system")
TENANT = ("usagemeter.tenant_id",)
USER = ("usagemeter.user_id", "enduser.id")
ACTION = ("usagemeter.action",)
# Token details kept in metadata under the names billing prices (see docs/billing.md).
DETAILS = {
    "tokens_cached_input": ("gen_ai.usage.cache_read.input_tokens", "gen_ai.usage.cache_read_input_tokens"),
    "tokens_cache_write": ("gen_ai.usage.cache_creation.input_tokens", "gen_ai.usage.cache_creation_input_tokens"),
    "tokens_reasoning": ("gen_ai.usage.reasoning.output_tokens", "gen_ai.usage.reasoning_tokens"),
}


@dataclass(frozen=True)
class UsageSpan:
    """One span's usage event fields (not validated yet), and the span it came from."""

    trace_id: str
    span_id: str
    fields: dict[str, Any]


def _value(value: AnyValue) -> Scalar:
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return str(value.string_value)
    if kind == "int_value":
        return int(value.int_value)
    if kind == "double_value":
        return float(value.double_value)
    if kind == "bool_value":
        return bool(value.bool_value)
    return None


def _attributes(pairs: Iterable[KeyValue]) -> dict[str, Scalar]:
    return {pair.key: _value(pair.value) for pair in pairs}


def _first(attributes: Mapping[str, Scalar], names: tuple[str, ...]) -> Scalar:
    return next((attributes[name] for name in names if attributes.get(name) is not None), None)


def _count(value: Scalar) -> Scalar:
    """A token count as sent: ints stay ints, integral floats and digit strings become ints; else as is (the
    event's validation then names the field)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return value


def usage_spans(request: ExportTraceServiceRequest) -> Iterator[UsageSpan]:
    """Every span of the request that reports GenAI token usage, as event fields."""
    for resource_spans in request.resource_spans:
        resource = _attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                attributes = {**resource, **_attributes(span.attributes)}
                tokens_input, tokens_output = _first(attributes, INPUT_TOKENS), _first(attributes, OUTPUT_TOKENS)
                if tokens_input is None and tokens_output is None:
                    continue
                trace_id, span_id = span.trace_id.hex(), span.span_id.hex()
                metadata: dict[str, Any] = {"otlp_trace_id": trace_id, "otlp_span_id": span_id}
                for key, names in (("model", MODEL), ("provider", PROVIDER)):
                    if (found := _first(attributes, names)) is not None:
                        metadata[key] = str(found)
                if (operation := attributes.get("gen_ai.operation.name")) is not None:
                    metadata["operation"] = str(operation)
                for key, names in DETAILS.items():
                    if (found := _first(attributes, names)) is not None:
                        metadata[key] = _count(found)
                yield UsageSpan(
                    trace_id,
                    span_id,
                    {
                        "action": str(_first(attributes, ACTION) or DEFAULT_ACTION),
                        "tenant_id": _first(attributes, TENANT),
                        "user_id": _first(attributes, USER),
                        "tokens_input": _count(tokens_input or 0),
                        "tokens_output": _count(tokens_output or 0),
                        "metadata": metadata,
                        "idempotency_key": f"otlp:{trace_id}:{span_id}",
                    },
                )
