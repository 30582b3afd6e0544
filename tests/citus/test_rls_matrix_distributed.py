"""The RLS allow/deny matrix of usage_events on the cluster, against the same model as the single-node one.

The worlds of tests/integration/test_rls_matrix.py, built here in committed rows (a test on the
cluster cannot arrange as the owner and assert as a request role in one transaction: Citus refuses
to read, as another role, shard placements the transaction has written) and deleted afterwards;
every actor's attempt runs through the app login, in a transaction that is rolled back.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, LiteralString

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import errors as pgerrors

from tests import factories
from tests.citus.conftest import DistributedDatabase
from tests.integration.test_rls_matrix import Built, World, worlds
from usagemeter import db
from usagemeter.db import Identity, acting_as

CLUSTER_SETTINGS = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@contextmanager
def built_world(url: str, world: World) -> Iterator[Built]:
    """The world committed on the cluster (owner_id sent), removed with its tenants and users afterwards."""
    with db.connect(url, autocommit=True) as owner:
        tenant_ids = [factories.add_tenant(owner) for _ in range(world.tenants)]
        user_ids = [factories.add_user(owner) for _ in range(world.users)]
        members_of: dict[uuid.UUID, set[uuid.UUID]] = {u: set() for u in user_ids}
        for t, u in world.memberships:
            factories.add_member(owner, tenant_ids[t], user_ids[u])
            members_of[user_ids[u]].add(tenant_ids[t])
        event_rows: dict[uuid.UUID, tuple[uuid.UUID | None, uuid.UUID]] = {}
        for t_index, u in world.events:
            tenant = None if t_index is None else tenant_ids[t_index]
            row = owner.execute(
                "insert into public.usage_events (owner_id, tenant_id, user_id, action) values (%s, %s, %s, %s)"
                " returning id",
                (tenant or user_ids[u], tenant, user_ids[u], "agency:scope:generate"),
            ).fetchone()
            assert row is not None
            event_rows[row[0]] = (tenant, user_ids[u])
        try:
            yield Built(tenant_ids, user_ids, event_rows, members_of)
        finally:
            owner.execute("delete from public.tenants where id = any(%s)", (tenant_ids,))
            owner.execute("delete from auth.users where id = any(%s)", (user_ids,))


def _owners_events(conn: psycopg.Connection[Any], built: Built) -> int:
    row = conn.execute(
        "select count(*) from public.usage_events where owner_id = any(%s)", (built.tenant_ids + built.user_ids,)
    ).fetchone()
    assert row is not None
    return int(row[0])


def visible_ids(conn: psycopg.Connection[Any], identity: Identity, built: Built) -> set[uuid.UUID]:
    """What `identity` reads of this world (other tests' rows are left out by owner)."""
    with acting_as(conn, identity):
        rows = conn.execute(
            "select id from public.usage_events where owner_id = any(%s)", (built.tenant_ids + built.user_ids,)
        ).fetchall()
    return {row[0] for row in rows}


def try_insert(
    conn: psycopg.Connection[Any], identity: Identity, tenant_id: uuid.UUID | None, user_id: uuid.UUID
) -> bool:
    """Insert as `identity` and roll back; True when it was accepted."""
    try:
        with conn.transaction(force_rollback=True), acting_as(conn, identity):
            conn.execute(
                "insert into public.usage_events (owner_id, tenant_id, user_id, action)"
                " values (%s, %s, %s, 'agency:scope:generate')",
                (tenant_id or user_id, tenant_id, user_id),
            )
    except pgerrors.InsufficientPrivilege:
        return False
    return True


def try_write(
    conn: psycopg.Connection[Any], identity: Identity, statement: LiteralString, params: tuple[Any, ...] = ()
) -> bool:
    """Run an UPDATE/DELETE/TRUNCATE as `identity` and roll back; True when it was allowed."""
    try:
        with conn.transaction(force_rollback=True), acting_as(conn, identity):
            conn.execute(statement, params)
    except pgerrors.InsufficientPrivilege:
        return False
    return True


@CLUSTER_SETTINGS
@given(world=worlds())
def test_reads_show_exactly_own_tenants_and_own_personal_rows(distributed: DistributedDatabase, world: World) -> None:
    with built_world(distributed.url, world) as built, db.connect(distributed.app_url, autocommit=True) as conn:
        for user in built.user_ids:
            expected = {
                event_id
                for event_id, (tenant, author) in built.event_rows.items()
                if (tenant is not None and tenant in built.members_of[user]) or (tenant is None and author == user)
            }
            assert visible_ids(conn, Identity.user(user), built) == expected
        assert visible_ids(conn, Identity.service(), built) == set(built.event_rows)
        with pytest.raises(pgerrors.InsufficientPrivilege):
            visible_ids(conn, Identity.anon(), built)


@CLUSTER_SETTINGS
@given(world=worlds(), data=st.data())
def test_inserts_only_as_oneself_into_own_tenants_or_personal(
    distributed: DistributedDatabase, world: World, data: st.DataObject
) -> None:
    with built_world(distributed.url, world) as built, db.connect(distributed.app_url, autocommit=True) as conn:
        actor = data.draw(st.sampled_from(built.user_ids), label="actor")
        other = data.draw(st.sampled_from([u for u in built.user_ids if u != actor]), label="other user")
        me = Identity.user(actor)
        for tenant in built.tenant_ids:
            member = tenant in built.members_of[actor]
            assert try_insert(conn, me, tenant, actor) is member, "own user id into a tenant"
            assert try_insert(conn, me, tenant, other) is False, "forged user id into a tenant"
        assert try_insert(conn, me, None, actor) is True, "personal row as oneself"
        assert try_insert(conn, me, None, other) is False, "personal row under a forged user id"
        assert try_insert(conn, Identity.anon(), None, actor) is False, "anon"
        for tenant in built.tenant_ids:
            assert try_insert(conn, Identity.service(), tenant, other) is True, "service role writes anywhere"
        with db.connect(distributed.url, autocommit=True) as owner:
            assert _owners_events(owner, built) == len(built.event_rows)  # every attempt was rolled back


@CLUSTER_SETTINGS
@given(world=worlds())
def test_ledger_is_append_only_for_users_and_anon(distributed: DistributedDatabase, world: World) -> None:
    with built_world(distributed.url, world) as built, db.connect(distributed.app_url, autocommit=True) as conn:
        actors = [Identity.anon()] + [Identity.user(u) for u in built.user_ids]
        for actor in actors:
            assert try_write(conn, actor, "update public.usage_events set tokens_input = tokens_input + 1") is False
            assert try_write(conn, actor, "delete from public.usage_events") is False
            assert try_write(conn, actor, "truncate public.usage_events") is False
        assert try_write(conn, Identity.service(), "truncate public.usage_events") is False
        owners = (built.tenant_ids + built.user_ids,)
        update = "update public.usage_events set tokens_input = 1 where owner_id = any(%s)"
        assert try_write(conn, Identity.service(), update, owners)
        assert try_write(conn, Identity.service(), "delete from public.usage_events where owner_id = any(%s)", owners)
        with db.connect(distributed.url, autocommit=True) as owner:
            assert _owners_events(owner, built) == len(built.event_rows)
