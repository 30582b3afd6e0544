"""Retention: months past the limit archived (checked), detached, dropped; a failure at any step loses nothing."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pyarrow.parquet as pq
import pytest

from tests import factories
from tests.integration.test_partitions import partition_name
from usagemeter import errors
from usagemeter.db import Identity
from usagemeter.ops import partitions, retention
from usagemeter.reporting import rollup_check, summaries

KEEP = 1  # the current month and the one before are kept


def month(offset: int) -> datetime:
    """The start of the UTC month `offset` months from now (negative: past)."""
    now = datetime.now(UTC)
    index = now.year * 12 + now.month - 1 + offset
    return datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)


class Ledger:
    """Events in the five months before this one, moved into monthly partitions, as maintain leaves them."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn
        self.tenant, self.user = factories.add_tenant(conn), factories.add_user(conn)
        factories.add_member(conn, self.tenant, self.user)
        conn.execute(
            "insert into public.usage_events (tenant_id, user_id, action, tokens_input, tokens_output, metadata,"
            " created_at, idempotency_key)"
            " select %s, %s, 'agency:scope:generate', i, i %% 7, jsonb_build_object('model', 'm', 'i', i),"
            " %s::timestamptz + make_interval(days => i %% 28, secs => i), 'key-' || i"
            " from generate_series(1, 600) as i",
            (self.tenant, self.user, month(-5)),
        )
        for offset in (-4, -3, -2, -1):
            conn.execute(
                "insert into public.usage_events (tenant_id, user_id, action, tokens_input, created_at)"
                " select %s, %s, 'agency:scope:review', i, %s::timestamptz + make_interval(hours => i)"
                " from generate_series(1, 200) as i",
                (self.tenant, self.user, month(offset)),
            )
        partitions.move_out_of_default(conn)
        self.rows = self.all_rows()
        self.summary = self.summarize()

    def all_rows(self) -> dict[uuid.UUID, tuple[Any, ...]]:
        rows = self.conn.execute("select id, tokens_input, tokens_output, created_at from public.usage_events")
        return {row[0]: row for row in rows}

    def summarize(self) -> list[summaries.SummaryRow]:
        query = summaries.SummaryQuery(
            scope="tenant", tenant_id=self.tenant, start=month(-6), end=month(1), group_by=("action",), bucket="month"
        )
        return summaries.summarize(self.conn, Identity.service(), query)

    def archived_ids(self, directory: Path) -> dict[uuid.UUID, tuple[Any, ...]]:
        found = {}
        for path in sorted(directory.glob("*.parquet")):
            table = pq.read_table(path, columns=["id", "tokens_input", "tokens_output", "created_at"])
            for row in table.to_pylist():
                key = uuid.UUID(row["id"])
                found[key] = (key, row["tokens_input"], row["tokens_output"], row["created_at"])
        return found


@pytest.fixture
def ledger(owner: psycopg.Connection[Any]) -> Ledger:
    return Ledger(owner)


def due_partitions() -> set[str]:
    return {partition_name(month(k)) for k in (-5, -4, -3, -2)}


def attached(conn: psycopg.Connection[Any]) -> set[str]:
    rows = conn.execute("select partition_name from usagemeter_private.usage_event_months_v1() where attached")
    return {row[0] for row in rows}


def assert_finished(ledger: Ledger, directory: Path) -> None:
    """Every due month dropped and archived exactly; kept months untouched; rollups still answer."""
    conn = ledger.conn
    assert not (due_partitions() & attached(conn))
    kept = ledger.all_rows()
    archived = ledger.archived_ids(directory)
    assert set(kept) | set(archived) == set(ledger.rows)
    assert not set(kept) & set(archived)
    assert {k: ledger.rows[k] for k in archived} == archived
    assert all(row[3] >= month(-KEEP) for row in kept.values())
    assert ledger.summarize() == ledger.summary  # from the rollups, which retention keeps
    assert rollup_check.differences(conn) == 0
    months = conn.execute("select month_start, archived from public.usage_archived_months_v1()").fetchall()
    assert months == [(month(k), True) for k in (-5, -4, -3, -2)]
    freed = conn.execute(
        "select count(*) from usagemeter_private.usage_event_keys where id = any(%s)", (list(archived),)
    ).fetchone()
    assert freed == (0,)
    assert not list(directory.glob("*.partial"))


def test_months_past_the_limit_are_archived_checked_and_dropped(ledger: Ledger, tmp_path: Path) -> None:
    outcomes = retention.Retention(ledger.conn, keep_months=KEEP, archive_dir=tmp_path).run()
    assert [o.month.partition for o in outcomes] == sorted(due_partitions())
    first = outcomes[0]
    assert first.totals is not None
    assert first.totals.events == 600
    assert first.totals.tokens_input == sum(range(1, 601))
    assert first.archive == tmp_path / f"{partition_name(month(-5))}.parquet"
    assert_finished(ledger, tmp_path)
    # Every column is archived, the idempotency key too.
    columns = pq.read_schema(tmp_path / f"{partition_name(month(-5))}.parquet").names
    assert {"idempotency_key", "metadata", "cost", "recorded_at"} <= set(columns)
    # A rebuild of the rollups keeps the months it has no raw events for.
    rollup_check.rebuild(ledger.conn)
    assert ledger.summarize() == ledger.summary
    assert retention.Retention(ledger.conn, keep_months=KEEP, archive_dir=tmp_path).run() == []


def test_a_dry_run_changes_nothing(ledger: Ledger, tmp_path: Path) -> None:
    outcomes = retention.Retention(ledger.conn, keep_months=KEEP, archive_dir=tmp_path).run(dry_run=True)
    assert {o.action for o in outcomes} == {"would drop"}
    assert due_partitions() <= attached(ledger.conn)
    assert ledger.all_rows() == ledger.rows
    assert not list(tmp_path.iterdir())


