"""usage_events by month: partitions ahead, the default partition emptied, ids and keys unique across months."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg import errors as pgerrors

from tests import factories
from usagemeter.db import Identity, acting_as
from usagemeter.ops import partitions
from usagemeter.reporting import summaries

PARTITIONS = (
    "select c.relname, n.nspname from pg_inherits as i join pg_class as c on c.oid = i.inhrelid"
    " join pg_namespace as n on n.oid = c.relnamespace where i.inhparent = 'public.usage_events'::regclass"
)


def partition_name(month_start: datetime) -> str:
    """The partition the migration names for a UTC month: the tests' own spelling of usage_event_partition_name_v1."""
    return f"usage_events_{month_start.astimezone(UTC):%Y_%m}"


def month_start(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def add_months(start: datetime, months: int) -> datetime:
    index = start.year * 12 + start.month - 1 + months
    return start.replace(year=index // 12, month=index % 12 + 1)


def partition_names(conn: psycopg.Connection[Any]) -> set[str]:
    return {row[0] for row in conn.execute(PARTITIONS)}


def insert_at(
    conn: psycopg.Connection[Any], *, user: uuid.UUID, at: datetime, event_id: uuid.UUID | None = None
) -> None:
    conn.execute(
        "insert into public.usage_events (id, user_id, action, tokens_input, created_at)"
        " values (%s, %s, 'a:b:c', 7, %s)",
        (event_id or uuid.uuid4(), user, at),
    )


def test_a_migrated_database_has_this_month_and_three_ahead_out_of_every_api_roles_reach(
    owner: psycopg.Connection[Any],
) -> None:
    this_month = month_start(datetime.now(UTC))
    expected = {partition_name(add_months(this_month, k)) for k in range(4)}
    rows = dict(owner.execute(PARTITIONS).fetchall())
    assert expected | {"usage_events_default"} <= set(rows)
    assert set(rows.values()) == {"usagemeter_private"}
    for name in rows:
        for role in ("anon", "authenticated", "service_role"):
            row = owner.execute(
                "select has_table_privilege(%s, format('usagemeter_private.%%I', %s::text),"
                " 'select,insert,update,delete,truncate')",
                (role, name),
            ).fetchone()
            assert row == (False,), (role, name)
        rls = owner.execute(
            "select relrowsecurity from pg_class where oid = format('usagemeter_private.%%I', %s::text)::regclass",
            (name,),
        ).fetchone()
        assert rls == (True,), name
    assert partitions.create_ahead(owner) == []  # already there: nothing to do


def test_rows_without_a_partition_land_in_the_default_and_maintain_moves_them_out(
    owner: psycopg.Connection[Any],
) -> None:
    user = factories.add_user(owner)
    far = add_months(month_start(datetime.now(UTC)), 9) + timedelta(days=3)
    ids = [uuid.uuid4() for _ in range(3)]
    for event_id in ids:
        insert_at(owner, user=user, at=far, event_id=event_id)
    assert partitions.default_months(owner) == [(month_start(far), 3)]
    seen: list[tuple[int, int]] = []
    moved = partitions.move_out_of_default(owner, progress=lambda _month, copied, total: seen.append((copied, total)))
    assert [(m.partition, m.events) for m in moved] == [(partition_name(month_start(far)), 3)]
    assert seen[-1] == (3, 3)
    assert partitions.default_months(owner) == []
    where = owner.execute(
        "select tableoid::regclass::text from public.usage_events where id = any(%s) group by 1", (ids,)
    ).fetchall()
    assert where == [(f"usagemeter_private.{partition_name(month_start(far))}",)]
    assert partitions.move_out_of_default(owner) == []  # a second run has nothing to move


def test_an_id_is_unique_across_months(owner: psycopg.Connection[Any]) -> None:
    user = factories.add_user(owner)
    event_id = uuid.uuid4()
    now = datetime.now(UTC)
    insert_at(owner, user=user, at=now, event_id=event_id)
    with pytest.raises(pgerrors.UniqueViolation, match="usage_event_keys_pkey"):
        insert_at(owner, user=user, at=add_months(now, 1), event_id=event_id)
    assert factories.count_events(owner) == 1


def test_deleting_an_event_deletes_its_corrections_and_frees_its_id(owner: psycopg.Connection[Any]) -> None:
    tenant, user = factories.add_tenant(owner), factories.add_user(owner)
    event_id = factories.add_event(owner, tenant_id=tenant, user_id=user, metadata={"model": "m"})
    with acting_as(owner, Identity.service()):
        owner.execute("select public.void_usage_event_v1(%s, 'test')", (event_id,))
    assert factories.count_events(owner) == 2
    owner.execute("delete from public.usage_events where id = %s", (event_id,))
    assert factories.count_events(owner) == 0
    assert owner.execute("select count(*) from usagemeter_private.usage_event_keys").fetchone() == (0,)
    insert_at(owner, user=user, at=datetime.now(UTC), event_id=event_id)  # the id is free again


def test_a_summary_of_one_month_reads_only_that_months_partition(owner: psycopg.Connection[Any]) -> None:
    tenant, user = factories.add_tenant(owner), factories.add_user(owner)
    factories.add_member(owner, tenant, user)
    this_month = month_start(datetime.now(UTC))
    query = summaries.SummaryQuery(
        scope="tenant",
        tenant_id=tenant,
        start=this_month,
        end=add_months(this_month, 1),
        metadata={"model": "m"},  # rollups lack metadata: this one reads raw events
    )
    plan = summaries.source_plan(query)
    assert plan.source == "raw"
    statement, params = summaries.summary_statement(query)
    with acting_as(owner, Identity.user(user)):
        row = owner.execute(psycopg.sql.SQL("explain (format json) {}").format(statement), params).fetchone()
    assert row is not None
    document = row[0] if isinstance(row[0], list) else json.loads(row[0])
    relations = {node["Relation Name"] for node in _nodes(document[0]["Plan"]) if "Relation Name" in node}
    event_tables = {r for r in relations if r.startswith("usage_events")}
    assert event_tables == {partition_name(this_month)}, relations


def _nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    return [plan, *(node for child in plan.get("Plans", []) for node in _nodes(child))]
