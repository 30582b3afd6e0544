"""Tenants and memberships, as the caller: the service role creates tenants, owners and admins manage members.

Authorisation is the database's alone (grants and the RLS policies of public.tenants and
public.tenant_members): a write RLS refuses (SQLSTATE 42501) or hides (a delete that finds no row
it may touch) becomes PermissionDenied or MemberNotFound here, never a silent success.

Adding a user who is already a member changes nothing: with the same role it returns the existing
membership (a retry is harmless), with another role it raises MemberExists naming the current one
(remove and add again to change a role, so a role never changes by accident).
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, NoReturn, get_args

import psycopg
from psycopg import errors as pgerrors
from psycopg.rows import dict_row

from usagemeter import errors
from usagemeter.db import Identity, acting_as, refusals, sql
from usagemeter.recording import event

queries = sql.load_queries("usagemeter.tenancy")

Role = Literal["owner", "admin", "member"]
ROLES: tuple[Role, ...] = get_args(Role)

# The rules of the tenants table's CHECKs (tenants_name_length, tenants_slug_format), checked first
# so an error names the field; the database stays the backstop.
NAME_MAX_LENGTH = 200
SLUG_PATTERN = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
SLUG_RULE = "1 to 63 lowercase letters, digits and hyphens, starting and ending with a letter or digit (e.g. acme-eu)"
NAME_RULE = f"1 to {NAME_MAX_LENGTH} characters"

# What the grants and policies allow, to say in a PermissionDenied (the database decided it).
CREATE_RULE = "only the service role creates tenants"
MEMBER_RULE = "owners and admins of a tenant manage its members; only owners add, change or remove owners"


@dataclass(frozen=True)
class Tenant:
    """A tenant as the caller sees it; `role` is the caller's role in it (None when not a member: the service role)."""

    id: uuid.UUID
    name: str
    slug: str
    created_at: datetime
    role: Role | None = None

    def as_json(self) -> dict[str, Any]:
        """JSON-ready: the id as a string, the time in ISO 8601."""
        return {"id": str(self.id), "name": self.name, "slug": self.slug, "created_at": self.created_at.isoformat(),
                "role": self.role}  # fmt: skip


@dataclass(frozen=True)
class Member:
    """One membership: who belongs to which tenant, with what role, since when."""

    tenant_id: uuid.UUID
    user_id: uuid.UUID
    role: Role
    created_at: datetime

    def as_json(self) -> dict[str, Any]:
        return {"tenant_id": str(self.tenant_id), "user_id": str(self.user_id), "role": self.role,
                "created_at": self.created_at.isoformat()}  # fmt: skip


def check_name(name: str) -> str:
    """The name, if the tenants table would take it; InvalidTenant naming `name` and the rule otherwise."""
    problem = event.storable_text_problem(name)
    if problem is not None:
        raise errors.InvalidTenant(f"name: {problem}", field="name")
    if not 1 <= len(name) <= NAME_MAX_LENGTH:
        raise errors.InvalidTenant(f"name: must be {NAME_RULE}, got {len(name)}", field="name")
    return name


def check_slug(slug: str) -> str:
    """The slug, if the tenants table would take it; InvalidTenant naming `slug` and the rule otherwise."""
    if SLUG_PATTERN.fullmatch(slug) is None:
        raise errors.InvalidTenant(f"slug: must be {SLUG_RULE}, got {slug!r}", field="slug")
    return slug


def check_role(role: str) -> Role:
    """The role, if it is one of owner, admin or member; InvalidMember otherwise."""
    for known in ROLES:
        if role == known:
            return known
    raise errors.InvalidMember(f"role: must be one of {', '.join(ROLES)}, got {role!r}")


def _tenant(row: dict[str, Any]) -> Tenant:
    return Tenant(id=row["id"], name=row["name"], slug=row["slug"], created_at=row["created_at"],
                  role=row.get("role"))  # fmt: skip


def _member(row: dict[str, Any]) -> Member:
    return Member(tenant_id=row["tenant_id"], user_id=row["user_id"], role=row["role"], created_at=row["created_at"])


