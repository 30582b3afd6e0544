"""Retention: months of usage_events past a limit are archived to Parquet, checked, detached and dropped.

A month goes through five steps, each a method so tests can make any of them fail:
archive (written to a `.partial` file, synced, renamed), verify (the file's row count and sums
against the partition's, recorded in usagemeter_private.usage_event_archives), detach (one short
transaction that checks the partition still holds what was verified), free_keys (its ids and
idempotency keys released from usage_event_keys, a batch per transaction), drop. A failure
stops the run with nothing of that month lost: before the detach, the rows are where they were;
after it, they are in the detached table and a verified archive. Run again, it picks up where it
stopped. Rollups are never touched, so summaries and statements of a dropped
month still answer. Every step is logged (logger `usagemeter.retention`).
"""

from __future__ import annotations

import logging
import os
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import psycopg
from psycopg import sql as pgsql

from usagemeter import durable, errors, ledger, ledger_parquet
from usagemeter.db import sql
from usagemeter.ops import partitions

queries = sql.load_queries("usagemeter.ops")
log = logging.getLogger("usagemeter.retention")

# Ids and keys released per transaction after a detach.
KEYS_BATCH = 50_000

# Every column, so an archived month can be loaded back as it was.
ARCHIVE_QUERY = pgsql.SQL("select {columns} from usagemeter_private.{table} as e order by e.created_at, e.id")


@dataclass(frozen=True)
class Totals:
    """What a month holds: rows (events and correction entries) and sums; an archive must hold the same."""

    events: int
    tokens_input: int
    tokens_output: int
    cost: Decimal


@dataclass(frozen=True)
class Month:
    """A monthly table of usage_events; `attached` is False between a detach and the drop."""

    start: datetime
    partition: str
    attached: bool


@dataclass(frozen=True)
class Outcome:
    """What retention did (or, on a dry run, would do) with a month."""

    month: Month
    totals: Totals | None
    archive: Path | None
    action: Literal["dropped", "would drop"]


def first_kept_month(now: datetime, keep_months: int) -> datetime:
    """The oldest month kept: the current UTC month and the `keep_months` before it are kept."""
    index = now.astimezone(UTC).year * 12 + now.astimezone(UTC).month - 1 - keep_months
    return datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)


