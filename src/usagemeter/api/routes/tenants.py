"""Tenants and members over HTTP, under the same policies as everywhere: the database decides who may do what.

The service role creates tenants; owners and admins manage members, and only owners manage
owners. A refusal is 403, a tenant or member the caller cannot see 404, a taken slug 409.
"""

from __future__ import annotations

import uuid
from typing import Any, Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from usagemeter.api import problems
from usagemeter.api.deps import Caller, ReadConnection
from usagemeter.tenancy import tenants

router = APIRouter(tags=["tenants"])
PROBLEM = problems.RESPONSE


class NewTenant(BaseModel):
    name: str = Field(description="Display name, 1 to 200 characters")
    slug: str = Field(description="Unique URL-safe handle: lowercase letters, digits, inner hyphens, at most 63")
    owner_user_id: uuid.UUID | None = Field(default=None, description="A user to make its first owner")


class NewMember(BaseModel):
    user_id: uuid.UUID
    role: Literal["member", "admin", "owner"] = "member"


@router.post(
    "/v1/tenants",
    status_code=201,
    response_model=dict[str, Any],
    responses={403: PROBLEM, 404: PROBLEM, 409: PROBLEM},
)
def create_tenant(body: NewTenant, caller: Caller, conn: ReadConnection) -> JSONResponse:
    """Create a tenant (service role only), with its first owner when given."""
    created = tenants.create_tenant(conn, caller, name=body.name, slug=body.slug, owner_user_id=body.owner_user_id)
    return JSONResponse(created.as_json(), status_code=201)


@router.get("/v1/tenants", response_model=list[dict[str, Any]], responses={403: PROBLEM})
def list_tenants(caller: Caller, conn: ReadConnection) -> list[dict[str, Any]]:
    """The tenants the caller belongs to (every tenant for the service role), with the caller's role in each."""
    return [tenant.as_json() for tenant in tenants.list_tenants(conn, caller)]


@router.get("/v1/tenants/{tenant_id}/members", response_model=list[dict[str, Any]], responses={403: PROBLEM})
def list_members(tenant_id: uuid.UUID, caller: Caller, conn: ReadConnection) -> list[dict[str, Any]]:
    """A tenant's members, as the caller may see them (empty for a tenant they do not belong to)."""
    return [member.as_json() for member in tenants.list_members(conn, caller, tenant_id)]


@router.post(
    "/v1/tenants/{tenant_id}/members",
    status_code=201,
    response_model=dict[str, Any],
    responses={403: PROBLEM, 404: PROBLEM, 409: PROBLEM},
)
def add_member(tenant_id: uuid.UUID, body: NewMember, caller: Caller, conn: ReadConnection) -> JSONResponse:
    """Add a user to a tenant with a role (owners and admins; only owners add owners)."""
    added = tenants.add_member(conn, caller, tenant_id=tenant_id, user_id=body.user_id, role=body.role)
    return JSONResponse(added.as_json(), status_code=201)


@router.delete(
    "/v1/tenants/{tenant_id}/members/{user_id}",
    response_model=dict[str, Any],
    responses={403: PROBLEM, 404: PROBLEM},
)
def remove_member(tenant_id: uuid.UUID, user_id: uuid.UUID, caller: Caller, conn: ReadConnection) -> dict[str, Any]:
    """Remove a user from a tenant (owners and admins; only owners remove owners); answers the membership removed."""
    return tenants.remove_member(conn, caller, tenant_id=tenant_id, user_id=user_id).as_json()