def _refusal(failure: psycopg.Error, *, doing: str, **subject: object) -> errors.UsagemeterError:
    """The project error for a refused tenancy write or read: the one mapping of this package's SQLSTATEs.

    `subject` holds the values the statement was about (slug, name, tenant_id, user_id), to name them.
    """
    diag = failure.diag
    constraint = diag.constraint_name or ""
    if isinstance(failure, pgerrors.InsufficientPrivilege):
        rule = subject.get("rule") or diag.message_primary
        return errors.PermissionDenied(f"{doing}: not allowed for this caller ({rule})")
    if isinstance(failure, pgerrors.UniqueViolation) and constraint == "tenants_slug_key":
        return errors.TenantConflict(f"slug: a tenant with slug {subject['slug']!r} already exists")
    if isinstance(failure, pgerrors.CheckViolation) and constraint == "tenants_slug_format":
        return errors.InvalidTenant(f"slug: must be {SLUG_RULE} ({constraint})", field="slug")
    if isinstance(failure, pgerrors.CheckViolation) and constraint == "tenants_name_length":
        return errors.InvalidTenant(f"name: must be {NAME_RULE} ({constraint})", field="name")
    if isinstance(failure, pgerrors.CheckViolation) and constraint == "tenant_members_role_valid":
        return errors.InvalidMember(f"role: must be one of {', '.join(ROLES)} ({constraint})")
    if isinstance(failure, pgerrors.ForeignKeyViolation) and constraint == "tenant_members_user_id_fkey":
        user_id = subject.get("user_id")
        return errors.UserNotFound(f"user: no user has id {user_id} (auth.users)", user_id=user_id)
    if isinstance(failure, pgerrors.ForeignKeyViolation) and constraint == "tenant_members_tenant_id_fkey":
        return errors.TenantNotFound(f"tenant: no tenant has id {subject.get('tenant_id')}")
    where = f"{constraint}: " if constraint else ""
    return errors.UsagemeterError(f"{doing}: refused by the database: {where}{diag.message_primary or failure}")


def _raise_refusal(failure: psycopg.Error, *, doing: str, **subject: object) -> NoReturn:
    """Raise a transient failure as it is (the caller may retry), any other as its project error."""
    if refusals.is_transient(failure):
        raise failure
    raise _refusal(failure, doing=doing, **subject) from None


def create_tenant(
    conn: psycopg.Connection[Any], identity: Identity, *, name: str, slug: str, owner_user_id: uuid.UUID | None = None
) -> Tenant:
    """Create a tenant as `identity` (only the service role may), with its first owner in the same transaction.

    Parameters
    ----------
    conn:
        A connection that may act as `identity` (the app login's, or the owner's). Idle, the
        creation is its own transaction; inside one, a savepoint of it.
    name, slug:
        The display name (1 to 200 characters) and the unique URL-safe handle (see SLUG_RULE).
    owner_user_id:
        A user (auth.users) to make the tenant's owner; without one the tenant has no members.

    Raises
    ------
    InvalidTenant (a bad name or slug, `field` naming it), TenantConflict (the slug is taken),
    UserNotFound (no such owner), PermissionDenied (the caller may not create tenants).
    Nothing is written then.
    """
    params = {"name": check_name(name), "slug": check_slug(slug)}
    doing = f"create tenant {slug!r}"
    try:
        with acting_as(conn, identity), conn.cursor(row_factory=dict_row) as cur:
            row = cur.execute(queries["insert_tenant"], params).fetchone()
            assert row is not None
            if owner_user_id is not None:
                cur.execute(queries["insert_member"], {"tenant_id": row["id"], "user_id": owner_user_id,
                                                       "role": "owner"})  # fmt: skip
    except psycopg.Error as failure:
        _raise_refusal(failure, doing=doing, slug=slug, name=name, user_id=owner_user_id, rule=CREATE_RULE)
    return _tenant({**row, "role": None})


