"""The rest of the ledger on the cluster: enqueue, corrections, listings and exports, PostgREST's
claims, partitions ahead, and deletions (docs/distributed.md)."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg import sql as pgsql

from tests import factories
from tests.citus.conftest import DistributedDatabase
from usagemeter import Recorder, db, errors
from usagemeter.billing import corrections
from usagemeter.db import Identity, acting_as
from usagemeter.ops import partitions
from usagemeter.recording import writer
from usagemeter.recording.event import UsageEvent
from usagemeter.recording.recorder import AsyncRecorder
from usagemeter.reporting import exporting, listing, report_sql
from usagemeter.tenancy import tenants

ACTION = "agency:scope:generate"


def _member(conn: psycopg.Connection[Any]) -> tuple[uuid.UUID, uuid.UUID]:
    """A tenant of its own and a member of it."""
    tenant, user = factories.add_tenant(conn), factories.add_user(conn)
    factories.add_member(conn, tenant, user)
    return tenant, user


def _listing(tenant: uuid.UUID, *, limit: int = 100) -> listing.ListQuery:
    """The tenant's events of the last and the next day."""
    now = datetime.now(UTC)
    return listing.ListQuery(
        scope="tenant", tenant_id=tenant, start=now - timedelta(days=1), end=now + timedelta(days=1), limit=limit
    )


def test_enqueued_events_arrive_once_with_their_owner(distributed: DistributedDatabase) -> None:
    with db.connect(distributed.url, autocommit=True) as owner:
        tenant, alice = _member(owner)
    key = f"enq-{uuid.uuid4().hex}"
    with Recorder(distributed.app_url) as recorder:
        as_alice = recorder.as_user(alice)
        for n in range(20):
            as_alice.enqueue(
                user_id=None, action=ACTION, tenant_id=tenant, tokens_input=n, idempotency_key=f"{key}-{n}"
            )
            as_alice.enqueue(
                user_id=None, action=ACTION, tenant_id=tenant, tokens_input=n, idempotency_key=f"{key}-{n}"
            )  # a retry
        as_alice.enqueue(user_id=None, action="chat:message:send", tokens_input=5, idempotency_key=f"{key}-personal")
        assert recorder.flush(30)
        counters = recorder.counters
    with db.connect(distributed.url, autocommit=True) as owner:
        rows = owner.execute(
            "select owner_id, tenant_id, count(*), sum(tokens_input) from public.usage_events"
            " where user_id = %s group by 1, 2 order by 2 nulls first",
            (alice,),
        ).fetchall()
    assert rows == [(alice, None, 1, 5), (tenant, tenant, 20, sum(range(20)))]
    assert (counters.rejected, counters.spooled) == (0, 0)


