"""POST /v1/traces over a real socket: the OpenTelemetry SDK's OTLP/HTTP exporter sending real GenAI spans."""

from __future__ import annotations

import gzip
import json
import uuid
from typing import Any

import psycopg
import pytest
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

from tests import factories
from tests.http_server import RunningApi


class Keeping(SpanExporter):
    """Keeps the finished spans, so a test can send the very same batch again."""

    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def export(self, spans: Any) -> SpanExportResult:
        self.spans.extend(spans)
        return SpanExportResult.SUCCESS


@pytest.fixture
def member(owner: psycopg.Connection[Any]) -> tuple[uuid.UUID, uuid.UUID]:
    user, tenant = factories.add_user(owner), factories.add_tenant(owner)
    factories.add_member(owner, tenant, user)
    return user, tenant


def _spans(tenant: uuid.UUID | None, resource: dict[str, Any] | None = None) -> list[ReadableSpan]:
    """Three finished spans: two chat calls with usage (one with cache and reasoning detail), one without."""
    keeping = Keeping()
    provider = TracerProvider(resource=Resource.create(resource or {"service.name": "otlp-test"}))
    provider.add_span_processor(SimpleSpanProcessor(keeping))
    tracer = provider.get_tracer("usagemeter-tests")
    common = {"usagemeter.tenant_id": str(tenant)} if tenant else {}
    with tracer.start_as_current_span("chat gpt-4o", attributes={
        **common, "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o", "gen_ai.response.model": "gpt-4o-2024-08-06",
        "gen_ai.usage.input_tokens": 120, "gen_ai.usage.output_tokens": 30,
        "gen_ai.usage.cache_read.input_tokens": 100, "gen_ai.usage.reasoning.output_tokens": 12,
        "usagemeter.action": "support:chat:reply",
    }):  # fmt: skip
        pass
    with tracer.start_as_current_span("http get"):
        pass  # no GenAI usage: acknowledged, ignored
    with tracer.start_as_current_span("chat claude", attributes={
        **common, "gen_ai.operation.name": "chat", "gen_ai.system": "anthropic",
        "gen_ai.request.model": "claude-sonnet", "gen_ai.usage.input_tokens": 7, "gen_ai.usage.output_tokens": 3,
    }):  # fmt: skip
        pass
    provider.shutdown()
    return keeping.spans


def _export(api: RunningApi, token: str, spans: list[ReadableSpan], **options: Any) -> SpanExportResult:
    exporter = OTLPSpanExporter(
        endpoint=f"{api.base_url}/v1/traces", headers={"Authorization": f"Bearer {token}"}, timeout=10, **options
    )
    try:
        return exporter.export(spans)
    finally:
        exporter.shutdown()  # type: ignore[no-untyped-call]  # the SDK's method has no annotations


def _stored(owner: psycopg.Connection[Any], tenant: uuid.UUID) -> list[tuple[Any, ...]]:
    return owner.execute(
        "select action, user_id, tokens_input, tokens_output, metadata from public.usage_events"
        " where tenant_id = %s order by tokens_input",
        (tenant,),
    ).fetchall()


def test_the_sdk_exporter_records_one_event_per_genai_span_and_a_resend_adds_nothing(
    api_server: RunningApi, owner: psycopg.Connection[Any], member: tuple[uuid.UUID, uuid.UUID]
) -> None:
    user, tenant = member
    spans = _spans(tenant)
    first = _export(api_server, api_server.token(user), spans)
    again = _export(api_server, api_server.token(user), spans, compression=Compression.Gzip)  # a retried batch
    rows = _stored(owner, tenant)
    assert first == again == SpanExportResult.SUCCESS
    assert [(r[0], r[1], r[2], r[3]) for r in rows] == [
        ("ai:chat:completion", user, 7, 3),
        ("support:chat:reply", user, 120, 30),
    ]
    chat = rows[1][4]
    assert chat["model"] == "gpt-4o-2024-08-06"  # as the provider answered
    assert (chat["tokens_cached_input"], chat["tokens_reasoning"]) == (100, 12)
    assert (chat["operation"], chat["provider"]) == ("chat", "openai")
    assert rows[0][4]["provider"] == "anthropic"
    assert len(chat["otlp_trace_id"]) == 32
    assert len(chat["otlp_span_id"]) == 16