def list_tenants(conn: psycopg.Connection[Any], identity: Identity) -> list[Tenant]:
    """The tenants `identity` may see (RLS: a user's own, every one for the service role), by name.

    Raises PermissionDenied for a caller the grants give no access at all (anon).
    """
    try:
        with acting_as(conn, identity), conn.cursor(row_factory=dict_row) as cur:
            return [_tenant(row) for row in cur.execute(queries["tenants_visible"]).fetchall()]
    except psycopg.Error as failure:
        _raise_refusal(failure, doing="list tenants")


def list_members(conn: psycopg.Connection[Any], identity: Identity, tenant_id: uuid.UUID) -> list[Member]:
    """A tenant's members as `identity` sees them: owners, then admins, then members.

    Empty for a tenant the caller is not a member of (RLS shows nothing of it) or that does not exist.
    Raises PermissionDenied for a caller the grants give no access at all (anon).
    """
    try:
        with acting_as(conn, identity), conn.cursor(row_factory=dict_row) as cur:
            rows = cur.execute(queries["members_of_tenant"], {"tenant_id": tenant_id}).fetchall()
    except psycopg.Error as failure:
        _raise_refusal(failure, doing=f"list the members of tenant {tenant_id}")
    return [_member(row) for row in rows]


def add_member(
    conn: psycopg.Connection[Any], identity: Identity, *, tenant_id: uuid.UUID, user_id: uuid.UUID, role: str
) -> Member:
    """Add a user to a tenant with a role, as `identity` (RLS: owners and admins add, only owners add owners).

    Returns the membership. A user already a member with the same role gets their membership back
    unchanged; with another role, MemberExists names it.

    Raises
    ------
    InvalidMember (a role other than owner, admin or member), PermissionDenied (RLS refused: the
    caller does not manage this tenant, or only an owner may add an owner), UserNotFound (no such
    user), TenantNotFound (no such tenant, for the service role), MemberExists.
    """
    params = {"tenant_id": tenant_id, "user_id": user_id, "role": check_role(role)}
    doing = f"add user {user_id} to tenant {tenant_id} as {role}"
    try:
        with acting_as(conn, identity), conn.cursor(row_factory=dict_row) as cur:
            row = cur.execute(queries["insert_member"], params).fetchone()
            existing = None if row is not None else cur.execute(queries["member_role"], params).fetchone()
    except psycopg.Error as failure:
        _raise_refusal(failure, doing=doing, tenant_id=tenant_id, user_id=user_id, rule=MEMBER_RULE)
    if row is not None:
        return _member(row)
    if existing is not None and existing["role"] == role:
        return _member(existing)
    current = existing["role"] if existing is not None else None
    raise errors.MemberExists(
        f"user {user_id} is already a member of tenant {tenant_id}"
        + (f" as {current}" if current else "")
        + ": remove them first to change their role",
        role=current,
    )


def remove_member(
    conn: psycopg.Connection[Any], identity: Identity, *, tenant_id: uuid.UUID, user_id: uuid.UUID
) -> Member:
    """Remove a user from a tenant, as `identity` (RLS: owners and admins remove, only owners remove owners).

    Returns the membership removed. A delete that RLS lets touch no row is never a success: the
    membership the caller can see but not delete raises PermissionDenied, one they cannot see
    (or that does not exist) MemberNotFound.
    """
    params = {"tenant_id": tenant_id, "user_id": user_id}
    doing = f"remove user {user_id} from tenant {tenant_id}"
    try:
        with acting_as(conn, identity), conn.cursor(row_factory=dict_row) as cur:
            row = cur.execute(queries["delete_member"], params).fetchone()
            visible = None if row is not None else cur.execute(queries["member_role"], params).fetchone()
    except psycopg.Error as failure:
        _raise_refusal(failure, doing=doing, tenant_id=tenant_id, user_id=user_id, rule=MEMBER_RULE)
    if row is not None:
        return _member(row)
    if visible is not None:
        raise errors.PermissionDenied(f"{doing}: not allowed for this caller ({MEMBER_RULE}; this member is"
                                      f" {visible['role']})")  # fmt: skip
    raise errors.MemberNotFound(f"{doing}: user {user_id} is not a member of tenant {tenant_id} (that you can see)")
