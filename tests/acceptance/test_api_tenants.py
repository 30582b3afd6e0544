"""Tenants and members over HTTP: the service role creates, owners and admins manage, the policies decide."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest

from tests import factories
from tests.http_server import RunningApi


@pytest.fixture
def people(owner: psycopg.Connection[Any]) -> dict[str, uuid.UUID]:
    return {name: factories.add_user(owner) for name in ("olga", "adam", "mia", "ned")}


def test_the_service_role_creates_a_tenant_with_its_owner(api_server: RunningApi, people: dict[str, uuid.UUID]) -> None:
    created = api_server.as_service().post(
        "/v1/tenants", json={"name": "Acme", "slug": "acme", "owner_user_id": str(people["olga"])}
    )
    assert created.status_code == 201, created.text
    tenant = created.json()
    assert (tenant["name"], tenant["slug"]) == ("Acme", "acme")
    mine = api_server.as_user(people["olga"]).get("/v1/tenants").json()
    assert [(t["id"], t["role"]) for t in mine] == [(tenant["id"], "owner")]
    assert api_server.as_user(people["ned"]).get("/v1/tenants").json() == []


def test_users_cannot_create_tenants_and_slugs_are_checked(
    api_server: RunningApi, people: dict[str, uuid.UUID]
) -> None:
    refused = api_server.as_user(people["olga"]).post("/v1/tenants", json={"name": "Mine", "slug": "mine"})
    assert refused.status_code == 403
    service = api_server.as_service()
    assert service.post("/v1/tenants", json={"name": "A", "slug": "taken"}).status_code == 201
    taken = service.post("/v1/tenants", json={"name": "B", "slug": "taken"})
    assert taken.status_code == 409
    assert taken.json()["field"] == "slug"
    bad = service.post("/v1/tenants", json={"name": "C", "slug": "Not A Slug"})
    assert bad.status_code == 422
    assert bad.json()["field"] == "slug"
    unknown_owner = service.post("/v1/tenants", json={"name": "D", "slug": "dee", "owner_user_id": str(uuid.uuid4())})
    assert unknown_owner.status_code == 404
    assert [t["slug"] for t in service.get("/v1/tenants").json()] == ["taken"]


def test_owners_and_admins_manage_members_only_owners_manage_owners(
    api_server: RunningApi, owner: psycopg.Connection[Any], people: dict[str, uuid.UUID]
) -> None:
    tenant = factories.add_tenant(owner)
    factories.add_member(owner, tenant, people["olga"], "owner")
    olga, adam, mia = (api_server.as_user(people[n]) for n in ("olga", "adam", "mia"))
    members = f"/v1/tenants/{tenant}/members"

    assert olga.post(members, json={"user_id": str(people["adam"]), "role": "admin"}).status_code == 201
    assert adam.post(members, json={"user_id": str(people["mia"]), "role": "member"}).status_code == 201
    assert adam.post(members, json={"user_id": str(people["ned"]), "role": "owner"}).status_code == 403
    assert mia.post(members, json={"user_id": str(people["ned"]), "role": "member"}).status_code == 403
    assert adam.delete(f"{members}/{people['olga']}").status_code == 403
    assert mia.delete(f"{members}/{people['adam']}").status_code == 403
    assert olga.post(members, json={"user_id": str(people["mia"]), "role": "admin"}).status_code == 409
    assert olga.post(members, json={"user_id": str(uuid.uuid4()), "role": "member"}).status_code == 404

    listed = {(m["user_id"], m["role"]) for m in mia.get(members).json()}
    assert listed == {(str(people["olga"]), "owner"), (str(people["adam"]), "admin"), (str(people["mia"]), "member")}
    assert api_server.as_user(people["ned"]).get(members).json() == []  # not a member: sees nothing

    removed = adam.delete(f"{members}/{people['mia']}")
    assert removed.status_code == 200
    assert removed.json()["user_id"] == str(people["mia"])
    assert adam.delete(f"{members}/{people['mia']}").status_code == 404
    assert mia.get("/v1/tenants").json() == []
