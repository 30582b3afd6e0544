"""OTLP/HTTP trace export bodies: protobuf or JSON, plain or gzip, decoded with opentelemetry-proto.

The JSON encoding is protobuf's JSON mapping except that trace and span ids are hex, not base64
(the OTLP specification's one deviation), so they are turned into base64 before parsing.
"""

from __future__ import annotations

import base64
import json
import zlib
from typing import Any, Literal, cast

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

Encoding = Literal["protobuf", "json"]
CONTENT_TYPES: dict[str, Encoding] = {"application/x-protobuf": "protobuf", "application/json": "json"}
# A decompressed body larger than this is refused (a gzip bomb costs the server nothing then).
MAX_BODY_BYTES = 32 * 1024 * 1024
ID_FIELDS = ("traceId", "spanId", "parentSpanId")


class UndecodableRequest(ValueError):
    """The body is not an ExportTraceServiceRequest in the declared encoding (OTLP: 400, not retryable)."""


def encoding_of(content_type: str | None) -> Encoding | None:
    """The OTLP encoding a Content-Type names, or None for any other type (OTLP: 415)."""
    media = (content_type or "").split(";")[0].strip().lower()
    return CONTENT_TYPES.get(media)


def decompressed(body: bytes, content_encoding: str | None) -> bytes:
    """The body without its Content-Encoding (identity or gzip), at most MAX_BODY_BYTES."""
    coding = (content_encoding or "identity").strip().lower()
    if coding in ("", "identity"):
        data = body
    elif coding == "gzip":
        try:
            reader = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
            data = reader.decompress(body, MAX_BODY_BYTES + 1)
        except zlib.error as failure:
            raise UndecodableRequest(f"the gzip body is corrupt: {failure}") from None
    else:
        raise UndecodableRequest(f"unsupported Content-Encoding {coding!r} (send identity or gzip)")
    if len(data) > MAX_BODY_BYTES:
        raise UndecodableRequest(f"the body is larger than {MAX_BODY_BYTES:,} bytes once decompressed")
    return data


def decode(data: bytes, encoding: Encoding) -> ExportTraceServiceRequest:
    """Parse an export request; UndecodableRequest says what is wrong."""
    request = ExportTraceServiceRequest()
    if encoding == "protobuf":
        try:
            request.ParseFromString(data)
        except (DecodeError, RuntimeError) as failure:
            raise UndecodableRequest(f"not an ExportTraceServiceRequest in protobuf: {failure}") from None
        return request
    try:
        document = json.loads(data)
    except (ValueError, RecursionError):
        raise UndecodableRequest("the body is not valid JSON") from None
    if not isinstance(document, dict):
        raise UndecodableRequest("the JSON body must be an object with resourceSpans")
    try:
        json_format.ParseDict(cast(dict[str, Any], _ids_as_base64(document)), request, ignore_unknown_fields=True)
    except (json_format.ParseError, ValueError, TypeError) as failure:
        raise UndecodableRequest(f"not an ExportTraceServiceRequest in JSON: {failure}") from None
    return request


def _ids_as_base64(node: object) -> object:
    """The document with every hex trace or span id (OTLP/JSON) as base64 (protobuf's JSON mapping of bytes)."""
    if isinstance(node, list):
        return [_ids_as_base64(item) for item in node]
    if not isinstance(node, dict):
        return node
    converted: dict[str, object] = {}
    for key, value in node.items():
        if key in ID_FIELDS and isinstance(value, str):
            try:
                value = base64.b64encode(bytes.fromhex(value)).decode("ascii")
            except ValueError:
                raise UndecodableRequest(f"{key} {value[:40]!r} is not hex") from None
        converted[key] = _ids_as_base64(value)
    return converted


def response_body(rejected_spans: int, error_message: str, encoding: Encoding) -> bytes:
    """An ExportTraceServiceResponse, with partial_success when spans were rejected."""
    response = ExportTraceServiceResponse()
    if rejected_spans:
        response.partial_success.rejected_spans = rejected_spans
        response.partial_success.error_message = error_message
    if encoding == "protobuf":
        return bytes(response.SerializeToString())
    return json.dumps(json_format.MessageToDict(response)).encode("utf-8")


def status_body(code: int, message: str, encoding: Encoding) -> bytes:
    """A google.rpc.Status (what OTLP/HTTP answers a failed request with)."""
    from google.rpc import status_pb2  # googleapis-common-protos, in the extra

    status = status_pb2.Status(code=code, message=message)
    if encoding == "protobuf":
        return bytes(status.SerializeToString())
    return json.dumps(json_format.MessageToDict(status)).encode("utf-8")