def test_a_span_for_a_tenant_the_user_is_not_in_is_refused_as_a_partial_success(
    api_server: RunningApi, owner: psycopg.Connection[Any], member: tuple[uuid.UUID, uuid.UUID]
) -> None:
    user, tenant = member
    foreign = factories.add_tenant(owner)
    spans = _spans(tenant) + _spans(foreign)
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    body = encode_spans(spans).SerializeToString()
    answer = api_server.as_user(user).post(
        "/v1/traces", content=body, headers={"Content-Type": "application/x-protobuf"}
    )
    response = ExportTraceServiceResponse()
    response.ParseFromString(answer.content)
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/x-protobuf"
    assert response.partial_success.rejected_spans == 2
    assert response.partial_success.error_message
    assert len(_stored(owner, tenant)) == 2
    assert _stored(owner, foreign) == []


def test_the_service_role_records_json_spans_for_a_named_user(
    api_server: RunningApi, owner: psycopg.Connection[Any], member: tuple[uuid.UUID, uuid.UUID]
) -> None:
    user, tenant = member
    trace_id, span_id = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    document = {"resourceSpans": [{
        "resource": {"attributes": [{"key": "usagemeter.tenant_id", "value": {"stringValue": str(tenant)}}]},
        "scopeSpans": [{"spans": [{
            "traceId": trace_id, "spanId": span_id, "name": "chat", "kind": 3,
            "startTimeUnixNano": "1764892800000000000", "endTimeUnixNano": "1764892801000000000",
            "attributes": [
                {"key": "enduser.id", "value": {"stringValue": str(user)}},
                {"key": "gen_ai.request.model", "value": {"stringValue": "gpt-4o-mini"}},
                {"key": "gen_ai.usage.input_tokens", "value": {"intValue": "40"}},
                {"key": "gen_ai.usage.output_tokens", "value": {"intValue": "2"}},
            ],
        }]}],
    }]}  # fmt: skip
    client = api_server.as_service()
    plain = client.post("/v1/traces", json=document)
    zipped = client.post(
        "/v1/traces",
        content=gzip.compress(json.dumps(document).encode()),
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    rows = _stored(owner, tenant)
    assert (plain.status_code, zipped.status_code) == (200, 200)
    assert plain.json() == {}  # no partial_success: everything was accepted
    assert [(r[1], r[2], r[3], r[4]["model"], r[4]["otlp_span_id"]) for r in rows] == [
        (user, 40, 2, "gpt-4o-mini", span_id)
    ]
    key = owner.execute("select idempotency_key from public.usage_events where tenant_id = %s", (tenant,)).fetchone()
    assert key == (f"otlp:{trace_id}:{span_id}",)


@pytest.mark.parametrize(
    ("content_type", "body", "status"),
    [
        ("application/x-protobuf", b"\xff\xff\xff not protobuf", 400),
        ("application/json", b"{not json", 400),
        ("application/json", b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz"}]}]}]}', 400),
        ("text/plain", b"hello", 415),
    ],
)
def test_bad_bodies_get_the_otlp_error_answer_not_a_500(
    api_server: RunningApi, member: tuple[uuid.UUID, uuid.UUID], content_type: str, body: bytes, status: int
) -> None:
    user, _ = member
    answer = api_server.as_user(user).post("/v1/traces", content=body, headers={"Content-Type": content_type})
    assert answer.status_code == status
    if content_type == "application/json" or status == 415:
        assert answer.json()["message"]


def test_an_export_without_a_token_is_unauthorized(api_server: RunningApi) -> None:
    answer = api_server.client().post("/v1/traces", content=b"", headers={"Content-Type": "application/x-protobuf"})
    assert answer.status_code == 401


def test_spans_without_usage_are_acknowledged_and_store_nothing(
    api_server: RunningApi, owner: psycopg.Connection[Any], member: tuple[uuid.UUID, uuid.UUID]
) -> None:
    user, tenant = member
    keeping = Keeping()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(keeping))
    with provider.get_tracer("t").start_as_current_span("db query", attributes={"usagemeter.tenant_id": str(tenant)}):
        pass
    provider.shutdown()
    assert _export(api_server, api_server.token(user), keeping.spans) == SpanExportResult.SUCCESS
    assert _stored(owner, tenant) == []