class ArchiveWriteFails(retention.Retention):
    def archive(self, month: retention.Month) -> Path:
        assert self.archive_dir is not None
        (self.archive_dir / f"{month.partition}.parquet.partial").write_bytes(b"PAR1 half a file")
        raise OSError(28, "No space left on device")


class ArchiveDoesNotMatch(retention.Retention):
    def verify(self, month: retention.Month, path: Path) -> retention.Totals:
        path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])  # a torn file
        return super().verify(month, path)


class DetachCrashes(retention.Retention):
    def detach(self, month: retention.Month) -> None:
        with self.conn.transaction():
            self.conn.execute(retention.queries["detach_usage_event_month"], {"month_start": month.start})
            raise ConnectionError("server closed the connection before the commit")


class KeyReleaseCrashes(retention.Retention):
    def free_keys(self, month: retention.Month) -> None:
        step = {"month_start": month.start, "after_id": None, "batch": 10}
        with self.conn.transaction():
            self.conn.execute(retention.queries["free_usage_event_month_keys"], step)  # one batch commits
        raise ConnectionError("server closed the connection")


class DropCrashes(retention.Retention):
    def drop(self, month: retention.Month) -> None:
        with self.conn.transaction():
            self.conn.execute(retention.queries["drop_usage_event_month"], {"month_start": month.start})
            raise ConnectionError("server closed the connection before the commit")


@pytest.mark.parametrize(
    "failing", [ArchiveWriteFails, ArchiveDoesNotMatch, DetachCrashes, KeyReleaseCrashes, DropCrashes]
)
def test_a_failure_at_any_step_loses_nothing_and_a_rerun_finishes(
    ledger: Ledger, tmp_path: Path, failing: type[retention.Retention]
) -> None:
    with pytest.raises((OSError, ConnectionError, errors.RetentionError)):
        failing(ledger.conn, keep_months=KEEP, archive_dir=tmp_path).run()
    # Every event is in the database or in a verified archive of a detached month.
    in_database = ledger.all_rows()
    detached = {
        row[0] for row in ledger.conn.execute("select partition_name from usagemeter_private.usage_event_months_v1()")
    } - attached(ledger.conn)
    for name in detached:
        in_database.update(
            {row[0]: row for row in ledger.conn.execute(
                psycopg.sql.SQL("select id, tokens_input, tokens_output, created_at from usagemeter_private.{}").format(
                    psycopg.sql.Identifier(name)
                )
            )}
        )  # fmt: skip
    assert in_database == ledger.rows
    assert ledger.summarize() == ledger.summary

    retention.Retention(ledger.conn, keep_months=KEEP, archive_dir=tmp_path).run()
    assert_finished(ledger, tmp_path)


class RowArrivesBeforeDetach(retention.Retention):
    def detach(self, month: retention.Month) -> None:
        self.conn.execute(
            "insert into public.usage_events (user_id, action, tokens_input, created_at)"
            " values ((select id from auth.users limit 1), 'late:row:here', 5, %s)",
            (month.start,),
        )
        super().detach(month)


def test_a_month_written_to_after_its_check_is_not_detached(ledger: Ledger, tmp_path: Path) -> None:
    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState, match="changed since it was archived"):
        RowArrivesBeforeDetach(ledger.conn, keep_months=KEEP, archive_dir=tmp_path).run()
    assert due_partitions() <= attached(ledger.conn)
    retention.Retention(ledger.conn, keep_months=KEEP, archive_dir=tmp_path).run()
    late = pq.read_table(tmp_path / f"{partition_name(month(-5))}.parquet").to_pylist()
    assert [r["tokens_input"] for r in late if r["action"] == "late:row:here"] == [5]


def test_rows_of_old_months_in_the_default_partition_stop_it_before_anything(ledger: Ledger, tmp_path: Path) -> None:
    old = month(-20)
    ledger.conn.execute(
        "insert into public.usage_events (user_id, action, created_at) values (%s, 'a:b:c', %s)", (ledger.user, old)
    )
    with pytest.raises(errors.RetentionError, match="usagemeter maintain"):
        retention.Retention(ledger.conn, keep_months=KEEP, archive_dir=tmp_path).run()
    assert due_partitions() <= attached(ledger.conn)


def test_without_an_archive_months_are_dropped_with_their_totals_recorded(ledger: Ledger) -> None:
    outcomes = retention.Retention(ledger.conn, keep_months=KEEP, archive_dir=None).run()
    assert len(outcomes) == 4
    months = ledger.conn.execute("select archived from public.usage_archived_months_v1()").fetchall()
    assert months == [(False,)] * 4
    recorded = ledger.conn.execute(
        "select sum(events), sum(tokens_input) from usagemeter_private.usage_event_archives"
    ).fetchone()
    assert recorded == (1200, Decimal(sum(range(1, 601)) + 3 * sum(range(1, 201))))
    assert ledger.summarize() == ledger.summary


def test_keep_months_must_keep_at_least_one_month(owner: psycopg.Connection[Any]) -> None:
    with pytest.raises(errors.RetentionError, match="at least 1"):
        retention.Retention(owner, keep_months=0, archive_dir=None)
    assert retention.first_kept_month(datetime(2026, 1, 15, tzinfo=UTC), 1) == datetime(2025, 12, 1, tzinfo=UTC)
    assert retention.first_kept_month(datetime(2026, 12, 31, 23, tzinfo=UTC), 12) == datetime(2025, 12, 1, tzinfo=UTC)
