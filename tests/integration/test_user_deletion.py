"""Deleting a user (right to erasure): tenant usage stays with no user, personal usage goes, totals stay exact."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import errors as pgerrors
from psycopg import sql as pgsql

from tests import factories
from usagemeter.db import Identity, acting_as
from usagemeter.reporting import rollup_check, summaries

T0 = datetime(2026, 6, 1, tzinfo=UTC)
ROLLUPS = ("usage_rollup_hourly", "usage_rollup_daily")  # the ones with a user_id

TENANT_ROLLUP_TOTALS = pgsql.SQL(
    "select tenant_id, sum(events), sum(tokens_input), sum(tokens_output), sum(tokens_total)"
    " from {} where tenant_id is not null group by tenant_id order by tenant_id"
)


@dataclass(frozen=True)
class Ledger:
    tenant: uuid.UUID
    alice: uuid.UUID
    bob: uuid.UUID


def add_events(
    conn: psycopg.Connection[Any], *, tenant: uuid.UUID | None, user: uuid.UUID, count: int, tokens: int
) -> None:
    """`count` events spread over three days, so hourly and daily rollups hold several rows each."""
    conn.execute(
        "insert into public.usage_events (tenant_id, user_id, action, tokens_input, tokens_output, created_at)"
        " select %s, %s, case when i %% 2 = 0 then 'agency:scope:generate' else 'agency:brief:write' end,"
        " %s, i, %s + i * interval '97 minutes' from generate_series(1, %s) as i",
        (tenant, user, tokens, T0, count),
    )


@pytest.fixture
def ledger(owner: psycopg.Connection[Any]) -> Ledger:
    tenant, alice, bob = factories.add_tenant(owner), factories.add_user(owner), factories.add_user(owner)
    factories.add_member(owner, tenant, alice, "owner")
    factories.add_member(owner, tenant, bob, "member")
    add_events(owner, tenant=tenant, user=alice, count=40, tokens=10)
    add_events(owner, tenant=tenant, user=bob, count=30, tokens=7)
    add_events(owner, tenant=None, user=alice, count=25, tokens=3)
    add_events(owner, tenant=None, user=bob, count=20, tokens=5)
    return Ledger(tenant, alice, bob)


def tenant_rollup_totals(conn: psycopg.Connection[Any]) -> dict[str, list[tuple[Any, ...]]]:
    """Each rollup's tenant totals, after a fold (deltas not yet folded are not in the rollup tables)."""
    assert rollup_check.fold(conn) is not None
    tables = (*ROLLUPS, "usage_rollup_tenant_daily")
    return {
        table: conn.execute(TENANT_ROLLUP_TOTALS.format(pgsql.Identifier("public", table))).fetchall()
        for table in tables
    }


def tenant_summary(conn: psycopg.Connection[Any], ledger: Ledger, **grouping: Any) -> list[summaries.SummaryRow]:
    query = summaries.SummaryQuery(
        scope="tenant", tenant_id=ledger.tenant, start=T0, end=T0 + timedelta(days=5), **grouping
    )
    return summaries.summarize(conn, Identity.user(ledger.bob), query)


def rollup_rows_of(conn: psycopg.Connection[Any], user: uuid.UUID) -> int:
    counted = pgsql.SQL("select count(*) from {} where user_id = %s")
    total = 0
    for table in (*ROLLUPS, "usage_rollup_deltas"):
        row = conn.execute(counted.format(pgsql.Identifier("public", table)), (user,)).fetchone()
        assert row is not None
        total += int(row[0])
    return total


def delete_user(conn: psycopg.Connection[Any], user: uuid.UUID) -> None:
    conn.execute("delete from auth.users where id = %s", (user,))


def assert_erased(conn: psycopg.Connection[Any], ledger: Ledger) -> None:
    """What must hold once alice is deleted (bob stays)."""
    by_owner = conn.execute(
        "select tenant_id is not null, user_id, count(*) from public.usage_events group by 1, 2 order by 1, 3"
    ).fetchall()
    assert by_owner == [(False, ledger.bob, 20), (True, ledger.bob, 30), (True, None, 40)]
    assert rollup_rows_of(conn, ledger.alice) == 0, "a rollup row still carries the deleted user's id"
    personal_rollups = conn.execute(
        "select user_id, sum(events) from public.usage_rollup_daily where tenant_id is null group by 1"
    ).fetchall()
    assert personal_rollups == [(ledger.bob, 20)]
    members = conn.execute("select user_id from public.tenant_members").fetchall()
    assert members == [(ledger.bob,)]
    assert rollup_check.differences(conn) == 0


