"""The FastAPI app: routes, problem+json errors, the body limit, metrics, and the resources' lifespan."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from usagemeter.api import metrics, problems
from usagemeter.api.metrics import RequestMetrics
from usagemeter.api.routes import billing, dashboard, events, health, tenants, traces, usage
from usagemeter.api.server import Server, ServerConfig

DESCRIPTION = (
    "Record and read AI usage per tenant. Every request runs in the database as its caller"
    " (`Authorization: Bearer <Supabase access token>`): row-level security decides what each caller"
    " sees and may write. Errors are RFC 9457 `application/problem+json`."
)


class BodyLimit:
    """413 for a body over `limit` bytes: by its Content-Length at once, or as soon as a streamed body passes it."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = problems.Problem(
            413, "Payload too large", f"the body is over the limit of {self.limit:,} bytes", kind="payload-too-large"
        )
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                await too_large.response(scope["path"])(scope, receive, send)
                return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                raise too_large
            return message

        await self.app(scope, counting_receive, send)


PROBLEM_SCHEMA = {
    "type": "object",
    "title": "Problem",
    "description": "RFC 9457 problem details; `errors`, `field`, `index` or `budget` name what is wrong.",
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
    },
    "required": ["type", "title", "status", "detail"],
}
# What any API route may answer besides its own: unparsable input, no or a bad token, a body too
# large, bad parameters, a database that is down or too slow.
COMMON_PROBLEMS = {
    "400": "Malformed request",
    "401": "No valid bearer token",
    "413": "Body over the limit",
    "422": "Invalid parameters or body",
    "503": "Database unavailable",
}


def _document_problems(app: FastAPI) -> dict[str, Any]:
    """The OpenAPI document, every error answer declared as application/problem+json (as it is sent)."""
    if app.openapi_schema is not None:
        return app.openapi_schema
    document = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    document.setdefault("components", {}).setdefault("schemas", {})["Problem"] = PROBLEM_SCHEMA
    problem = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
    for path, operations in document["paths"].items():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            if path.startswith("/v1/"):
                for status, description in COMMON_PROBLEMS.items():
                    responses.setdefault(status, {"description": description})
            for status, response in responses.items():
                if status[0] in "45":
                    response["content"] = problem
    for name in ("HTTPValidationError", "ValidationError"):
        document["components"]["schemas"].pop(name, None)
    app.openapi_schema = document
    return document


def create_app(config: ServerConfig) -> FastAPI:
    """An app serving `config`'s database; its pools open when the app starts and close when it stops."""

    measured = metrics.Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        server = Server.open(config, measured)
        app.state.server = server
        try:
            yield
        finally:
            await server.close()

    app = FastAPI(title="usagemeter", version="1", description=DESCRIPTION, lifespan=lifespan)
    problems.install(app)
    for module in (events, usage, billing, tenants, traces, health):
        app.include_router(module.router)
    dashboard.install(app)
    app.openapi = functools.partial(_document_problems, app)  # type: ignore[method-assign]
    app.add_middleware(BodyLimit, limit=config.body_limit)
    app.add_middleware(RequestMetrics, metrics=measured)  # outermost: counts 413s too
    return app
