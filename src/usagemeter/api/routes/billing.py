"""GET /v1/quotas (budgets and their current windows) and GET /v1/statements/{tenant}/{month}, under RLS."""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response

from usagemeter.api import problems
from usagemeter.api.deps import Caller, ReadConnection
from usagemeter.billing import budgets, statements

router = APIRouter(tags=["billing"])
PROBLEM = problems.RESPONSE


@router.get("/v1/quotas", response_model=list[dict[str, Any]], responses={401: PROBLEM, 503: PROBLEM})
def get_quotas(
    caller: Caller,
    conn: ReadConnection,
    tenant: Annotated[uuid.UUID | None, Query(description="Only this tenant's budgets")] = None,
    user: Annotated[uuid.UUID | None, Query(description="Only this Personal user's budgets")] = None,
) -> list[dict[str, Any]]:
    """The budgets the caller may read, each with its current window, what it used there and what remains."""
    found = budgets.list_budgets(conn, caller, tenant_id=tenant, personal_user_id=user)
    return [status.as_json() for status in found]


@router.get(
    "/v1/statements/{tenant}/{month}",
    response_model=dict[str, Any],
    responses={200: {"content": {"text/csv": {}}}, 401: PROBLEM, 422: PROBLEM, 503: PROBLEM},
)
def get_statement(
    tenant: uuid.UUID,
    month: str,
    caller: Caller,
    conn: ReadConnection,
    tz: Annotated[str, Query(description="IANA zone the month is counted in")] = "UTC",
    format: Annotated[Literal["json", "csv"], Query()] = "json",
) -> Response:
    """A tenant's month (`2026-06`): lines by action and model, total, adjustments; the stored one once closed."""
    found = statements.statement(conn, caller, tenant_id=tenant, month=month, tz=tz)
    if format == "csv":
        return Response(found.to_csv(), media_type="text/csv; charset=utf-8")
    return Response(found.to_json(), media_type="application/json")
