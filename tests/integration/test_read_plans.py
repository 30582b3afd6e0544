"""Reads without a tenant filter stay on indexes under RLS (the spec's policy scans the whole table)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from bench import data
from usagemeter.db import Identity, acting_as
from usagemeter.ops import partitions

JUNE = "select * from public.usage_events where created_at >= '2026-06-01' and created_at < '2026-07-01'"
JUNE_TOTALS = (
    "select count(*), sum(tokens_total) from public.usage_events"
    " where created_at >= '2026-06-01' and created_at < '2026-07-01'"
)


def plan_nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from plan_nodes(child)


def explain(conn: psycopg.Connection[Any], identity: Identity, query: str) -> list[dict[str, Any]]:
    with acting_as(conn, identity):
        row = conn.execute(f"explain (format json) {query}").fetchone()
    assert row is not None
    document = row[0] if isinstance(row[0], list) else json.loads(row[0])
    return list(plan_nodes(document[0]["Plan"]))


# A partition's index is named after its table; the parent index it belongs to says what it is.
PARENT_INDEX = (
    "select p.relname from pg_inherits as i join pg_class as c on c.oid = i.inhrelid"
    " join pg_class as p on p.oid = i.inhparent where c.relname = %s"
)


def parent_index(conn: psycopg.Connection[Any], name: str) -> str:
    row = conn.execute(PARENT_INDEX, (name,)).fetchone()
    return str(row[0]) if row else name


@pytest.mark.slow
def test_unfiltered_reads_use_indexes_never_a_sequential_scan(owner: psycopg.Connection[Any]) -> None:
    subjects = data.load(owner, rows=200_000, tenants=200, users=1000)
    partitions.move_out_of_default(owner)  # June in its own partition, as maintain leaves it
    assert owner.execute("select count(*) from public.usage_events").fetchone() == (200_000,)
    for user in (subjects.member_of_three, subjects.personal_user):
        for query in (JUNE, JUNE_TOTALS):
            nodes = explain(owner, Identity.user(user), query)
            scans = {(n["Node Type"], n.get("Relation Name")) for n in nodes if "Scan" in n["Node Type"]}
            assert not any(node == "Seq Scan" for node, _ in scans), (query, scans)
            assert {relation for _, relation in scans if relation} == {"usage_events_2026_06"}, (query, scans)
            index_scans = {parent_index(owner, n["Index Name"]) for n in nodes if "Index Name" in n}
            assert index_scans >= {"usage_events_tenant_created_idx", "usage_events_personal_user_created_idx"}, (
                query,
                index_scans,
            )
