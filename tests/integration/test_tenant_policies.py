"""Tenants and memberships: members see their tenants and fellow members; owners/admins manage members."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from psycopg import errors as pgerrors

from tests import factories
from usagemeter.db import Identity, acting_as


@dataclass(frozen=True)
class Org:
    tenant: uuid.UUID
    other_tenant: uuid.UUID
    owner_id: uuid.UUID
    admin_id: uuid.UUID
    member_id: uuid.UUID
    outsider_id: uuid.UUID


@pytest.fixture
def org(owner: psycopg.Connection[Any]) -> Org:
    tenant, other_tenant = factories.add_tenant(owner), factories.add_tenant(owner)
    owner_id, admin_id, member_id, outsider_id = (factories.add_user(owner) for _ in range(4))
    factories.add_member(owner, tenant, owner_id, "owner")
    factories.add_member(owner, tenant, admin_id, "admin")
    factories.add_member(owner, tenant, member_id, "member")
    factories.add_member(owner, other_tenant, outsider_id, "owner")
    return Org(tenant, other_tenant, owner_id, admin_id, member_id, outsider_id)


def tenants_seen(conn: psycopg.Connection[Any], identity: Identity) -> set[uuid.UUID]:
    with acting_as(conn, identity):
        return {r[0] for r in conn.execute("select id from public.tenants").fetchall()}


def members_seen(conn: psycopg.Connection[Any], identity: Identity) -> set[uuid.UUID]:
    with acting_as(conn, identity):
        return {r[0] for r in conn.execute("select user_id from public.tenant_members").fetchall()}


def add_member_as(conn: psycopg.Connection[Any], identity: Identity, tenant: uuid.UUID, role: str) -> bool:
    new_user = factories.add_user(conn)
    try:
        with acting_as(conn, identity):
            conn.execute(
                "insert into public.tenant_members (tenant_id, user_id, role) values (%s, %s, %s)",
                (tenant, new_user, role),
            )
    except pgerrors.InsufficientPrivilege:
        return False
    return True


def test_members_see_their_tenants_and_fellow_members_only(owner: psycopg.Connection[Any], org: Org) -> None:
    assert tenants_seen(owner, Identity.user(org.member_id)) == {org.tenant}
    assert members_seen(owner, Identity.user(org.member_id)) == {org.owner_id, org.admin_id, org.member_id}
    assert tenants_seen(owner, Identity.user(org.outsider_id)) == {org.other_tenant}
    assert members_seen(owner, Identity.user(org.outsider_id)) == {org.outsider_id}
    assert tenants_seen(owner, Identity.user(factories.add_user(owner))) == set()
    assert tenants_seen(owner, Identity.service()) == {org.tenant, org.other_tenant}


def test_anon_sees_no_tenants(owner: psycopg.Connection[Any], org: Org) -> None:
    with pytest.raises(pgerrors.InsufficientPrivilege):
        tenants_seen(owner, Identity.anon())
    with pytest.raises(pgerrors.InsufficientPrivilege):
        members_seen(owner, Identity.anon())


@pytest.mark.parametrize(
    ("actor", "role", "allowed"),
    [
        ("owner_id", "member", True),
        ("owner_id", "admin", True),
        ("owner_id", "owner", True),
        ("admin_id", "member", True),
        ("admin_id", "admin", True),
        ("admin_id", "owner", False),
        ("member_id", "member", False),
        ("outsider_id", "member", False),
    ],
)
def test_only_owners_and_admins_add_members_and_only_owners_add_owners(
    owner: psycopg.Connection[Any], org: Org, actor: str, role: str, allowed: bool
) -> None:
    assert add_member_as(owner, Identity.user(getattr(org, actor)), org.tenant, role) is allowed


def test_admin_cannot_remove_or_demote_an_owner(owner: psycopg.Connection[Any], org: Org) -> None:
    admin = Identity.user(org.admin_id)
    with acting_as(owner, admin):
        removed = owner.execute(
            "delete from public.tenant_members where user_id = %s returning user_id", (org.owner_id,)
        ).fetchall()
        demoted = owner.execute(
            "update public.tenant_members set role = 'member' where user_id = %s returning user_id", (org.owner_id,)
        ).fetchall()
        removed_member = owner.execute(
            "delete from public.tenant_members where user_id = %s returning user_id", (org.member_id,)
        ).fetchall()
    assert removed == []
    assert demoted == []
    assert removed_member == [(org.member_id,)]


def test_admin_cannot_promote_to_owner(owner: psycopg.Connection[Any], org: Org) -> None:
    with pytest.raises(pgerrors.InsufficientPrivilege), acting_as(owner, Identity.user(org.admin_id)):
        owner.execute("update public.tenant_members set role = 'owner' where user_id = %s", (org.member_id,))


def test_members_cannot_create_or_delete_tenants(owner: psycopg.Connection[Any], org: Org) -> None:
    with pytest.raises(pgerrors.InsufficientPrivilege), acting_as(owner, Identity.user(org.owner_id)):
        owner.execute("insert into public.tenants (name, slug) values ('x', 'x')")
    with pytest.raises(pgerrors.InsufficientPrivilege), acting_as(owner, Identity.user(org.owner_id)):
        owner.execute("delete from public.tenants")


def test_owner_renames_own_tenant_but_not_another(owner: psycopg.Connection[Any], org: Org) -> None:
    with acting_as(owner, Identity.user(org.owner_id)):
        own = owner.execute("update public.tenants set name = 'Renamed' returning id").fetchall()
    assert own == [(org.tenant,)]
    with acting_as(owner, Identity.user(org.member_id)):
        assert owner.execute("update public.tenants set name = 'Nope' returning id").fetchall() == []
