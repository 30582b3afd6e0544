"""RFC 9457 problem details: every error the API answers, in one shape, mapped from project errors in one place."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from usagemeter import errors
from usagemeter.billing import budgets
from usagemeter.reporting import filters

MEDIA_TYPE = "application/problem+json"
RESPONSE: dict[str, Any] = {"content": {MEDIA_TYPE: {}}}  # a route's `responses` entry for an error it answers
TYPE_PREFIX = "urn:usagemeter:problem:"
log = logging.getLogger("usagemeter.api")


class Problem(Exception):
    """An error answer: status, a short title, what went wrong in this case, and fields that name it."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str,
        *,
        kind: str,
        extra: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.title = title
        self.detail = detail
        self.kind = kind
        self.extra = dict(extra or {})
        self.headers = dict(headers or {})

    def response(self, instance: str | None = None) -> JSONResponse:
        body = {"type": TYPE_PREFIX + self.kind, "title": self.title, "status": self.status, "detail": self.detail}
        if instance is not None:
            body["instance"] = instance
        return JSONResponse(
            {**body, **self.extra}, status_code=self.status, media_type=MEDIA_TYPE, headers=self.headers
        )


def unauthorized(detail: str) -> Problem:
    """401 with the challenge RFC 6750 asks for."""
    escaped = detail.replace("\\", "\\\\").replace('"', '\\"')
    return Problem(
        401,
        "Unauthorized",
        detail,
        kind="unauthorized",
        headers={
            "WWW-Authenticate": f'Bearer realm="usagemeter", error="invalid_token", error_description="{escaped}"'
        },
    )


def invalid_event(failure: errors.InvalidEvent) -> dict[str, Any]:
    """One bad event of a request, as the `errors` list of a 422 names it."""
    return {"index": failure.index, "field": failure.field, "detail": str(failure)}


def from_error(error: errors.UsagemeterError) -> Problem:
    """The HTTP answer for a project error: the one mapping from what went wrong to a status."""
    if isinstance(error, errors.InvalidToken):
        return unauthorized(str(error))
    if isinstance(error, errors.InvalidEvent):
        return Problem(422, "Invalid event", str(error), kind="invalid-event", extra={"errors": [invalid_event(error)]})
    if isinstance(error, errors.QuotaExceeded):
        budget = {
            "budget_id": error.budget_id,
            "metric": error.metric,
            "limit": budgets.plain_number(error.limit),
            "used": budgets.plain_number(error.used),
            "requested": budgets.plain_number(error.requested),
            "currency": error.currency,
            "period": error.period,
            "time_zone": error.time_zone,
            "window_start": error.window_start,
            "window_end": error.window_end,
            "tenant_id": error.tenant_id,
            "user_id": error.user_id,
        }
        return Problem(
            429, "Quota exceeded", str(error), kind="quota-exceeded", extra={"index": error.index, "budget": budget}
        )
    if isinstance(error, errors.UnpricedUsage):
        return Problem(422, "Unpriced usage", str(error), kind="unpriced-usage", extra={"index": error.index})
    if isinstance(error, errors.EventRejected):
        return Problem(
            403,
            "Write refused",
            str(error),
            kind="write-refused",
            extra={"index": error.index, "sqlstate": error.sqlstate},
        )
    if isinstance(error, errors.IdempotencyConflict):
        return Problem(
            409,
            "Idempotency key reused",
            str(error),
            kind="idempotency-conflict",
            extra={"index": error.index, "existing_id": str(error.existing_id) if error.existing_id else None},
        )
    if isinstance(error, errors.DatabaseUnavailable):
        return Problem(
            503, "Database unavailable", str(error), kind="database-unavailable", headers={"Retry-After": "1"}
        )
    if isinstance(error, errors.PermissionDenied):
        return Problem(403, "Forbidden", str(error), kind="forbidden")
    if isinstance(error, LookupError):  # an event, tenant, member or user that does not exist, or is not visible
        return Problem(404, "Not found", str(error), kind="not-found")
    if isinstance(error, errors.CorrectionRefused):
        return Problem(409, "Correction refused", str(error), kind="correction-refused")
    if isinstance(error, errors.TenantConflict | errors.MemberExists):
        return Problem(409, "Conflict", str(error), kind="conflict", extra={"field": getattr(error, "field", None)})
    if isinstance(error, filters.ReportError | errors.StatementError | errors.BudgetError):
        field, _, _ = str(error).partition(":")
        return Problem(422, "Invalid parameter", str(error), kind="invalid-parameter", extra={"field": field or None})
    if isinstance(error, ValueError):  # InvalidCorrection, InvalidTenant, InvalidMember...: `field` names it
        return Problem(
            422, "Invalid input", str(error), kind="invalid-input", extra={"field": getattr(error, "field", None)}
        )
    log.error("unmapped usagemeter error: %r", error)
    return Problem(500, "Internal error", "the server could not answer; the error is logged", kind="internal")


def install(app: FastAPI) -> None:
    """Answer every error as problem+json, never with a bare 500 page."""

    async def problem(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, Problem)
        return exc.response(request.url.path)

    async def usagemeter_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, errors.UsagemeterError)
        return from_error(exc).response(request.url.path)

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        title = {404: "Not found", 405: "Method not allowed"}.get(exc.status_code, "HTTP error")
        headers = dict(exc.headers or {})
        return Problem(
            exc.status_code, title, str(exc.detail), kind=f"http-{exc.status_code}", headers=headers
        ).response(request.url.path)

    async def invalid_request(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        found = [
            {"field": ".".join(str(part) for part in error["loc"]), "detail": str(error["msg"])}
            for error in exc.errors()
        ]
        first = found[0] if found else {"field": None, "detail": "invalid request"}
        detail = f"{first['field']}: {first['detail']}" if first["field"] else str(first["detail"])
        return Problem(422, "Invalid parameter", detail, kind="invalid-parameter", extra={"errors": found}).response(
            request.url.path
        )

    async def database_error(request: Request, exc: Exception) -> JSONResponse:
        if isinstance(exc, psycopg.errors.QueryCanceled):
            found = Problem(503, "Query timed out", "the query ran past its statement timeout", kind="timeout")
        elif isinstance(exc, psycopg.OperationalError):
            found = from_error(errors.DatabaseUnavailable(f"cannot reach the database: {str(exc).strip()[:200]}"))
        elif isinstance(exc, psycopg.errors.InsufficientPrivilege):
            found = from_error(errors.PermissionDenied(f"the database refused: {str(exc).strip()[:200]}"))
        else:
            return await unexpected(request, exc)
        return found.response(request.url.path)

    async def client_left(request: Request, exc: Exception) -> JSONResponse:
        # Nobody reads this answer; nothing was recorded (the body never arrived whole).
        return Problem(400, "Client disconnected", "the body never arrived whole", kind="disconnected").response()

    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error answering %s %s", request.method, request.url.path, exc_info=exc)
        return Problem(
            500, "Internal error", "the server could not answer; the error is logged", kind="internal"
        ).response(request.url.path)

    app.add_exception_handler(Problem, problem)
    app.add_exception_handler(errors.UsagemeterError, usagemeter_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(psycopg.Error, database_error)
    app.add_exception_handler(ClientDisconnect, client_left)
    app.add_exception_handler(Exception, unexpected)
