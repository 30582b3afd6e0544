"""usagemeter on a three-node Citus cluster after `db migrate` and `db distribute` (docs/distributed.md)."""

from __future__ import annotations

import subprocess
import sys
import uuid
from typing import Any

import psycopg
import pytest

from tests import citus_cluster, factories
from tests.citus.conftest import DistributedDatabase
from usagemeter import Recorder, db, errors
from usagemeter.db import Identity, acting_as
from usagemeter.ops import distribute


def _arranged(conn: psycopg.Connection[Any]) -> dict[str, uuid.UUID]:
    """Alice in tenant `mine`, Bob in `foreign`, Carol personal only; one event each, owner_id sent."""
    mine, foreign = factories.add_tenant(conn), factories.add_tenant(conn)
    alice, bob, carol = factories.add_user(conn), factories.add_user(conn), factories.add_user(conn)
    factories.add_member(conn, mine, alice)
    factories.add_member(conn, foreign, bob)
    for tenant, user in ((mine, alice), (foreign, bob), (None, carol)):
        conn.execute(
            "insert into public.usage_events (owner_id, tenant_id, user_id, action, tokens_input)"
            " values (%s, %s, %s, 'agency:scope:generate', 10)",
            (tenant or user, tenant, user),
        )
    return {"mine": mine, "foreign": foreign, "alice": alice, "bob": bob, "carol": carol}


def _visible(conn: psycopg.Connection[Any], identity: Identity) -> list[tuple[Any, ...]]:
    with acting_as(conn, identity):
        return conn.execute("select tenant_id, user_id from public.usage_events order by user_id").fetchall()


def test_distribute_lays_out_the_ledger_by_owner(distributed: DistributedDatabase) -> None:
    with db.connect(distributed.url, autocommit=True) as conn:
        layout = dict(
            conn.execute(
                "select logicalrelid::regclass::text,"
                " coalesce(column_to_column_name(logicalrelid, partkey), partmethod::text) from pg_dist_partition"
            ).fetchall()
        )
        colocated = conn.execute(
            "select count(distinct colocationid) from pg_dist_partition"
            " where logicalrelid in ('public.usage_events'::regclass, 'usagemeter_private.usage_event_keys'::regclass)"
        ).fetchone()
        with pytest.raises(errors.DistributeError, match="distributed already"):
            distribute.distribute(conn)
    assert layout["usage_events"] == "owner_id"
    assert layout["usagemeter_private.usage_event_keys"] == "owner_id"
    for reference in (
        "tenants",
        "tenant_members",
        "usage_prices",
        "usage_budgets",
        "usage_closed_periods",
        "auth.users",
    ):
        assert layout[reference] == "n", reference
    assert colocated == (1,)


def test_one_tenant_query_routes_to_one_shard(distributed: DistributedDatabase) -> None:
    query = "explain select count(*), sum(tokens_total) from public.usage_events where owner_id = %s"
    with db.connect(distributed.url, autocommit=True) as conn:
        people = _arranged(conn)
        with acting_as(conn, Identity.user(people["alice"])):
            as_member = "\n".join(row[0] for row in conn.execute(query, (people["mine"],)))
        as_owner = "\n".join(row[0] for row in conn.execute(query, (people["mine"],)))
        everyone = "\n".join(row[0] for row in conn.execute("explain select count(*) from public.usage_events"))
    assert "Task Count: 1" in as_member, as_member
    assert "Task Count: 1" in as_owner, as_owner
    assert "usage_events_2" in as_owner, as_owner  # the shard's partitions, on one worker
    assert "Task Count: 1\n" not in everyone, everyone  # without the owner: every shard


def test_members_read_their_tenant_personal_users_their_own_anon_nothing(distributed: DistributedDatabase) -> None:
    with db.connect(distributed.app_url, autocommit=True) as conn:
        with db.connect(distributed.url, autocommit=True) as owner:
            people = _arranged(owner)
        assert _visible(conn, Identity.user(people["alice"])) == [(people["mine"], people["alice"])]
        assert _visible(conn, Identity.user(people["bob"])) == [(people["foreign"], people["bob"])]
        assert _visible(conn, Identity.user(people["carol"])) == [(None, people["carol"])]
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            _visible(conn, Identity.anon())
        service = _visible(conn, Identity.service())
    assert {(people["mine"], people["alice"]), (people["foreign"], people["bob"]), (None, people["carol"])} <= set(
        service
    )


