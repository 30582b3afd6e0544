"""Request dependencies: the server's resources, and who the caller is (from their bearer token).

Routes never decide what a caller may see: they take the caller's Identity and run as it, and the
database's policies decide.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

import psycopg
from fastapi import Depends, Query, Request
from psycopg_pool import PoolTimeout

from usagemeter import errors
from usagemeter.api import problems
from usagemeter.api.server import Server
from usagemeter.db import Identity
from usagemeter.reporting import archives, filters


async def get_server(request: Request) -> Server:
    """The app's resources (async: a plain function would cost every request a thread hop)."""
    server: Server = request.app.state.server
    return server


ServerDep = Annotated[Server, Depends(get_server)]


async def get_caller(request: Request) -> Identity:
    """The caller's identity from `Authorization: Bearer <token>`; 401 without a valid one."""
    header = request.headers.get("authorization")
    if header is None:
        raise problems.unauthorized("send the access token as `Authorization: Bearer <token>`")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise problems.unauthorized("the Authorization header must be `Bearer <token>`")
    server: Server = request.app.state.server
    return await server.config.verifier.identity(token.strip())


Caller = Annotated[Identity, Depends(get_caller)]


@contextmanager
def pooled_connection(server: Server) -> Iterator[psycopg.Connection[Any]]:
    """A connection from the read pool; DatabaseUnavailable (503) when none frees up in time."""
    try:
        with server.read_pool.connection() as conn:
            yield conn
    except PoolTimeout:
        raise errors.DatabaseUnavailable("no database connection became free in time; retry shortly") from None


def read_connection(request: Request) -> Iterator[psycopg.Connection[Any]]:
    """A pooled app-login connection for one read; 503 when none frees up in time."""
    with pooled_connection(request.app.state.server) as conn:
        yield conn


ReadConnection = Annotated[psycopg.Connection[Any], Depends(read_connection)]


@dataclass(frozen=True)
class Coverage:
    """What a read covers: exactly one scope, and the time range [start, end) read as the CLI reads it."""

    scope: filters.Scope
    tenant_id: uuid.UUID | None
    user_id: uuid.UUID | None
    start: datetime
    end: datetime
    tz: str

    def query(self, model: type[filters.QueryModel], **narrowing: object) -> filters.QueryModel:
        """The reporting query of `model` over this coverage, with a route's own fields."""
        return filters.query_from(
            model, scope=self.scope, tenant_id=self.tenant_id, user_id=self.user_id, start=self.start, end=self.end,
            **narrowing,
        )  # fmt: skip

    def archived_headers(self, conn: psycopg.Connection[Any], identity: Identity) -> dict[str, str]:
        """`Usagemeter-Archived-Months` when part of the range has no raw events any more (retention)."""
        months = archives.archived_months(conn, identity, self.start, self.end)
        return {archives.HEADER: archives.labels(months)} if months else {}


async def get_coverage(
    tenant: Annotated[uuid.UUID | None, Query(description="One tenant's usage")] = None,
    user: Annotated[uuid.UUID | None, Query(description="One user's personal usage (no tenant)")] = None,
    all_visible: Annotated[bool, Query(alias="all", description="Everything the caller may see")] = False,
    start: Annotated[str | None, Query(alias="from", description="ISO date or date-time; default: this month")] = None,
    end: Annotated[str | None, Query(alias="to", description="ISO date or date-time, exclusive")] = None,
    tz: Annotated[str, Query(description="IANA zone of dates without a time, and of buckets")] = "UTC",
) -> Coverage:
    """The scope flags of `usagemeter report` (tenant, user or all) and its --from/--to/--tz, as query parameters."""
    if sum((tenant is not None, user is not None, all_visible)) != 1:
        raise problems.Problem(
            422,
            "Invalid parameter",
            "give exactly one of tenant=ID, user=ID or all=true",
            kind="invalid-parameter",
            extra={"field": "tenant"},
        )
    since, until = filters.range_from_text(start, end, tz)
    scope: filters.Scope = "tenant" if tenant else "user" if user else "all"
    return Coverage(scope=scope, tenant_id=tenant, user_id=user, start=since, end=until, tz=tz)


Covering = Annotated[Coverage, Depends(get_coverage)]