class Retention:
    """One retention run over a database, as its owner."""

    def __init__(
        self,
        conn: psycopg.Connection[Any],
        *,
        keep_months: int,
        archive_dir: Path | None,
        now: datetime | None = None,
    ) -> None:
        if keep_months < 1:
            raise errors.RetentionError(f"keep_months must be at least 1 (got {keep_months})")
        if not conn.autocommit:
            raise errors.RetentionError("retention needs an autocommit connection: each step commits on its own")
        self.conn = conn
        self.archive_dir = archive_dir
        self.cutoff = first_kept_month(now or datetime.now(UTC), keep_months)

    def due(self) -> list[Month]:
        """The months before the cutoff still in the database (attached or detached), oldest first."""
        rows = self.conn.execute(queries["usage_event_months"]).fetchall()
        return [Month(row[0], row[1], row[2]) for row in rows if row[0] < self.cutoff]

    def run(self, *, dry_run: bool = False) -> list[Outcome]:
        """Take out every month before the cutoff; on a dry run, only say what would be done."""
        self._refuse_default_rows()
        outcomes = []
        for month in self.due():
            if dry_run:
                totals = self.totals(month) if month.attached else None
                events = f"{totals.events:,} rows" if totals else "detached"
                log.info("dry run: would %s and drop %s (%s)", self._archive_verb(), month.partition, events)
                outcomes.append(Outcome(month, totals, None, "would drop"))
                continue
            outcomes.append(self._take_out(month))
        log.info("retention done: %d month(s) before %s %s", len(outcomes), f"{self.cutoff:%Y-%m}",
                 "would be dropped" if dry_run else "dropped")  # fmt: skip
        return outcomes

    def _archive_verb(self) -> str:
        return f"archive to {self.archive_dir}" if self.archive_dir else "not archive"

    def _refuse_default_rows(self) -> None:
        old = [(m, n) for m, n in partitions.default_months(self.conn) if m < self.cutoff]
        if old:
            months = ", ".join(f"{m:%Y-%m} ({n:,} rows)" for m, n in old)
            raise errors.RetentionError(
                f"the default partition holds events of months past the limit: {months}; run `usagemeter maintain`"
                " first (it moves them into monthly partitions). Nothing was dropped."
            )

    def _take_out(self, month: Month) -> Outcome:
        totals: Totals | None = None
        path: Path | None = None
        if month.attached:
            if self.archive_dir is not None:
                path = self.archive(month)
                totals = self.verify(month, path)
            else:
                totals = self.totals(month)
                self._record(month, totals, None)
                log.info("%s: %s rows, no archive asked for", month.partition, f"{totals.events:,}")
            self.detach(month)
        else:
            log.info("%s: detached by an earlier run, finishing it now", month.partition)
        self.free_keys(month)
        self.drop(month)
        return Outcome(month, totals, path, "dropped")

    def totals(self, month: Month) -> Totals:
        row = self.conn.execute(queries["usage_event_month_totals"], {"month_start": month.start}).fetchone()
        assert row is not None
        return Totals(int(row[0]), int(row[1]), int(row[2]), Decimal(row[3]))

    def archive(self, month: Month) -> Path:
        """Write the month's rows to DIR/<partition>.parquet: a `.partial` file first, synced, then renamed."""
        assert self.archive_dir is not None
        self.archive_dir.mkdir(parents=True, exist_ok=True)
        final = self.archive_dir / f"{month.partition}.parquet"
        partial = final.with_suffix(".parquet.partial")
        log.info("%s: writing %s", month.partition, final)
        statement = ARCHIVE_QUERY.format(
            columns=ledger_parquet.arrow_select_list(ledger.COLUMNS), table=pgsql.Identifier(month.partition)
        )
        with self.conn.transaction(), partial.open("wb") as sink:
            rows = ledger_parquet.write(self.conn, statement, {}, ledger.COLUMNS, sink)
            sink.flush()
            os.fsync(sink.fileno())
        os.replace(partial, final)
        durable.sync_directory(self.archive_dir)
        log.info("%s: %s rows written to %s", month.partition, f"{rows:,}", final)
        return final

    def verify(self, month: Month, path: Path) -> Totals:
        """Check the archive holds the partition's rows and sums, and record it; raises RetentionError if not."""
        held = self.totals(month)
        archived = _archive_totals(path)
        if archived != held:
            raise errors.RetentionError(
                f"{month.partition}: the archive {path} does not match the partition (archive {archived},"
                f" partition {held}); nothing was dropped"
            )
        self._record(month, held, path)
        log.info("%s: archive verified (%s rows, %s input and %s output tokens, cost %s)", month.partition,
                 f"{held.events:,}", f"{held.tokens_input:,}", f"{held.tokens_output:,}", held.cost)  # fmt: skip
        return held

    def _record(self, month: Month, totals: Totals, path: Path | None) -> None:
        params = {"month_start": month.start, "events": totals.events, "tokens_input": totals.tokens_input,
                  "tokens_output": totals.tokens_output, "cost": totals.cost,
                  "archive_path": str(path.resolve()) if path else None}  # fmt: skip
        self.conn.execute(queries["record_usage_event_archive"], params)

    def detach(self, month: Month) -> None:
        with self.conn.transaction():
            self.conn.execute(queries["detach_usage_event_month"], {"month_start": month.start})
        log.info("%s: detached", month.partition)

    def free_keys(self, month: Month) -> None:
        """Release the month's ids and keys, KEYS_BATCH per transaction (none holds a lock for long)."""
        after: uuid.UUID | None = None
        freed = 0
        while True:
            step = {"month_start": month.start, "after_id": after, "batch": KEYS_BATCH}
            with self.conn.transaction():
                row = self.conn.execute(queries["free_usage_event_month_keys"], step).fetchone()
            assert row is not None
            freed += int(row[0])
            after = row[1]
            if after is None:
                break
        self.conn.execute(queries["usage_event_month_keys_freed"], {"month_start": month.start})
        log.info("%s: %s ids and keys released", month.partition, f"{freed:,}")

    def drop(self, month: Month) -> None:
        with self.conn.transaction():
            self.conn.execute(queries["drop_usage_event_month"], {"month_start": month.start})
        log.info("%s: dropped", month.partition)


def _archive_totals(path: Path) -> Totals:
    """Rows and sums as read back from a Parquet archive (a file that cannot be read counts as a mismatch)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path, columns=["tokens_input", "tokens_output", "cost"])
    except (OSError, ValueError) as failure:
        raise errors.RetentionError(f"cannot read the archive {path}: {failure}; nothing was dropped") from failure

    def total(column: str) -> Decimal:
        value = pc.sum(table[column]).as_py()
        return Decimal(0 if value is None else value)

    return Totals(table.num_rows, int(total("tokens_input")), int(total("tokens_output")), total("cost"))
