"""Partition upkeep on the cluster: `maintain` moves rows out of the default partition and `retention`
archives and drops a month, as on one node (docs/distributed.md)."""

from __future__ import annotations

import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pyarrow.parquet as pq
import pytest

from tests import factories
from tests.citus.conftest import DistributedDatabase
from usagemeter import db
from usagemeter.db import Identity, acting_as
from usagemeter.ops import partitions, retention

ACTION = "agency:scope:generate"
# Months no other test of the tier writes in: one moved out of the default partition, one dropped.
MOVED_MONTH = datetime(2024, 3, 1, tzinfo=UTC)
DROPPED_MONTH = datetime(2023, 11, 1, tzinfo=UTC)

TOTALS = "select count(*), count(distinct id), sum(tokens_input) from public.usage_events where owner_id = any(%s)"


def _events_in(conn: psycopg.Connection[Any], month: datetime, owner: uuid.UUID, tenant: uuid.UUID | None,
               user: uuid.UUID, count: int) -> None:  # fmt: skip
    conn.execute(
        "insert into public.usage_events (owner_id, tenant_id, user_id, action, tokens_input, idempotency_key,"
        " created_at) select %s, %s, %s, %s, n, %s || n, %s::timestamptz + n * interval '1 minute'"
        " from generate_series(1, %s) as n",
        (owner, tenant, user, ACTION, f"upkeep-{uuid.uuid4().hex}-", month, count),
    )


def _default_rows(conn: psycopg.Connection[Any], month: datetime) -> int:
    return dict(partitions.default_months(conn)).get(month, 0)


def test_maintain_moves_default_rows_into_a_distributed_month(distributed: DistributedDatabase) -> None:
    with db.connect(distributed.url, autocommit=True) as owner:
        tenant, alice = factories.add_tenant(owner), factories.add_user(owner)
        factories.add_member(owner, tenant, alice)
        _events_in(owner, MOVED_MONTH, tenant, tenant, alice, 300)
        _events_in(owner, MOVED_MONTH, alice, None, alice, 120)
        # A closed statement over the tenant's part: moving its rows is not changing them.
        owner.execute(
            "insert into public.usage_closed_periods (tenant_id, period_start, period_end, time_zone, statement)"
            " values (%s, %s, %s, 'UTC', '{}')",
            (tenant, MOVED_MONTH, MOVED_MONTH + timedelta(days=31)),
        )
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="is on a closed statement"):
            owner.execute("delete from public.usage_events where owner_id = %s", (tenant,))  # booking guard holds
        ids_before = owner.execute(
            "select array_agg(id order by id) from public.usage_events where owner_id = any(%s)", ([tenant, alice],)
        ).fetchone()
        before = owner.execute(TOTALS, ([tenant, alice],)).fetchone()
        in_default = _default_rows(owner, MOVED_MONTH)
    done = subprocess.run(
        [sys.executable, "-m", "usagemeter", "maintain", "--database-url", distributed.url],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    name = f"usage_events_{MOVED_MONTH:%Y_%m}"
    with db.connect(distributed.url, autocommit=True) as owner:
        after = owner.execute(TOTALS, ([tenant, alice],)).fetchone()
        ids_after = owner.execute(
            "select array_agg(id order by id) from public.usage_events where owner_id = any(%s)", ([tenant, alice],)
        ).fetchone()
        placed = owner.execute(
            "select count(*) from public.usage_events where owner_id = any(%s) and tableoid::regclass::text like %s",
            ([tenant, alice], f"usagemeter_private.{name}_%"),
        ).fetchone()
        colocated = owner.execute(
            "select (select colocationid from pg_dist_partition where logicalrelid = %s::regclass)"
            " = (select colocationid from pg_dist_partition where logicalrelid = 'public.usage_events'::regclass)",
            (f"usagemeter_private.{name}",),
        ).fetchone()
        left_in_default = _default_rows(owner, MOVED_MONTH)
    with db.connect(distributed.app_url, autocommit=True) as app, acting_as(app, Identity.user(alice)):
        seen = app.execute(
            "select count(*) from public.usage_events where tenant_id = %s and created_at >= %s and created_at < %s",
            (tenant, MOVED_MONTH, MOVED_MONTH + timedelta(days=31)),
        ).fetchone()
    assert in_default == 420
    assert done.returncode == 0, done.stderr
    assert f"moved 420 events into {name}" in done.stdout
    assert left_in_default == 0
    assert after == before == (420, 420, 300 * 301 // 2 + 120 * 121 // 2)
    assert ids_after == ids_before  # the same rows, ids kept
    assert placed == (420,)  # in a shard of the month's own partition
    assert colocated == (True,)
    assert seen == (300,)  # the member reads the moved rows under RLS


def test_retention_archives_and_drops_a_month_on_the_cluster(distributed: DistributedDatabase, tmp_path: Path) -> None:
    with db.connect(distributed.url, autocommit=True) as owner:
        tenant, alice = factories.add_tenant(owner), factories.add_user(owner)
        factories.add_member(owner, tenant, alice)
        _events_in(owner, DROPPED_MONTH, tenant, tenant, alice, 250)
        _events_in(owner, DROPPED_MONTH, alice, None, alice, 50)
        key = owner.execute(
            "select idempotency_key from public.usage_events where owner_id = %s limit 1", (tenant,)
        ).fetchone()
        partitions.move_out_of_default(owner)
        # Retention as it would run in January 2024, keeping one month: November 2023 is past the limit.
        runner = retention.Retention(owner, keep_months=1, archive_dir=tmp_path, now=datetime(2024, 1, 15, tzinfo=UTC))
        due = [month.partition for month in runner.due()]
        outcomes = runner.run()
        again = runner.run()
        remaining = owner.execute(TOTALS, ([tenant, alice],)).fetchone()
        keys_left = owner.execute(
            "select count(*) from usagemeter_private.usage_event_keys where owner_id = any(%s)", ([tenant, alice],)
        ).fetchone()
        record = owner.execute(
            "select events, tokens_input, archive_path, dropped_at is not null"
            " from usagemeter_private.usage_event_archives where month_start = %s",
            (DROPPED_MONTH,),
        ).fetchone()
        table = owner.execute("select to_regclass(%s)", (f"usagemeter_private.usage_events_{DROPPED_MONTH:%Y_%m}",))
        assert key is not None
        # Its idempotency key is free again: the month's keys were released on their shard.
        owner.execute(
            "insert into public.usage_events (owner_id, tenant_id, user_id, action, idempotency_key)"
            " values (%s, %s, %s, %s, %s)",
            (tenant, tenant, alice, ACTION, key[0]),
        )
        archive = pq.read_table(tmp_path / f"usage_events_{DROPPED_MONTH:%Y_%m}.parquet")
    assert due == [f"usage_events_{DROPPED_MONTH:%Y_%m}"]
    assert [outcome.action for outcome in outcomes] == ["dropped"]
    assert again == []
    assert remaining == (0, 0, None)
    assert keys_left == (0,)
    assert record == (
        300,
        250 * 251 // 2 + 50 * 51 // 2,
        str(tmp_path / f"usage_events_{DROPPED_MONTH:%Y_%m}.parquet"),
        True,
    )
    assert table.fetchone() == (None,)
    assert archive.num_rows == 300
    assert sorted(map(str, set(archive.column("user_id").to_pylist()))) == [str(alice)]
    assert archive.column("tokens_input").to_pylist().count(1) == 2  # one tenant and one Personal event
