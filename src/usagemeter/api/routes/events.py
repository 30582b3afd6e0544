"""POST /v1/events (one event or a batch), GET /v1/events (keyset listing), POST /v1/events/{id}/void.

A 201 is sent only after the event's commit: single events share group commits with concurrent
requests (awaited on the event loop), a batch is one all-or-nothing transaction. A retry with the
same idempotency key answers 200 with `duplicate: true`; the same key with another payload, 409.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Annotated, Any, Literal, cast

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from usagemeter import errors
from usagemeter.api import problems
from usagemeter.api.deps import Caller, Covering, ReadConnection, ServerDep
from usagemeter.billing import corrections
from usagemeter.recording import recorder as recording_faces
from usagemeter.recording.event import EventFields, UsageEvent
from usagemeter.recording.writer import Recorded
from usagemeter.reporting import listing

router = APIRouter(tags=["events"])

MAX_BATCH = 1000
JSON_TYPES = ("application/json",)


class RecordedEvent(BaseModel):
    """An event as stored: its id, the time it counts at, and whether it was stored before this request."""

    id: uuid.UUID
    created_at: datetime
    duplicate: bool


class RecordedBatch(BaseModel):
    """A batch as stored, in request order; `recorded` new events and `duplicates` earlier ones."""

    events: list[RecordedEvent]
    recorded: int
    duplicates: int


class Spooled(BaseModel):
    """Accepted while the database was unreachable: kept in the server's spool, written when it answers."""

    spooled: int
    status: Literal["spooled"] = "spooled"


class VoidRequest(BaseModel):
    reason: str = Field(description="Why the event is voided, kept on the correction entry (1 to 1000 characters).")


EVENT_SCHEMA = UsageEvent.model_json_schema()
EVENTS_BODY = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "oneOf": [
                    {**EVENT_SCHEMA, "title": "One event"},
                    {"type": "array", "items": EVENT_SCHEMA, "minItems": 1, "maxItems": MAX_BATCH, "title": "A batch"},
                ]
            }
        }
    },
}
PROBLEM = problems.RESPONSE


def _json_body(request: Request, raw: bytes) -> object:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in JSON_TYPES:
        raise problems.Problem(
            415,
            "Unsupported media type",
            f"send events as application/json, got {content_type or 'no content type'!r}",
            kind="unsupported-media-type",
        )
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        raise problems.Problem(422, "Invalid JSON", "the body is not valid JSON", kind="invalid-json") from None


def _validated_batch(items: list[Any], identity_user: uuid.UUID | None) -> list[UsageEvent]:
    """Every event validated, and every bad one named by its index (not only the first)."""
    if not 1 <= len(items) <= MAX_BATCH:
        raise problems.Problem(
            422, "Invalid batch", f"a batch holds 1 to {MAX_BATCH} events, got {len(items)}", kind="invalid-batch"
        )
    valid: list[UsageEvent] = []
    bad: list[dict[str, Any]] = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            bad.append({"index": index, "field": None, "detail": f"event {index}: must be a JSON object"})
            continue
        if identity_user is not None and item.get("user_id") is None:
            item = {**item, "user_id": str(identity_user)}
        try:
            valid.extend(recording_faces.validate_events([item], offset=index))
        except errors.InvalidEvent as failure:
            bad.append(problems.invalid_event(failure))
    if bad:
        raise problems.Problem(
            422,
            "Invalid events",
            f"{len(bad)} of {len(items)} events are invalid; nothing was stored",
            kind="invalid-event",
            extra={"errors": bad},
        )
    return valid


def _answer(recorded: list[Recorded], *, single: bool) -> JSONResponse:
    status = 200 if all(r.duplicate for r in recorded) else 201
    shaped = [RecordedEvent(id=r.id, created_at=r.created_at, duplicate=r.duplicate) for r in recorded]
    if single:
        return JSONResponse(shaped[0].model_dump(mode="json"), status_code=status)
    duplicates = sum(r.duplicate for r in recorded)
    batch = RecordedBatch(events=shaped, recorded=len(recorded) - duplicates, duplicates=duplicates)
    return JSONResponse(batch.model_dump(mode="json"), status_code=status)


