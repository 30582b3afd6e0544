"""A populated unpartitioned usage_events converts: the same rows, ids, sums, rollups and RLS results after."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from tests import factories
from usagemeter import db
from usagemeter.db import Identity, acting_as
from usagemeter.ops import migrate, partitions
from usagemeter.reporting import rollup_check

PARTITIONING = "20261205090000"

EVERY_ROW = (
    "select id, tenant_id, user_id, action, module_id, tokens_input, tokens_output, tokens_total, metadata, created_at,"
    " idempotency_key, personal_user_id, model, cost, corrects_event_id, correction_kind, correction_reason,"
    " event_count, recorded_at, occurred_at from public.usage_events order by id"
)
SUMS = "select count(*), sum(tokens_input), sum(tokens_output), sum(cost), sum(event_count) from public.usage_events"
VISIBLE = "select id from public.usage_events order by id"


def _populate(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    """Two tenants, a personal user and an outsider; 3,000 events over five months, keys, a void."""
    mine, foreign = factories.add_tenant(conn), factories.add_tenant(conn)
    alice, bob, solo, outsider = (factories.add_user(conn) for _ in range(4))
    factories.add_member(conn, mine, alice)
    factories.add_member(conn, foreign, bob)
    conn.execute(
        """
        insert into public.usage_events
          (tenant_id, user_id, action, tokens_input, tokens_output, metadata, created_at, idempotency_key)
        select case i %% 3 when 0 then %(mine)s when 1 then %(foreign)s end,
               case i %% 3 when 0 then %(alice)s when 1 then %(bob)s else %(solo)s end,
               'agency:scope:generate', i %% 97, i %% 13, jsonb_build_object('n', i),
               now() - make_interval(days => i %% 150, secs => i), case when i %% 4 = 0 then 'key-' || i end
        from generate_series(1, 3000) as i
        """,
        {"mine": mine, "foreign": foreign, "alice": alice, "bob": bob, "solo": solo},
    )
    voided = conn.execute("select id from public.usage_events where tenant_id = %s limit 1", (mine,)).fetchone()
    assert voided is not None
    with acting_as(conn, Identity.service()):
        conn.execute("select public.void_usage_event_v1(%s, 'duplicate call')", (voided[0],))
    return {"alice": alice, "bob": bob, "solo": solo, "outsider": outsider}


def _snapshot(conn: psycopg.Connection[Any], users: dict[str, uuid.UUID]) -> dict[str, Any]:
    seen = {}
    for name, user in users.items():
        with acting_as(conn, Identity.user(user)):
            seen[name] = [row[0] for row in conn.execute(VISIBLE)]
    return {"rows": conn.execute(EVERY_ROW).fetchall(), "sums": conn.execute(SUMS).fetchone(), "seen": seen}


def test_a_populated_table_converts_with_every_row_id_sum_and_rls_result_kept(empty_database: str) -> None:
    everything = migrate.discover_migrations()
    before_partitioning = [m for m in everything if m.version < PARTITIONING]
    assert len(before_partitioning) < len(everything)
    with db.connect(empty_database, autocommit=True) as conn:
        migrate.migrate(conn, before_partitioning)
        users = _populate(conn)
        before = _snapshot(conn, users)
        assert len(before["rows"]) == 3001
        assert before["seen"]["outsider"] == []
        assert 0 < len(before["seen"]["alice"]) < 3001

        migrate.migrate(conn, everything)
        kind = conn.execute("select relkind from pg_class where oid = 'public.usage_events'::regclass").fetchone()
        assert kind == ("p",)
        assert _snapshot(conn, users) == before  # in the default partition, nothing moved yet
        held = sum(events for _, events in partitions.default_months(conn))
        assert held == 3001

        moved = partitions.move_out_of_default(conn)
        assert sum(m.events for m in moved) == 3001
        assert len(moved) >= 5
        assert partitions.default_months(conn) == []
        assert _snapshot(conn, users) == before
        assert rollup_check.differences(conn) == 0
        keys = conn.execute("select count(*) from usagemeter_private.usage_event_keys").fetchone()
        assert keys == (3001,)

        # The converted ledger takes writes and keeps keys unique across its months.
        row = conn.execute(
            "select tenant_id, user_id from public.usage_events where idempotency_key = 'key-4'"
        ).fetchone()
        assert row is not None
        later = datetime.now(UTC) + timedelta(days=40)
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute(
                "insert into public.usage_events (tenant_id, user_id, action, idempotency_key, created_at)"
                " values (%s, %s, 'agency:scope:generate', 'key-4', %s)",
                (row[0], row[1], later),
            )
