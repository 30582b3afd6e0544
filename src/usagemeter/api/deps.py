"""Request dependencies: the server's resources, and who the caller is (from their bearer token).

Routes never decide what a caller may see: they take the caller's Identity and run as it, and the
database's policies decide.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

import psycopg
from fastapi import Depends, Request
from psycopg_pool import PoolTimeout

from usagemeter import errors
from usagemeter.api import problems
from usagemeter.api.server import Server
from usagemeter.db import Identity


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


def read_connection(request: Request) -> Iterator[psycopg.Connection[Any]]:
    """A pooled app-login connection for one read; 503 when none frees up in time."""
    server: Server = request.app.state.server
    try:
        with server.read_pool.connection() as conn:
            yield conn
    except PoolTimeout:
        raise errors.DatabaseUnavailable("no database connection became free in time; retry shortly") from None


ReadConnection = Annotated[psycopg.Connection[Any], Depends(read_connection)]