@router.post(
    "/v1/events",
    status_code=201,
    response_model=RecordedEvent | RecordedBatch,
    openapi_extra={"requestBody": EVENTS_BODY},
    responses={
        200: {"description": "Already stored (an idempotent retry)", "model": RecordedEvent | RecordedBatch},
        202: {"description": "Accepted into the spool (--spool, database down)", "model": Spooled},
        401: PROBLEM,
        403: PROBLEM,
        409: PROBLEM,
        413: PROBLEM,
        415: PROBLEM,
        422: PROBLEM,
        429: PROBLEM,
        503: PROBLEM,
    },
)
async def post_events(
    request: Request,
    caller: Caller,
    server: ServerDep,
    idempotency_key: Annotated[
        str | None, Header(alias="Idempotency-Key", description="For a single event: makes a retry safe")
    ] = None,
) -> Response:
    """Record one event (a JSON object) or a batch (a JSON array of up to 1,000; all or nothing)."""
    payload = _json_body(request, await request.body())
    face = server.recorder.as_identity(caller)
    if isinstance(payload, dict):
        fields = _single_event_fields(payload, idempotency_key)
        events: list[UsageEvent] = []  # validated once, by the recorder
    elif isinstance(payload, list):
        if idempotency_key is not None:
            raise problems.Problem(
                422,
                "Invalid batch",
                "Idempotency-Key is for a single event: give each event of a batch its idempotency_key",
                kind="invalid-batch",
            )
        events = _validated_batch(payload, caller.user_id)
    else:
        raise problems.Problem(
            422, "Invalid body", "send one event (an object) or a batch (an array)", kind="invalid-body"
        )
    try:
        recorded = [await face.record(**fields)] if not events else await face.record_many(events)
    except errors.DatabaseUnavailable:
        if server.config.spool_dir is None:
            raise
        for event in events or _validated_batch([fields], caller.user_id):
            face.enqueue(**cast(EventFields, event.model_dump()))
        server.metrics.spooled.inc(len(events) or 1)
        return JSONResponse(Spooled(spooled=len(events) or 1).model_dump(mode="json"), status_code=202)
    except errors.UsagemeterError as failure:
        server.metrics.refusals.labels(problems.from_error(failure).kind).inc()
        raise
    duplicates = sum(r.duplicate for r in recorded)
    server.metrics.events_recorded.inc(len(recorded) - duplicates)
    server.metrics.duplicates.inc(duplicates)
    return _answer(recorded, single=not events)


def _single_event_fields(payload: dict[str, Any], idempotency_key: str | None) -> EventFields:
    """One event's fields, with the Idempotency-Key header as its key (it must agree with the body's, if any)."""
    if idempotency_key is not None:
        if payload.get("idempotency_key", idempotency_key) != idempotency_key:
            raise problems.Problem(
                422,
                "Invalid event",
                "the Idempotency-Key header and the body's idempotency_key differ",
                kind="invalid-event",
                extra={"errors": [{"index": 0, "field": "idempotency_key", "detail": "differs from the header"}]},
            )
        payload = {**payload, "idempotency_key": idempotency_key}
    return cast(EventFields, payload)


@router.get("/v1/events", response_model=listing.Page, responses={401: PROBLEM, 422: PROBLEM, 503: PROBLEM})
def get_events(
    caller: Caller,
    conn: ReadConnection,
    covering: Covering,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
) -> Response:
    """Events newest first, a page at a time (keyset: pages never shift as new events arrive)."""
    page = listing.list_events(conn, caller, covering.query(listing.ListQuery, limit=limit), cursor=cursor)
    headers = covering.archived_headers(conn, caller)
    return Response(page.model_dump_json(), media_type="application/json", headers=headers)


@router.post(
    "/v1/events/{event_id}/void",
    response_model=dict[str, Any],
    responses={401: PROBLEM, 403: PROBLEM, 404: PROBLEM, 409: PROBLEM, 422: PROBLEM},
)
def void_event(event_id: uuid.UUID, body: VoidRequest, caller: Caller, conn: ReadConnection) -> dict[str, Any]:
    """Void an event (service role only): a correction entry takes back its count, tokens and cost."""
    return corrections.void(conn, event_id=event_id, reason=body.reason, identity=caller).as_dict()
