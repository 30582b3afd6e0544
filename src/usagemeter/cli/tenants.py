"""`usagemeter tenant` and `usagemeter user`: tenants, their members and users, without writing SQL.

Tenant commands run as the service role by default, or with --as-user as that user under RLS, on
the app login; the database's policies decide. `user create` runs on the admin login, and only
where usagemeter's shim owns auth.users (never on Supabase, whose auth service does).
"""

from __future__ import annotations

import json
import uuid
from typing import Annotated, Any, NoReturn

import typer
from rich.table import Table
from rich.text import Text

from usagemeter import db, errors
from usagemeter.cli.common import DatabaseUrlOption, app_database, database, fail, out, reported_errors
from usagemeter.tenancy import tenants, users

tenant_app = typer.Typer(help="Tenants and their members (owners and admins manage members).", no_args_is_help=True)
user_app = typer.Typer(help="Users of usagemeter's auth.users shim (on Supabase: Supabase Auth).", no_args_is_help=True)

AsUserOption = Annotated[
    uuid.UUID | None, typer.Option("--as-user", help="Run as this user, under RLS (default: the service role)")
]
FormatOption = Annotated[str, typer.Option("--format", help="table or json")]


def _format(output: str) -> str:
    if output not in ("table", "json"):
        fail(f"--format: expected table or json, got {output!r}", code=2)
    return output


def _identity(as_user: uuid.UUID | None) -> db.Identity:
    return db.Identity.user(as_user) if as_user else db.Identity.service()


def _print_json(value: dict[str, Any] | list[dict[str, Any]]) -> None:
    """JSON on stdout (not rich: its wrapping would break it)."""
    print(json.dumps(value, indent=2), flush=True)


def _bad_input(failure: errors.InvalidTenant | errors.InvalidMember | errors.InvalidUser) -> NoReturn:
    """A value that breaks a rule is a usage error (exit 2), named by its flag."""
    fail(f"--{failure}", code=2)


@tenant_app.command("create")
def create_command(
    name: Annotated[str, typer.Option("--name", help="Display name, 1 to 200 characters")],
    slug: Annotated[str, typer.Option("--slug", help="Unique handle: lowercase letters, digits, inner hyphens")],
    owner: Annotated[uuid.UUID | None, typer.Option("--owner", help="A user to make its first owner")] = None,
    output: FormatOption = "table",
    database_url: DatabaseUrlOption = None,
) -> None:
    """Create a tenant (as the service role); prints its id, or the tenant as JSON with --format json."""
    _format(output)
    try:
        tenants.check_name(name)
        tenants.check_slug(slug)
    except errors.InvalidTenant as failure:
        _bad_input(failure)
    with reported_errors(), app_database(database_url) as url, db.connect_app(url) as conn:
        made = tenants.create_tenant(conn, db.Identity.service(), name=name, slug=slug, owner_user_id=owner)
    if output == "json":
        _print_json({**made.as_json(), "owner_user_id": None if owner is None else str(owner)})
        return
    print(made.id, flush=True)


@tenant_app.command("list")
def list_command(as_user: AsUserOption = None, output: FormatOption = "table",
                 database_url: DatabaseUrlOption = None) -> None:  # fmt: skip
    """The tenants the caller may see, with the caller's role in each (a JSON array with --format json)."""
    _format(output)
    with reported_errors(), app_database(database_url) as url, db.connect_app(url) as conn:
        found = tenants.list_tenants(conn, _identity(as_user))
    if output == "json":
        _print_json([t.as_json() for t in found])
        return
    table = Table(title="tenants", title_justify="left")
    table.add_column("id", min_width=36, no_wrap=True)
    for heading in ("slug", "name", "your role", "created"):
        table.add_column(heading)
    for tenant in found:
        created = tenant.created_at.isoformat(timespec="seconds")
        table.add_row(str(tenant.id), tenant.slug, Text(tenant.name), tenant.role or "", created)
    out.print(table)
    if not found:
        out.print("no tenants" + (" you are a member of" if as_user else ""))


@tenant_app.command("members")
def members_command(
    tenant: Annotated[uuid.UUID, typer.Argument(help="Tenant id")],
    as_user: AsUserOption = None,
    output: FormatOption = "table",
    database_url: DatabaseUrlOption = None,
) -> None:
    """A tenant's members as the caller sees them: owners, admins, then members (empty for a stranger)."""
    _format(output)
    with reported_errors(), app_database(database_url) as url, db.connect_app(url) as conn:
        found = tenants.list_members(conn, _identity(as_user), tenant)
    if output == "json":
        _print_json([m.as_json() for m in found])
        return
    table = Table(title=f"members of {tenant}", title_justify="left")
    table.add_column("user", min_width=36, no_wrap=True)
    table.add_column("role")
    table.add_column("since")
    for member in found:
        table.add_row(str(member.user_id), member.role, member.created_at.isoformat(timespec="seconds"))
    out.print(table)
    if not found:
        out.print("no members you can see")


@tenant_app.command("add-member")
def add_member_command(
    tenant: Annotated[uuid.UUID, typer.Argument(help="Tenant id")],
    user: Annotated[uuid.UUID, typer.Argument(help="User id (auth.users)")],
    role: Annotated[str, typer.Option("--role", help="member, admin or owner")] = "member",
    as_user: AsUserOption = None,
    output: FormatOption = "table",
    database_url: DatabaseUrlOption = None,
) -> None:
    """Add a user to a tenant (owners and admins may; only owners add owners). Already a member: unchanged."""
    _format(output)
    try:
        tenants.check_role(role)
    except errors.InvalidMember as failure:
        _bad_input(failure)
    with reported_errors(), app_database(database_url) as url, db.connect_app(url) as conn:
        member = tenants.add_member(conn, _identity(as_user), tenant_id=tenant, user_id=user, role=role)
    if output == "json":
        _print_json(member.as_json())
        return
    out.print(f"{user} is a member of {tenant} as {member.role}", highlight=False)


@tenant_app.command("remove-member")
def remove_member_command(
    tenant: Annotated[uuid.UUID, typer.Argument(help="Tenant id")],
    user: Annotated[uuid.UUID, typer.Argument(help="User id")],
    as_user: AsUserOption = None,
    output: FormatOption = "table",
    database_url: DatabaseUrlOption = None,
) -> None:
    """Remove a user from a tenant (owners and admins may; only owners remove owners); exit 1 if nothing was."""
    _format(output)
    with reported_errors(), app_database(database_url) as url, db.connect_app(url) as conn:
        member = tenants.remove_member(conn, _identity(as_user), tenant_id=tenant, user_id=user)
    if output == "json":
        _print_json({**member.as_json(), "removed": True})
        return
    out.print(f"removed {user} ({member.role}) from {tenant}", highlight=False)


@user_app.command("create")
def create_user_command(
    email: Annotated[str | None, typer.Option("--email", help="The user's email (unique)")] = None,
    user_id: Annotated[uuid.UUID | None, typer.Option("--id", help="The id to give (default: a new UUID)")] = None,
    output: FormatOption = "table",
    database_url: DatabaseUrlOption = None,
) -> None:
    """Create a user in usagemeter's auth.users shim and print their id (refused on Supabase: use Supabase Auth)."""
    _format(output)
    if email is not None:
        try:
            users.check_email(email)
        except errors.InvalidUser as failure:
            _bad_input(failure)
    with reported_errors(), database(database_url) as url, db.connect(url, autocommit=True) as conn:
        made = users.create_user(conn, email=email, user_id=user_id)
    if output == "json":
        _print_json({"id": str(made), "email": email})
        return
    print(made, flush=True)
