"""GET /v1/usage (summaries, the same JSON as `usagemeter report --format json`) and GET /v1/export (streamed)."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import IO, Annotated, Any, Literal, cast

import psycopg
from fastapi import APIRouter, Query, Response
from fastapi.responses import StreamingResponse
from psycopg_pool import ConnectionPool

from usagemeter.api import deps, problems
from usagemeter.api.deps import Caller, Covering, ReadConnection, ServerDep
from usagemeter.db import Identity
from usagemeter.reporting import exporting, filters, rendering, summaries

router = APIRouter(tags=["usage"])
PROBLEM = problems.RESPONSE

EXPORT_MEDIA_TYPES = {"csv": "text/csv; charset=utf-8", "jsonl": "application/x-ndjson"}
EXPORT_QUEUE_CHUNKS = 16  # blocks held between the database and a slow client
EXPORT_PUT_TIMEOUT_S = 60.0  # a client that reads nothing for this long ends its export


@router.get(
    "/v1/usage",
    response_model=list[dict[str, Any]],
    responses={401: PROBLEM, 422: PROBLEM, 503: PROBLEM},
)
def get_usage(
    caller: Caller,
    conn: ReadConnection,
    covering: Covering,
    by: Annotated[str, Query(description="Comma list of action, domain, module, model, user")] = "",
    bucket: Annotated[Literal["hour", "day", "week", "month"] | None, Query()] = None,
    action_prefix: Annotated[str | None, Query(alias="action-prefix", description="e.g. agency:")] = None,
    top: Annotated[int | None, Query(ge=1, description="Only the N groups with the most tokens")] = None,
) -> Response:
    """Usage totals, grouped and bucketed: the flags of `usagemeter report`, and the JSON it prints."""
    group_by = tuple(part.strip() for part in by.split(",") if part.strip())
    query = covering.query(
        summaries.SummaryQuery, group_by=group_by, bucket=bucket, tz=covering.tz, top=top, action_prefix=action_prefix
    )
    rows = summaries.summarize(conn, caller, query)
    headers = covering.archived_headers(conn, caller)
    return Response(rendering.to_json(rows), media_type="application/json", headers=headers)


class _QueueSink:
    """A file the export writes into, handing each block to the response through a bounded queue."""

    def __init__(self, blocks: queue.Queue[bytes | BaseException | None], cancelled: threading.Event) -> None:
        self.blocks = blocks
        self.cancelled = cancelled

    def write(self, data: bytes | memoryview) -> int:
        if self.cancelled.is_set():
            raise ConnectionAbortedError("the client went away")
        self.blocks.put(bytes(data), timeout=EXPORT_PUT_TIMEOUT_S)
        return len(data)


def _stream(
    pool: ConnectionPool[Any], identity: Identity, query: filters.UsageFilter, fmt: exporting.ExportFormat
) -> Iterator[bytes]:
    """The export's blocks as they come: a thread reads them from the database, the response sends them.

    The first block (the CSV header, or the first rows) is awaited before answering, so a database
    that is down or a refused read still gets its own status; later failures can only cut the body.
    """
    blocks: queue.Queue[bytes | BaseException | None] = queue.Queue(maxsize=EXPORT_QUEUE_CHUNKS)
    cancelled = threading.Event()

    def produce() -> None:
        try:
            with pool.connection() as conn:
                exporting.export_events(conn, identity, query, fmt, cast(IO[bytes], _QueueSink(blocks, cancelled)))
            blocks.put(None, timeout=EXPORT_PUT_TIMEOUT_S)
        except (psycopg.Error, ConnectionAbortedError, queue.Full, ValueError) as failure:
            if not cancelled.is_set():
                blocks.put(failure, timeout=EXPORT_PUT_TIMEOUT_S)

    threading.Thread(target=produce, name="usagemeter-export", daemon=True).start()
    first = blocks.get(timeout=EXPORT_PUT_TIMEOUT_S)
    if isinstance(first, BaseException):
        raise first

    def rest() -> Iterator[bytes]:
        try:
            block: bytes | BaseException | None = first
            while block is not None:
                if isinstance(block, BaseException):
                    raise block  # headers are sent: the client sees a cut-off body, and the error is logged
                yield block
                block = blocks.get(timeout=EXPORT_PUT_TIMEOUT_S)
        finally:
            cancelled.set()

    return rest()


@router.get(
    "/v1/export",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/csv": {}, "application/x-ndjson": {}}, "description": "The events, streamed"},
        401: PROBLEM,
        422: PROBLEM,
        503: PROBLEM,
    },
)
def get_export(
    caller: Caller,
    server: ServerDep,
    covering: Covering,
    format: Annotated[Literal["csv", "jsonl"], Query(description="csv or jsonl")] = "csv",
) -> StreamingResponse:
    """Every event in range as CSV or JSON Lines, streamed as the database reads it (constant memory)."""
    query = covering.query(filters.UsageFilter)
    filename = f"usage-{covering.start.date()}-{covering.end.date()}.{format}"
    with deps.pooled_connection(server) as conn:
        archived = covering.archived_headers(conn, caller)
    return StreamingResponse(
        _stream(server.read_pool, caller, query, format),
        media_type=EXPORT_MEDIA_TYPES[format],
        headers={"Content-Disposition": f'attachment; filename="{filename}"', **archived},
    )
