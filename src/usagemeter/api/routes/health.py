"""GET /healthz (the process answers), GET /readyz (the database answers), GET /metrics (Prometheus)."""

from __future__ import annotations

from typing import Any

import psycopg
from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST
from psycopg_pool import PoolTimeout

from usagemeter.api.deps import ServerDep
from usagemeter.db import sql

router = APIRouter(tags=["operations"])
queries = sql.load_queries("usagemeter.api.routes")
READY_TIMEOUT_S = 2.0


@router.get("/healthz", response_model=dict[str, str])
async def healthz() -> dict[str, str]:
    """The process is up and its event loop answers."""
    return {"status": "ok"}


@router.get("/readyz", response_model=dict[str, Any], responses={503: {"description": "Not ready"}})
def readyz(server: ServerDep) -> JSONResponse:
    """The database is reachable through the app login, and usagemeter's schema is in place."""
    try:
        with server.read_pool.connection(timeout=READY_TIMEOUT_S) as conn:
            row = conn.execute(queries["schema_ready"]).fetchone()
    except (PoolTimeout, psycopg.Error) as failure:
        detail = "no connection within 2 s" if isinstance(failure, PoolTimeout) else str(failure).strip()[:200]
        return JSONResponse({"status": "unavailable", "database": detail}, status_code=503)
    ready = bool(row and row[0])
    body = {
        "status": "ready" if ready else "not migrated",
        "database": "reachable",
        "migrations_at_start": server.config.migrations,
    }
    return JSONResponse(body, status_code=200 if ready else 503)


@router.get("/metrics", response_class=Response, responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
def metrics(server: ServerDep) -> Response:
    """Prometheus text format: requests and latency by route, events, refusals, spool depth, pool usage."""
    server.metrics.observe_pools(server.pools(), server.spool_depth)
    return Response(server.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
