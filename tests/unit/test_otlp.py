"""OTLP decoding and the GenAI span mapping, without a server: both encodings agree, ids stay hex, limits hold."""

from __future__ import annotations

import base64
import gzip
import json

import pytest
from google.protobuf import json_format
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from usagemeter.otlp import decoding, spans

counts = st.integers(min_value=0, max_value=2**40)


def _request(attributes: dict[str, int | str], trace_id: bytes, span_id: bytes) -> ExportTraceServiceRequest:
    def value(v: int | str) -> AnyValue:
        return AnyValue(int_value=v) if isinstance(v, int) else AnyValue(string_value=v)

    span = Span(
        trace_id=trace_id, span_id=span_id, name="chat",
        attributes=[KeyValue(key=k, value=value(v)) for k, v in attributes.items()],
    )  # fmt: skip
    return ExportTraceServiceRequest(resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=[span])])])


def _otlp_json(request: ExportTraceServiceRequest) -> bytes:
    """OTLP/JSON as exporters send it: protobuf's JSON mapping with hex trace and span ids."""
    document = json_format.MessageToDict(request)
    for resource in document["resourceSpans"]:
        for scope in resource["scopeSpans"]:
            for span in scope["spans"]:
                for key in ("traceId", "spanId"):
                    span[key] = base64.b64decode(span[key]).hex()
    return json.dumps(document).encode()


@given(
    tokens_input=counts,
    tokens_output=counts,
    cached=counts,
    trace_id=st.binary(min_size=16, max_size=16),
    span_id=st.binary(min_size=8, max_size=8),
)
def test_protobuf_and_json_give_the_same_usage(
    tokens_input: int, tokens_output: int, cached: int, trace_id: bytes, span_id: bytes
) -> None:
    request = _request(
        {"gen_ai.usage.input_tokens": tokens_input, "gen_ai.usage.output_tokens": tokens_output,
         "gen_ai.usage.cache_read.input_tokens": cached, "gen_ai.response.model": "m-1"},
        trace_id, span_id,
    )  # fmt: skip
    from_protobuf = list(spans.usage_spans(decoding.decode(request.SerializeToString(), "protobuf")))
    from_json = list(spans.usage_spans(decoding.decode(_otlp_json(request), "json")))
    assert from_protobuf == from_json
    [usage] = from_protobuf
    assert usage.fields["tokens_input"] == tokens_input
    assert usage.fields["tokens_output"] == tokens_output
    assert usage.fields["metadata"]["tokens_cached_input"] == cached
    assert usage.fields["idempotency_key"] == f"otlp:{trace_id.hex()}:{span_id.hex()}"


def test_older_attribute_names_and_span_over_resource() -> None:
    request = _request(
        {"gen_ai.usage.prompt_tokens": 5, "gen_ai.usage.completion_tokens": 6, "usagemeter.action": "x:y:z"},
        b"\x01" * 16, b"\x02" * 8,
    )  # fmt: skip
    request.resource_spans[0].resource.attributes.append(
        KeyValue(key="usagemeter.action", value=AnyValue(string_value="resource:level:action"))
    )
    [usage] = spans.usage_spans(request)
    assert (usage.fields["tokens_input"], usage.fields["tokens_output"]) == (5, 6)
    assert usage.fields["action"] == "x:y:z"  # the span's attribute wins over its resource's


def test_a_span_without_usage_is_not_an_event() -> None:
    assert list(spans.usage_spans(_request({"http.method": "GET"}, b"\x01" * 16, b"\x02" * 8))) == []


def test_gzip_is_undone_and_a_bomb_is_refused() -> None:
    assert decoding.decompressed(gzip.compress(b"abc"), "gzip") == b"abc"
    with pytest.raises(decoding.UndecodableRequest, match="larger than"):
        decoding.decompressed(gzip.compress(b"\0" * (decoding.MAX_BODY_BYTES + 1)), "gzip")
    with pytest.raises(decoding.UndecodableRequest, match="corrupt"):
        decoding.decompressed(b"not gzip", "gzip")
    with pytest.raises(decoding.UndecodableRequest, match="Content-Encoding"):
        decoding.decompressed(b"x", "br")


def test_content_types() -> None:
    assert decoding.encoding_of("application/x-protobuf") == "protobuf"
    assert decoding.encoding_of("application/json; charset=utf-8") == "json"
    assert decoding.encoding_of("text/plain") is None
    assert decoding.encoding_of(None) is None