def test_deleting_a_user_keeps_tenant_usage_with_no_user_and_erases_personal_usage(
    owner: psycopg.Connection[Any], ledger: Ledger
) -> None:
    rollups_before = tenant_rollup_totals(owner)
    summary_before = tenant_summary(owner, ledger, bucket="day")
    by_user_before = {row.keys["user_id"]: row.events for row in tenant_summary(owner, ledger, group_by=("user",))}
    assert by_user_before == {ledger.alice: 40, ledger.bob: 30}

    delete_user(owner, ledger.alice)

    assert_erased(owner, ledger)
    assert tenant_rollup_totals(owner) == rollups_before
    assert tenant_summary(owner, ledger, bucket="day") == summary_before
    by_user_after = {row.keys["user_id"]: row.events for row in tenant_summary(owner, ledger, group_by=("user",))}
    assert by_user_after == {None: 40, ledger.bob: 30}


def test_user_deletion_works_whichever_foreign_key_action_runs_first(
    owner: psycopg.Connection[Any], ledger: Ledger
) -> None:
    # Re-creating both actions, SET NULL first, gives them consecutive oids in that order, so the SET
    # NULL action runs first (action triggers fire in name order, RI_ConstraintTrigger_a_<oid>; the
    # names compare as text, so oids on either side of a power of ten are re-created once more).
    order: list[tuple[str]] = []
    for _ in range(3):
        owner.execute(
            "alter table public.usage_events drop constraint usage_events_personal_user_id_fkey,"
            " drop constraint usage_events_user_id_fkey,"
            " add constraint usage_events_user_id_fkey foreign key (user_id) references auth.users (id)"
            " on delete set null,"
            " add constraint usage_events_personal_user_id_fkey foreign key (personal_user_id)"
            " references auth.users (id) on delete cascade"
        )
        order = owner.execute(
            "select c.conname from pg_trigger t join pg_constraint c on c.oid = t.tgconstraint"
            " where t.tgrelid = 'auth.users'::regclass and c.conrelid = 'public.usage_events'::regclass"
            " and t.tgtype & 8 = 8 order by t.tgname"  # 8: ON DELETE
        ).fetchall()
        if order[0] == ("usage_events_user_id_fkey",):
            break
    assert order == [("usage_events_user_id_fkey",), ("usage_events_personal_user_id_fkey",)]
    rollups_before = tenant_rollup_totals(owner)

    delete_user(owner, ledger.alice)

    assert_erased(owner, ledger)
    assert tenant_rollup_totals(owner) == rollups_before


def test_clearing_the_user_of_a_personal_event_directly_is_still_refused(
    owner: psycopg.Connection[Any], ledger: Ledger
) -> None:
    with (
        pytest.raises(pgerrors.CheckViolation, match="usage_events_owner_present"),
        acting_as(owner, Identity.service()),
    ):
        owner.execute(
            "update public.usage_events set user_id = null where user_id = %s and tenant_id is null", (ledger.bob,)
        )


def test_a_service_role_correction_still_moves_tenant_usage_between_users(
    owner: psycopg.Connection[Any], ledger: Ledger
) -> None:
    """Only all-zero rollup rows are dropped: a reassigned user keeps rows wherever they still have usage."""
    owner.execute(
        "update public.usage_events set user_id = null where user_id = %s and tenant_id is not null"
        " and ctid in (select ctid from public.usage_events where user_id = %s and tenant_id is not null limit 5)",
        (ledger.bob, ledger.bob),
    )
    assert rollup_check.differences(owner) == 0
    assert rollup_rows_of(owner, ledger.bob) > 0


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    events=st.lists(
        st.tuples(st.integers(0, 2), st.booleans(), st.integers(0, 500), st.integers(0, 72 * 60)), max_size=30
    ),
    deleted=st.sets(st.integers(0, 2), max_size=3),
)
def test_rollups_stay_exact_and_keep_no_deleted_user_after_any_deletions(
    owner: psycopg.Connection[Any], events: list[tuple[int, bool, int, int]], deleted: set[int]
) -> None:
    with owner.transaction(force_rollback=True):
        tenant = factories.add_tenant(owner)
        users = [factories.add_user(owner) for _ in range(3)]
        for user_index, in_tenant, tokens, minutes in events:
            owner.execute(
                "insert into public.usage_events (tenant_id, user_id, action, tokens_input, created_at)"
                " values (%s, %s, 'agency:scope:generate', %s, %s)",
                (tenant if in_tenant else None, users[user_index], tokens, T0 + timedelta(minutes=minutes)),
            )
        tenant_before = tenant_rollup_totals(owner)
        for index in sorted(deleted):
            delete_user(owner, users[index])
        assert rollup_check.differences(owner) == 0
        assert tenant_rollup_totals(owner) == tenant_before
        for index in deleted:
            assert rollup_rows_of(owner, users[index]) == 0