def test_void_and_amend_find_the_event_on_its_shard(distributed: DistributedDatabase) -> None:
    with db.connect(distributed.url, autocommit=True) as owner:
        tenant, alice = _member(owner)
    with Recorder(distributed.app_url) as recorder:
        voided = recorder.as_user(alice).record(
            user_id=None, action=ACTION, tenant_id=tenant, tokens_input=10, tokens_output=5
        )
        amended = recorder.as_user(alice).record(
            user_id=None, action=ACTION, tenant_id=tenant, tokens_input=10, tokens_output=5
        )
        personal = recorder.as_user(alice).record(user_id=None, action=ACTION, tokens_input=8)
    with db.connect(distributed.app_url, autocommit=True) as conn:
        void = corrections.void(conn, event_id=voided.id, reason="duplicate request")
        with pytest.raises(errors.CorrectionRefused, match="already void"):
            corrections.void(conn, event_id=voided.id, reason="again")
        amend = corrections.amend(conn, event_id=amended.id, tokens_input=3, tokens_output=1, reason="provider recount")
        again = corrections.amend(conn, event_id=amended.id, tokens_input=3, tokens_output=1, reason="retried")
        corrections.void(conn, event_id=personal.id, reason="test account")
        with pytest.raises(errors.CorrectionRefused, match="correction entry"):
            corrections.void(conn, event_id=void.entry_id, reason="an entry")
        with pytest.raises(errors.EventNotFound):
            corrections.void(conn, event_id=uuid.uuid4(), reason="nobody's")
        with pytest.raises(errors.PermissionDenied):
            corrections.void(conn, event_id=amended.id, reason="a member may not", identity=Identity.user(alice))
        history = corrections.history(conn, Identity.user(alice), amended.id)
    assert (void.tokens_input, void.tokens_output) == (-10, -5)
    assert (amend.tokens_input, amend.tokens_output) == (-7, -4)
    assert (again.tokens_input, again.tokens_output) == (0, 0)  # the same totals again change nothing more
    assert (history.tokens_input, history.tokens_output, history.void) == (3, 1, False)
    with db.connect(distributed.url, autocommit=True) as owner:
        totals = owner.execute(
            "select owner_id, sum(event_count), sum(tokens_input), sum(tokens_output) from public.usage_events"
            " where user_id = %s group by 1 order by 1",
            (alice,),
        ).fetchall()
    assert sorted(totals) == sorted([(tenant, 1, 3, 1), (alice, 0, 0, 0)])  # entries live on their event's shard


def test_correction_entries_cannot_be_written_directly(distributed: DistributedDatabase) -> None:
    with db.connect(distributed.url, autocommit=True) as owner:
        tenant, alice = _member(owner)
        event = owner.execute(
            "insert into public.usage_events (owner_id, tenant_id, user_id, action, tokens_input)"
            " values (%s, %s, %s, %s, 4) returning id",
            (tenant, tenant, alice, ACTION),
        ).fetchone()
        assert event is not None
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="void_usage_event_v1"):
            owner.execute(
                "insert into public.usage_events (owner_id, tenant_id, user_id, action, tokens_input,"
                " corrects_event_id, correction_kind, correction_reason)"
                " values (%s, %s, %s, %s, -4, %s, 'void', 'forged')",
                (tenant, tenant, alice, ACTION, event[0]),
            )


def test_listings_and_exports_show_a_member_their_tenant_only(distributed: DistributedDatabase) -> None:
    with db.connect(distributed.url, autocommit=True) as owner:
        tenant, alice = _member(owner)
        other, bob = _member(owner)
    with Recorder(distributed.app_url) as recorder:
        recorder.as_user(alice).record_many(
            [{"action": ACTION, "tenant_id": tenant, "tokens_input": n, "metadata": {"model": "m"}} for n in range(7)]
        )
        recorder.as_user(bob).record(user_id=None, action=ACTION, tenant_id=other, tokens_input=99)
    query = _listing(tenant, limit=3)
    with db.connect(distributed.app_url, autocommit=True) as conn:
        pages, cursor = [], None
        while True:
            page = listing.list_events(conn, Identity.user(alice), query, cursor=cursor)
            pages.append(page.events)
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        sink = io.BytesIO()
        exported = exporting.export_events(conn, Identity.user(alice), query, "csv", sink)
        foreign = exporting.export_events(
            conn,
            Identity.user(alice),
            _listing(other),
            "jsonl",
            io.BytesIO(),
        )
    # The product's statements name the owner key on the cluster: one task, on the tenant's shard.
    plans = []
    with db.connect(distributed.url, autocommit=True) as owner:
        for statement in (
            report_sql.listing_query("tenant", [], routed=True),
            report_sql.export_query("tenant", [], report_sql.EXPORT_COLUMNS, routed=True),
        ):
            params = {**query.parameters(), "limit": 3}
            plans.append("\n".join(row[0] for row in owner.execute(pgsql.SQL("explain {}").format(statement), params)))
    listed = [event for page in pages for event in page]
    assert all("Task Count: 1\n" in plan for plan in plans), plans
    assert [len(page) for page in pages] == [3, 3, 1]
    assert sorted(event.tokens_input for event in listed) == list(range(7))
    assert exported == 7
    rows = list(csv.DictReader(io.StringIO(sink.getvalue().decode())))
    assert sorted(int(row["tokens_input"]) for row in rows) == list(range(7))
    assert {row["tenant_id"] for row in rows} == {str(tenant)}
    assert foreign == 0  # RLS on the shards: another tenant's events are not Alice's to export


