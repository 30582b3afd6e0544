"""The usage_events matrix spelled out for six named actors, as documentation that runs.

The hypothesis tests in test_rls_matrix.py cover random worlds; this one names each cell.
"""

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
class Cast:
    tenant_a: uuid.UUID
    tenant_b: uuid.UUID
    member_a: uuid.UUID
    member_b: uuid.UUID
    no_tenant: uuid.UUID
    personal: uuid.UUID
    event_a: uuid.UUID
    event_b: uuid.UUID
    event_personal: uuid.UUID


@pytest.fixture
def cast(owner: psycopg.Connection[Any]) -> Cast:
    tenant_a, tenant_b = factories.add_tenant(owner), factories.add_tenant(owner)
    member_a, member_b, no_tenant, personal = (factories.add_user(owner) for _ in range(4))
    factories.add_member(owner, tenant_a, member_a)
    factories.add_member(owner, tenant_b, member_b)
    return Cast(
        tenant_a,
        tenant_b,
        member_a,
        member_b,
        no_tenant,
        personal,
        event_a=factories.add_event(owner, tenant_id=tenant_a, user_id=member_a),
        event_b=factories.add_event(owner, tenant_id=tenant_b, user_id=member_b),
        event_personal=factories.add_event(owner, tenant_id=None, user_id=personal),
    )


def identity_of(cast: Cast, actor: str) -> Identity:
    if actor == "anon":
        return Identity.anon()
    if actor == "service_role":
        return Identity.service()
    return Identity.user(getattr(cast, actor))


READS = {
    "member_a": {"event_a"},
    "member_b": {"event_b"},
    "no_tenant": set(),
    "personal": {"event_personal"},
    "service_role": {"event_a", "event_b", "event_personal"},
}


@pytest.mark.parametrize("actor", list(READS))
def test_select(owner: psycopg.Connection[Any], cast: Cast, actor: str) -> None:
    with acting_as(owner, identity_of(cast, actor)):
        seen = {r[0] for r in owner.execute("select id from public.usage_events").fetchall()}
    assert seen == {getattr(cast, name) for name in READS[actor]}


def test_select_as_anon_is_refused(owner: psycopg.Connection[Any], cast: Cast) -> None:
    with pytest.raises(pgerrors.InsufficientPrivilege), acting_as(owner, Identity.anon()):
        owner.execute("select id from public.usage_events")


# (actor, tenant written to, user id written, allowed)
INSERTS = [
    ("member_a", "tenant_a", "member_a", True),  # own tenant
    ("member_a", "tenant_b", "member_a", False),  # foreign tenant
    ("member_a", "tenant_a", "member_b", False),  # forged user id, own tenant
    ("member_a", None, "member_a", True),  # personal
    ("member_a", None, "personal", False),  # forged personal
    ("no_tenant", "tenant_a", "no_tenant", False),
    ("no_tenant", None, "no_tenant", True),
    ("personal", None, "personal", True),
    ("personal", "tenant_b", "personal", False),
    ("anon", None, "personal", False),
    ("service_role", "tenant_b", "member_a", True),
    ("service_role", None, "personal", True),
]


@pytest.mark.parametrize(("actor", "tenant", "user", "allowed"), INSERTS)
def test_insert(
    owner: psycopg.Connection[Any], cast: Cast, actor: str, tenant: str | None, user: str, allowed: bool
) -> None:
    before = factories.count_events(owner)
    values = (getattr(cast, tenant) if tenant else None, getattr(cast, user))
    statement = "insert into public.usage_events (tenant_id, user_id, action) values (%s, %s, 'agency:scope:generate')"
    if allowed:
        with acting_as(owner, identity_of(cast, actor)):
            owner.execute(statement, values)
        assert factories.count_events(owner) == before + 1
    else:
        with pytest.raises(pgerrors.InsufficientPrivilege), acting_as(owner, identity_of(cast, actor)):
            owner.execute(statement, values)
        assert factories.count_events(owner) == before


@pytest.mark.parametrize("actor", ["anon", "member_a", "member_b", "no_tenant", "personal", "service_role"])
@pytest.mark.parametrize(
    "statement",
    [
        "update public.usage_events set tokens_input = 999",
        "delete from public.usage_events",
        "truncate public.usage_events",
    ],
    ids=["update", "delete", "truncate"],
)
def test_update_delete_truncate(owner: psycopg.Connection[Any], cast: Cast, actor: str, statement: str) -> None:
    allowed = actor == "service_role" and not statement.startswith("truncate")
    before = owner.execute("select count(*), sum(tokens_input) from public.usage_events").fetchone()
    if allowed:
        with acting_as(owner, identity_of(cast, actor)):
            owner.execute(statement)
        assert owner.execute("select count(*), sum(tokens_input) from public.usage_events").fetchone() != before
    else:
        with pytest.raises(pgerrors.InsufficientPrivilege), acting_as(owner, identity_of(cast, actor)):
            owner.execute(statement)
        assert owner.execute("select count(*), sum(tokens_input) from public.usage_events").fetchone() == before
