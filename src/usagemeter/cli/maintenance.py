"""`usagemeter maintain` and `usagemeter retention`: the upkeep a cron job runs."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import psycopg
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn

from usagemeter import db
from usagemeter.cli.common import DatabaseUrlOption, database, err, fail, out, reported_errors
from usagemeter.db.identity import is_distributed
from usagemeter.ops import distribute, partitions
from usagemeter.ops import retention as retention_ops
from usagemeter.reporting import rollup_check


@contextmanager
def _partitioned_database(database_url: str | None) -> Iterator[psycopg.Connection[Any]]:
    """The owner's autocommit connection to a database whose usage_events is partitioned (else exit 1)."""
    with database(database_url) as url, db.connect(url, autocommit=True) as conn:
        if not partitions.supported(conn):
            fail("this database has no partitioned usage_events yet: run `usagemeter db migrate` first")
        yield conn


def maintain(
    months_ahead: Annotated[
        int, typer.Option(min=0, max=120, help="Monthly partitions to keep ready after the current month.")
    ] = partitions.MONTHS_AHEAD,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Create the monthly partitions ahead and move rows out of the default partition; safe to run from cron.

    On a distributed database it also folds the rollup deltas (writers there do not fold).

    On an installation converted from the unpartitioned table, the first run moves its rows into
    monthly partitions, a month per transaction, with a progress bar: writes dated in those months
    wait while their month moves; reads go on.
    """
    with reported_errors(), _partitioned_database(database_url) as conn:
        created = partitions.create_ahead(conn, months_ahead=months_ahead)
        for name in created:
            out.print(f"created partition {name}", highlight=False)
        if is_distributed(conn):
            distribute.grant_event_shards(conn)  # shards a rebalance or a split made since
            # writers on the shards only append deltas there (no fold can run on a shard): fold them here
            folded = rollup_check.fold(conn)
            out.print(
                f"folded {folded:,} rollup deltas" if folded is not None else "a fold is running", highlight=False
            )
        with Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=err, transient=True
        ) as bar:
            tasks: dict[str, TaskID] = {}

            def advance(partition: str, copied: int, events: int) -> None:
                if partition not in tasks:
                    tasks[partition] = bar.add_task(f"moving {partition}", total=events)
                bar.update(tasks[partition], completed=copied)

            moved = partitions.move_out_of_default(conn, progress=advance)
        for month in moved:
            out.print(f"moved {month.events:,} events into {month.partition}", highlight=False)
        if not moved and not created:
            out.print("partitions are up to date", highlight=False)


def retention(
    keep_months: Annotated[
        int, typer.Option(min=1, help="Months kept before the current one; older months are dropped.")
    ],
    archive: Annotated[
        Path | None,
        typer.Option(help="Write each month to DIR/usage_events_YYYY_MM.parquet, checked, before dropping it."),
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would be done; change nothing.")] = False,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Drop the monthly partitions of usage_events older than the limit, archived to Parquet first with --archive.

    Summaries and statements of dropped months still answer (from the rollups). Nothing is dropped
    when an archive fails or does not match its partition; a rerun after a failure or a crash
    finishes the job. Every step is logged to stderr.
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    with reported_errors(), _partitioned_database(database_url) as conn:
        run = retention_ops.Retention(conn, keep_months=keep_months, archive_dir=archive)
        outcomes = run.run(dry_run=dry_run)
        for outcome in outcomes:
            rows = f"{outcome.totals.events:,} rows" if outcome.totals else "detached before"
            where = f", archived to {outcome.archive}" if outcome.archive else ""
            out.print(f"{outcome.action} {outcome.month.partition} ({rows}{where})", highlight=False)
        if not outcomes:
            out.print(f"nothing to drop: no month before {run.cutoff:%Y-%m}", highlight=False)