def test_postgrest_claims_reach_the_workers_through_the_pre_request_hook(distributed: DistributedDatabase) -> None:
    with db.connect(distributed.url, autocommit=True) as owner:
        tenant, alice = _member(owner)
        owner.execute(
            "insert into public.usage_events (owner_id, tenant_id, user_id, action) values (%s, %s, %s, %s)",
            (tenant, tenant, alice, ACTION),
        )
        hook = owner.execute(
            "select c from pg_db_role_setting as s, unnest(s.setconfig) as c"
            " where s.setrole = 'authenticator'::regrole and c like 'pgrst.db_pre_request=%'"
        ).fetchone()
    claims = json.dumps({"sub": str(alice), "role": "authenticated"})
    with db.connect(distributed.app_url) as conn:  # what PostgREST runs per request, in one transaction
        conn.execute("set local role authenticated")
        conn.execute("select set_config('request.jwt.claims', %s, true)", (claims,))
        without_hook = conn.execute("select count(*) from public.usage_events").fetchone()
        conn.execute("select usagemeter_request.propagate_claims_v1()")
        with_hook = conn.execute("select count(*) from public.usage_events").fetchone()
        conn.execute(
            "insert into public.usage_events (owner_id, tenant_id, user_id, action) values (%s, %s, %s, %s)",
            (tenant, tenant, alice, ACTION),
        )
        written = conn.execute("select count(*) from public.usage_events").fetchone()
        conn.rollback()
    assert hook == ("pgrst.db_pre_request=usagemeter_request.propagate_claims_v1",)
    assert without_hook == (0,)  # set_config alone does not reach the shards: the reason for the hook
    assert with_hook == (1,)
    assert written == (2,)