@pytest.mark.parametrize(
    "forgery",
    ["foreign tenant", "forged user", "personal as another"],
)
def test_forged_inserts_are_refused(distributed: DistributedDatabase, forgery: str) -> None:
    with db.connect(distributed.url, autocommit=True) as owner:
        people = _arranged(owner)
    tenant, user = {
        "foreign tenant": (people["foreign"], people["alice"]),
        "forged user": (people["mine"], people["bob"]),
        "personal as another": (None, people["carol"]),
    }[forgery]
    with (
        db.connect(distributed.app_url, autocommit=True) as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"),
        acting_as(conn, Identity.user(people["alice"])),
    ):
        conn.execute(
            "insert into public.usage_events (owner_id, tenant_id, user_id, action)"
            " values (%s, %s, %s, 'agency:scope:generate')",
            (tenant or user, tenant, user),
        )
    with db.connect(distributed.url, autocommit=True) as owner:
        stored = owner.execute(
            "select count(*) from public.usage_events where owner_id = %s and user_id = %s", (tenant or user, user)
        ).fetchone()
    assert stored == (1 if forgery == "personal as another" else 0,)  # only the arranged event


def test_an_insert_of_the_seed_columns_alone_is_refused_saying_what_is_missing(
    distributed: DistributedDatabase,
) -> None:
    with db.connect(distributed.url, autocommit=True) as owner:
        people = _arranged(owner)
    with db.connect(distributed.app_url, autocommit=True) as conn:
        with (
            pytest.raises(psycopg.errors.NotNullViolation, match="owner_id is required") as refused,
            acting_as(conn, Identity.user(people["alice"])),
        ):
            conn.execute(
                "insert into public.usage_events (tenant_id, user_id, action) values (%s, %s, 'agency:scope:generate')",
                (people["mine"], people["alice"]),
            )
        assert refused.value.diag.message_hint is not None
        assert "coalesce(tenant_id, user_id)" in refused.value.diag.message_hint
        assert refused.value.diag.column_name == "owner_id"
        with (
            pytest.raises(psycopg.errors.CheckViolation, match="usage_events_owner_id_matches"),
            acting_as(conn, Identity.user(people["alice"])),
        ):
            conn.execute(
                "insert into public.usage_events (owner_id, tenant_id, user_id, action)"
                " values (%s, %s, %s, 'agency:scope:generate')",
                (people["alice"], people["mine"], people["alice"]),
            )


def test_recorder_writes_and_retries_idempotently(distributed: DistributedDatabase) -> None:
    with db.connect(distributed.url, autocommit=True) as owner:
        people = _arranged(owner)
    key = f"req-{uuid.uuid4().hex}"
    batch = [
        {
            "action": "agency:scope:generate",
            "tenant_id": people["mine"],
            "tokens_input": n,
            "idempotency_key": f"{key}-{n}",
        }
        for n in range(5)
    ] + [{"action": "chat:message:send", "tokens_input": 7, "idempotency_key": f"{key}-personal"}]
    with Recorder(distributed.app_url) as recorder:
        alice = recorder.as_user(people["alice"])
        first = alice.record(
            action="agency:scope:generate", user_id=None, tenant_id=people["mine"], tokens_input=3, idempotency_key=key
        )
        again = alice.record(
            action="agency:scope:generate", user_id=None, tenant_id=people["mine"], tokens_input=3, idempotency_key=key
        )
        many = alice.record_many(batch)
        many_again = alice.record_many(batch)
        with pytest.raises(errors.IdempotencyConflict):
            alice.record(
                action="agency:scope:generate",
                user_id=None,
                tenant_id=people["mine"],
                tokens_input=4,
                idempotency_key=key,
            )
    assert again.id == first.id
    assert [r.id for r in many_again] == [r.id for r in many]
    with db.connect(distributed.url, autocommit=True) as owner:
        rows = owner.execute(
            "select owner_id, tenant_id, count(*), sum(tokens_input) from public.usage_events"
            " where user_id = %s and idempotency_key like %s group by 1, 2 order by 2 nulls first",
            (people["alice"], f"{key}%"),
        ).fetchall()
    assert rows == [(people["alice"], None, 1, 7), (people["mine"], people["mine"], 6, 3 + sum(range(5)))]


def test_cli_distribute_refuses_a_database_without_citus(citus: citus_cluster.CitusCluster) -> None:
    with db.connect(citus.url(), autocommit=True) as conn:
        conn.execute("create database um_citus_plain")
    try:
        done = subprocess.run(
            [sys.executable, "-m", "usagemeter", "db", "distribute", "--database-url", citus.url("um_citus_plain")],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        with db.connect(citus.url(), autocommit=True) as conn:
            conn.execute("drop database um_citus_plain with (force)")
    assert done.returncode == 1
    assert "create extension citus" in " ".join((done.stderr + done.stdout).split())  # rich wraps lines
