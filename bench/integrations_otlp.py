"""OTLP ingest against record_many: GenAI spans posted to POST /v1/traces, and the same events recorded directly.

Part of bench/integrations.py (its `otlp_vs_record_many`). The API runs in this process on a
loopback socket (uvicorn, as `usagemeter serve` does) with the service role's token; exports of
BATCH spans each (protobuf, built beforehand, as an exporter's batch processor sends them) are
posted one after the other, every span a chat call of one tenant with its token counts. The same
events (one per span: same tenant, counts, metadata and idempotency key) are then written by
`Recorder.record_many` in batches of the same size, in the same run. Both counts are checked.
"""

from __future__ import annotations

import os
import time
import uuid
from typing import Any

import httpx
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from bench import harness
from tests import http_server
from usagemeter import api, db
from usagemeter.api import auth
from usagemeter.otlp import spans as span_mapping
from usagemeter.recording.recorder import Recorder

BATCH = 500


def _export(tenant_id: uuid.UUID, count: int) -> ExportTraceServiceRequest:
    def attribute(key: str, value: int | str) -> KeyValue:
        any_value = AnyValue(int_value=value) if isinstance(value, int) else AnyValue(string_value=value)
        return KeyValue(key=key, value=any_value)

    resource = ResourceSpans()
    resource.resource.attributes.append(attribute("usagemeter.tenant_id", str(tenant_id)))
    scope = ScopeSpans()
    for n in range(count):
        counts = [
            attribute("gen_ai.usage.input_tokens", 100 + n % 900),
            attribute("gen_ai.usage.output_tokens", n % 300),
        ]
        described = [
            attribute("gen_ai.operation.name", "chat"),
            attribute("gen_ai.provider.name", "openai"),
            attribute("gen_ai.response.model", "gpt-4o-mini"),
        ]
        scope.spans.append(
            Span(trace_id=os.urandom(16), span_id=os.urandom(8), name="chat gpt-4o-mini", attributes=described + counts)
        )
    resource.scope_spans.append(scope)
    return ExportTraceServiceRequest(resource_spans=[resource])


def measure_otlp(*, database_url: str, tenant_id: uuid.UUID, spans: int) -> dict[str, Any]:
    """`otlp_vs_record_many` (OTLP spans/s over record_many events/s) and both rates, on a migrated database."""
    exports = [_export(tenant_id, BATCH) for _ in range(max(1, spans // BATCH))]
    bodies = [export.SerializeToString() for export in exports]
    # The same events again, under keys of their own (the OTLP run's are taken by then).
    direct = [
        [{**usage.fields, "idempotency_key": f"direct:{usage.fields['idempotency_key']}"}
         for usage in span_mapping.usage_spans(export)]
        for export in exports
    ]  # fmt: skip
    config = api.ServerConfig(
        app_database_url=harness.app_url(database_url),
        verifier=auth.TokenVerifier(secret=http_server.SECRET, jwks_url=None),
        spool_dir=None,
    )
    with http_server.running_api(config) as running:
        service = {"Authorization": f"Bearer {running.token(role='service_role')}"}
        client = httpx.Client(base_url=running.base_url, timeout=120, headers=service)
        client.post("/v1/traces", content=bodies[0], headers={"Content-Type": "application/x-protobuf"})  # warm-up
        started = time.perf_counter()
        for body in bodies[1:]:
            answer = client.post("/v1/traces", content=body, headers={"Content-Type": "application/x-protobuf"})
            answer.raise_for_status()
        otlp_s = time.perf_counter() - started
        client.close()
    with Recorder(harness.app_url(database_url)) as recorder:
        recorder.record_many(direct[0])  # warm-up, as above
        started = time.perf_counter()
        for batch in direct[1:]:
            recorder.record_many(batch)
        direct_s = time.perf_counter() - started
    timed = BATCH * (len(bodies) - 1)
    with db.connect(database_url) as conn:
        row = conn.execute("select count(*) from public.usage_events where tenant_id = %s", (tenant_id,)).fetchone()
    if row is None or int(row[0]) < 2 * BATCH * len(bodies):
        raise SystemExit(f"stored {row[0] if row else 0} events for {2 * BATCH * len(bodies)} spans and events")
    otlp_rate, direct_rate = timed / otlp_s, timed / direct_s
    return {
        "otlp_spans_per_s": round(otlp_rate),
        "record_many_events_per_s": round(direct_rate),
        "otlp_vs_record_many": round(otlp_rate / direct_rate, 2),
    }