def test_partitions_are_created_ahead_through_the_coordinator(distributed: DistributedDatabase) -> None:
    with db.connect(distributed.url, autocommit=True) as owner:
        created = partitions.create_ahead(owner, months_ahead=6)
        again = partitions.create_ahead(owner, months_ahead=6)
        month = datetime.now(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        last = (month + timedelta(days=32 * 6)).replace(day=1)
        distributed_partitions = owner.execute(
            "select count(*) from pg_dist_partition where logicalrelid::text like 'usagemeter_private.usage_events_2%'"
            " and colocationid = (select colocationid from pg_dist_partition"
            " where logicalrelid = 'public.usage_events'::regclass)"
        ).fetchone()
        tenant, alice = _member(owner)
        owner.execute(
            "insert into public.usage_events (owner_id, tenant_id, user_id, action, created_at)"
            " values (%s, %s, %s, %s, %s)",
            (tenant, tenant, alice, ACTION, last + timedelta(days=3)),
        )
        stored = owner.execute(
            "select tableoid::regclass::text from public.usage_events where owner_id = %s", (tenant,)
        ).fetchone()
    assert again == []
    assert set(created) <= {f"usage_events_{(month + timedelta(days=31 * n)).replace(day=1):%Y_%m}" for n in range(7)}
    assert distributed_partitions is not None
    assert distributed_partitions[0] >= 7
    assert stored is not None
    assert stored[0].startswith(f"usagemeter_private.usage_events_{last:%Y_%m}_")  # a shard of that month


def test_deleting_a_user_or_a_tenant_reaches_the_shards(distributed: DistributedDatabase) -> None:
    with db.connect(distributed.url, autocommit=True) as owner:
        tenant, alice = _member(owner)
        for tenant_id in (tenant, None):
            owner.execute(
                "insert into public.usage_events (owner_id, tenant_id, user_id, action) values (%s, %s, %s, %s)",
                (tenant_id or alice, tenant_id, alice, ACTION),
            )
        owner.execute("delete from auth.users where id = %s", (alice,))
        after_user = owner.execute(
            "select owner_id, user_id from public.usage_events where owner_id in (%s, %s)", (tenant, alice)
        ).fetchall()
        owner.execute("delete from public.tenants where id = %s", (tenant,))
        after_tenant = owner.execute(
            "select count(*) from public.usage_events where owner_id = %s", (tenant,)
        ).fetchone()
        keys = owner.execute(
            "select count(*) from usagemeter_private.usage_event_keys where owner_id in (%s, %s)", (tenant, alice)
        ).fetchone()
    assert after_user == [(tenant, None)]  # Personal events go with the user; the tenant keeps its event, unattributed
    assert after_tenant == (0,)
    assert keys == (0,)


def test_the_http_api_writes_reads_and_voids_on_the_cluster(distributed: DistributedDatabase) -> None:
    from tests import http_server
    from usagemeter import api
    from usagemeter.api import auth

    with db.connect(distributed.url, autocommit=True) as owner:
        tenant, alice = _member(owner)
        other, _ = _member(owner)
    config = api.ServerConfig(
        app_database_url=distributed.app_url,
        verifier=auth.TokenVerifier(secret=http_server.SECRET, jwks_url=None),
        spool_dir=None,
        read_pool_size=2,
        write_pool_size=2,
    )
    today = datetime.now(UTC).date()
    window = {"tenant": str(tenant), "from": str(today - timedelta(days=1)), "to": str(today + timedelta(days=1))}
    with http_server.running_api(config) as running:
        client = running.as_user(alice)
        body = {"action": ACTION, "tenant_id": str(tenant), "tokens_input": 4}
        first = client.post("/v1/events", json=body, headers={"Idempotency-Key": "http-1"})
        again = client.post("/v1/events", json=body, headers={"Idempotency-Key": "http-1"})
        forged = client.post("/v1/events", json={**body, "tenant_id": str(other)})
        personal = client.post("/v1/events", json={"action": ACTION, "tokens_input": 2})
        listed = client.get("/v1/events", params=window)
        exported = client.get("/v1/export", params={**window, "format": "jsonl"})
        voided = running.as_service().post(f"/v1/events/{first.json()['id']}/void", json={"reason": "duplicate"})
        refused = client.post(f"/v1/events/{first.json()['id']}/void", json={"reason": "mine"})
    assert (first.status_code, again.status_code, personal.status_code) == (201, 200, 201), first.text
    assert again.json()["id"] == first.json()["id"]
    assert forged.status_code == 403
    assert listed.status_code == 200, listed.text
    assert [event["tokens_input"] for event in listed.json()["events"]] == [4]
    assert [json.loads(line)["tokens_input"] for line in exported.text.splitlines()] == [4]
    assert voided.status_code == 200, voided.text
    assert refused.status_code == 403


def test_a_members_mixed_batch_is_written_in_one_round_trip(distributed: DistributedDatabase) -> None:
    """Citus would send an INSERT ... SELECT's rows to the shards by COPY, refused under RLS; a VALUES list is not."""
    with db.connect(distributed.url, autocommit=True) as owner:
        tenant, alice = _member(owner)
    events = [
        UsageEvent(user_id=alice, tenant_id=tenant if n % 3 else None, action=ACTION, tokens_input=n)
        for n in range(150)  # more than one chunk of the pipeline
    ]
    chunks = [[writer.Pending.of(e) for e in events[:100]], [writer.Pending.of(e) for e in events[100:]]]
    with db.connect(distributed.app_url, autocommit=True) as conn:
        written = writer.write_fast(conn, [(Identity.user(alice), chunks)])
    with db.connect(distributed.url, autocommit=True) as owner:
        stored = owner.execute(
            "select owner_id, count(*), sum(tokens_input) from public.usage_events where user_id = %s group by 1",
            (alice,),
        ).fetchall()
    assert len(written) == 150
    assert sorted(stored) == sorted(
        [(tenant, 100, sum(n for n in range(150) if n % 3)), (alice, 50, sum(range(0, 150, 3)))]
    )


def test_maintain_grants_inserts_on_shards_made_since(distributed: DistributedDatabase) -> None:
    grants = (
        "select array_agg(result order by shardid) from run_command_on_shards("
        "'public.usage_events', $$select has_table_privilege('authenticated', '%s', 'INSERT')$$)"
    )
    with db.connect(distributed.url, autocommit=True) as owner:
        owner.execute("select run_command_on_shards('public.usage_events', 'revoke insert on %s from authenticated')")
        revoked = owner.execute(grants).fetchone()
    done = subprocess.run(
        [sys.executable, "-m", "usagemeter", "maintain", "--database-url", distributed.url],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    with db.connect(distributed.url, autocommit=True) as owner:
        granted = owner.execute(grants).fetchone()
    assert revoked is not None
    assert set(revoked[0]) == {"f"}  # as shards a rebalance makes: the shell table's grants only
    assert done.returncode == 0, done.stderr
    assert granted is not None
    assert set(granted[0]) == {"t"}


def test_async_recorder_group_commits_on_the_cluster(distributed: DistributedDatabase) -> None:
    with db.connect(distributed.url, autocommit=True) as owner:
        tenant, alice = _member(owner)
    key = f"async-{uuid.uuid4().hex}"

    async def record_all() -> list[uuid.UUID]:
        async with AsyncRecorder(distributed.app_url) as recorder:
            as_alice = recorder.as_user(alice)
            calls = [
                as_alice.record(
                    user_id=None,
                    action=ACTION,
                    tenant_id=tenant if n % 4 else None,
                    tokens_input=n,
                    idempotency_key=f"{key}-{n}",
                )
                for n in [*range(50), *range(50)]  # every event twice, concurrently
            ]
            return [recorded.id for recorded in await asyncio.gather(*calls, return_exceptions=False)]

    ids = asyncio.run(record_all())
    with db.connect(distributed.url, autocommit=True) as owner:
        stored = owner.execute(
            "select owner_id, count(*) from public.usage_events where idempotency_key like %s group by 1",
            (f"{key}-%",),
        ).fetchall()
    assert len(set(ids)) == 50  # each key's two calls answered with one event
    assert sorted(stored) == sorted([(tenant, 37), (alice, 13)])


def test_tenants_and_members_are_managed_through_the_api_roles(distributed: DistributedDatabase) -> None:
    """Writes to reference tables with foreign keys (tenants, members) as the service role and as an owner."""
    with db.connect(distributed.url, autocommit=True) as owner:
        alice, bob = factories.add_user(owner), factories.add_user(owner)
    slug = f"cluster-{uuid.uuid4().hex[:10]}"
    with db.connect(distributed.app_url, autocommit=True) as app:
        made = tenants.create_tenant(app, Identity.service(), name="On the cluster", slug=slug, owner_user_id=alice)
        tenants.add_member(app, Identity.user(alice), tenant_id=made.id, user_id=bob, role="member")
        members = tenants.list_members(app, Identity.user(bob), made.id)
        with pytest.raises(errors.PermissionDenied):
            tenants.add_member(app, Identity.user(bob), tenant_id=made.id, user_id=bob, role="owner")
        with acting_as(app, Identity.user(bob)):
            app.execute(
                "insert into public.usage_events (owner_id, tenant_id, user_id, action) values (%s, %s, %s, %s)",
                (made.id, made.id, bob, ACTION),
            )
    assert sorted((m.user_id, m.role) for m in members) == sorted([(alice, "owner"), (bob, "member")])
