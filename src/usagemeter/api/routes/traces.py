"""POST /v1/traces: OpenTelemetry's OTLP/HTTP trace export, GenAI spans recorded as usage events.

Authenticated like every route; each span's event is written as the caller, under RLS. Answers as
OTLP/HTTP asks (in the request's encoding): 200 with `partial_success` naming how many spans were
refused (a tenant the caller is not in, invalid attributes), 400 with a google.rpc.Status for a
body that does not decode (not retryable), 415 for another Content-Type, 503 with Retry-After when
the database is unavailable (the exporter retries: each span's key, `otlp:<trace id>:<span id>`,
makes the retry store nothing twice), 501 without the `otlp` extra.
"""

from __future__ import annotations

import importlib.util
from typing import Any, cast

from fastapi import APIRouter, Request, Response

from usagemeter import errors
from usagemeter.api.deps import Caller, ServerDep
from usagemeter.api.server import Server
from usagemeter.db import Identity
from usagemeter.recording import recorder as recording_faces
from usagemeter.recording.event import EventFields, UsageEvent

router = APIRouter(tags=["traces"])

OTLP_INSTALLED = importlib.util.find_spec("opentelemetry.proto") is not None
RETRY_AFTER_SECONDS = "5"
GRPC_INVALID_ARGUMENT, GRPC_UNAVAILABLE, GRPC_UNIMPLEMENTED = 3, 14, 12
MEDIA_TYPES = {"protobuf": "application/x-protobuf", "json": "application/json"}


@router.post("/v1/traces", include_in_schema=False)
async def post_traces(request: Request, caller: Caller, server: ServerDep) -> Response:
    """Record the usage GenAI spans report (OTLP/HTTP, protobuf or JSON, identity or gzip)."""
    if not OTLP_INSTALLED:
        return Response(
            b'{"code": 12, "message": "OTLP ingest needs the otlp extra: pip install \'usagemeter[otlp]\'"}',
            status_code=501,
            media_type="application/json",
        )
    from usagemeter.otlp import decoding, spans

    encoding = decoding.encoding_of(request.headers.get("content-type"))
    if encoding is None:
        return Response(
            decoding.status_body(GRPC_INVALID_ARGUMENT, "send application/x-protobuf or application/json", "json"),
            status_code=415,
            media_type="application/json",
        )
    media_type = MEDIA_TYPES[encoding]
    try:
        body = decoding.decompressed(await request.body(), request.headers.get("content-encoding"))
        export = decoding.decode(body, encoding)
    except decoding.UndecodableRequest as failure:
        return Response(
            decoding.status_body(GRPC_INVALID_ARGUMENT, str(failure), encoding), status_code=400, media_type=media_type
        )
    found = list(spans.usage_spans(export))
    try:
        rejected, message = await _record(server, caller, [span.fields for span in found])
    except errors.DatabaseUnavailable as failure:
        return Response(
            decoding.status_body(GRPC_UNAVAILABLE, str(failure), encoding),
            status_code=503,
            media_type=media_type,
            headers={"Retry-After": RETRY_AFTER_SECONDS},
        )
    server.metrics.events_recorded.inc(len(found) - rejected)
    return Response(decoding.response_body(rejected, message, encoding), status_code=200, media_type=media_type)


async def _record(server: Server, caller: Identity, items: list[dict[str, Any]]) -> tuple[int, str]:
    """Store what the caller may store; (how many spans were refused, why the first was)."""
    face = server.recorder.as_identity(caller)
    valid: list[UsageEvent] = []
    refusals: list[str] = []
    for index, item in enumerate(items):
        if caller.user_id is not None and item.get("user_id") is None:
            item = {**item, "user_id": str(caller.user_id)}
        try:
            valid.extend(recording_faces.validate_events([item], offset=index))
        except errors.InvalidEvent as failure:
            refusals.append(str(failure))
    if not valid:
        return len(refusals), refusals[0] if refusals else ""
    try:
        await face.record_many(valid)  # one transaction for the export: the usual case, all allowed
    except errors.DatabaseUnavailable:
        raise
    except errors.UsagemeterError:
        # Something was refused (RLS, a hard budget): each span on its own, to store what is allowed.
        for event in valid:
            try:
                await face.record(**cast(EventFields, event.model_dump()))
            except errors.DatabaseUnavailable:
                raise
            except errors.UsagemeterError as failure:
                refusals.append(str(failure))
    return len(refusals), refusals[0] if refusals else ""
