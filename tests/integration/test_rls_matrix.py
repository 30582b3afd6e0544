"""The RLS allow/deny matrix of usage_events, against a pure model of who may do what.

Hypothesis builds worlds of tenants, users, memberships and events; every actor (anon, members,
users without tenants, personal users, service_role) then tries every operation as the real
role with real JWT claims. Each world lives in one transaction that is rolled back.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import errors as pgerrors

from tests import factories
from usagemeter.db import Identity, acting_as


@dataclass(frozen=True)
class World:
    tenants: int
    users: int
    memberships: frozenset[tuple[int, int]]  # (tenant index, user index)
    events: tuple[tuple[int | None, int], ...]  # (tenant index or None for personal, user index)


@st.composite
def worlds(draw: st.DrawFn) -> World:
    tenants = draw(st.integers(1, 3))
    users = draw(st.integers(2, 5))
    memberships = draw(st.frozensets(st.tuples(st.integers(0, tenants - 1), st.integers(0, users - 1)), max_size=8))
    events = draw(
        st.lists(st.tuples(st.one_of(st.none(), st.integers(0, tenants - 1)), st.integers(0, users - 1)), max_size=12)
    )
    return World(tenants, users, memberships, tuple(events))


@dataclass
class Built:
    tenant_ids: list[uuid.UUID]
    user_ids: list[uuid.UUID]
    event_rows: dict[uuid.UUID, tuple[uuid.UUID | None, uuid.UUID]]  # id -> (tenant, user)
    members_of: dict[uuid.UUID, set[uuid.UUID]]  # user -> tenants


def build(conn: psycopg.Connection[Any], world: World) -> Built:
    tenant_ids = [factories.add_tenant(conn) for _ in range(world.tenants)]
    user_ids = [factories.add_user(conn) for _ in range(world.users)]
    members_of: dict[uuid.UUID, set[uuid.UUID]] = {u: set() for u in user_ids}
    for t, u in world.memberships:
        factories.add_member(conn, tenant_ids[t], user_ids[u])
        members_of[user_ids[u]].add(tenant_ids[t])
    event_rows: dict[uuid.UUID, tuple[uuid.UUID | None, uuid.UUID]] = {}
    for t_index, u in world.events:
        tenant = None if t_index is None else tenant_ids[t_index]
        event_id = factories.add_event(conn, tenant_id=tenant, user_id=user_ids[u])
        event_rows[event_id] = (tenant, user_ids[u])
    return Built(tenant_ids, user_ids, event_rows, members_of)


def visible_ids(conn: psycopg.Connection[Any], identity: Identity) -> set[uuid.UUID]:
    with acting_as(conn, identity):
        return {row[0] for row in conn.execute("select id from public.usage_events").fetchall()}


def try_insert(
    conn: psycopg.Connection[Any], identity: Identity, tenant_id: uuid.UUID | None, user_id: uuid.UUID
) -> bool:
    """Insert as `identity`; True when stored, False when refused (and then nothing was stored)."""
    before = factories.count_events(conn)
    try:
        with acting_as(conn, identity):
            conn.execute(
                "insert into public.usage_events (tenant_id, user_id, action) values (%s, %s, 'agency:scope:generate')",
                (tenant_id, user_id),
            )
    except pgerrors.InsufficientPrivilege:
        assert factories.count_events(conn) == before
        return False
    assert factories.count_events(conn) == before + 1
    return True


def try_write(conn: psycopg.Connection[Any], identity: Identity, statement: str) -> bool:
    """Run an UPDATE/DELETE/TRUNCATE as `identity`; True when allowed. A refusal changes nothing."""
    before = conn.execute("select count(*), coalesce(sum(tokens_total), 0) from public.usage_events").fetchone()
    try:
        with acting_as(conn, identity):
            conn.execute(statement)
    except pgerrors.InsufficientPrivilege:
        after = conn.execute("select count(*), coalesce(sum(tokens_total), 0) from public.usage_events").fetchone()
        assert after == before
        return False
    return True


MATRIX_SETTINGS = settings(
    max_examples=25,
    deadline=None,
    # Each example runs in its own rolled-back transaction, so sharing the function's database is safe.
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


@MATRIX_SETTINGS
@given(world=worlds())
def test_reads_show_exactly_own_tenants_and_own_personal_rows(owner: psycopg.Connection[Any], world: World) -> None:
    with owner.transaction(force_rollback=True):
        built = build(owner, world)
        for user in built.user_ids:
            expected = {
                event_id
                for event_id, (tenant, author) in built.event_rows.items()
                if (tenant is not None and tenant in built.members_of[user]) or (tenant is None and author == user)
            }
            assert visible_ids(owner, Identity.user(user)) == expected
        assert visible_ids(owner, Identity.service()) == set(built.event_rows)
        with pytest.raises(pgerrors.InsufficientPrivilege):
            visible_ids(owner, Identity.anon())


@MATRIX_SETTINGS
@given(world=worlds(), data=st.data())
def test_inserts_only_as_oneself_into_own_tenants_or_personal(
    owner: psycopg.Connection[Any], world: World, data: st.DataObject
) -> None:
    with owner.transaction(force_rollback=True):
        built = build(owner, world)
        actor = data.draw(st.sampled_from(built.user_ids), label="actor")
        other = data.draw(st.sampled_from([u for u in built.user_ids if u != actor]), label="other user")
        me = Identity.user(actor)
        for tenant in built.tenant_ids:
            member = tenant in built.members_of[actor]
            assert try_insert(owner, me, tenant, actor) is member, "own user id into a tenant"
            assert try_insert(owner, me, tenant, other) is False, "forged user id into a tenant"
        assert try_insert(owner, me, None, actor) is True, "personal row as oneself"
        assert try_insert(owner, me, None, other) is False, "personal row under a forged user id"
        assert try_insert(owner, Identity.anon(), None, actor) is False, "anon"
        for tenant in built.tenant_ids:
            assert try_insert(owner, Identity.service(), tenant, other) is True, "service role writes anywhere"


@MATRIX_SETTINGS
@given(world=worlds())
def test_ledger_is_append_only_for_users_and_anon(owner: psycopg.Connection[Any], world: World) -> None:
    with owner.transaction(force_rollback=True):
        built = build(owner, world)
        actors = [Identity.anon()] + [Identity.user(u) for u in built.user_ids]
        for actor in actors:
            assert try_write(owner, actor, "update public.usage_events set tokens_input = tokens_input + 1") is False
            assert try_write(owner, actor, "delete from public.usage_events") is False
            assert try_write(owner, actor, "truncate public.usage_events") is False
        assert try_write(owner, Identity.service(), "truncate public.usage_events") is False
        assert try_write(owner, Identity.service(), "update public.usage_events set tokens_input = 1") is True
        assert try_write(owner, Identity.service(), "delete from public.usage_events") is True
        assert factories.count_events(owner) == 0


def test_cross_tenant_read_with_explicit_filter_returns_zero_rows(owner: psycopg.Connection[Any]) -> None:
    tenant_a, tenant_b = factories.add_tenant(owner), factories.add_tenant(owner)
    alice, bob = factories.add_user(owner), factories.add_user(owner)
    factories.add_member(owner, tenant_a, alice)
    factories.add_member(owner, tenant_b, bob)
    factories.add_event(owner, tenant_id=tenant_b, user_id=bob)
    with acting_as(owner, Identity.user(alice)):
        rows = owner.execute("select * from public.usage_events where tenant_id = %s", (tenant_b,)).fetchall()
    assert rows == []


def test_users_cannot_choose_created_at(owner: psycopg.Connection[Any]) -> None:
    alice = factories.add_user(owner)
    with pytest.raises(pgerrors.InsufficientPrivilege), acting_as(owner, Identity.user(alice)):
        owner.execute(
            "insert into public.usage_events (user_id, action, created_at) values (%s, 'a:b:c', '2000-01-01')",
            (alice,),
        )
    assert factories.count_events(owner) == 0


def test_insert_returning_shows_the_new_row_to_its_author(owner: psycopg.Connection[Any]) -> None:
    tenant = factories.add_tenant(owner)
    alice = factories.add_user(owner)
    factories.add_member(owner, tenant, alice)
    with acting_as(owner, Identity.user(alice)):
        row = owner.execute(
            "insert into public.usage_events (tenant_id, user_id, action, tokens_input, tokens_output)"
            " values (%s, %s, 'agency:scope:generate', 7, 3) returning tokens_total, created_at",
            (tenant, alice),
        ).fetchone()
    assert row is not None
    assert row[0] == 10
