"""`usagemeter maintain`: the upkeep a cron job runs (partitions ahead, the default partition emptied)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn

from usagemeter import db
from usagemeter.cli.common import DatabaseUrlOption, database, err, fail, out, reported_errors
from usagemeter.ops import partitions


def maintain(
    months_ahead: Annotated[
        int, typer.Option(min=0, max=120, help="Monthly partitions to keep ready after the current month.")
    ] = partitions.MONTHS_AHEAD,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Create the monthly partitions ahead and move rows out of the default partition; safe to run from cron.

    On an installation converted from the unpartitioned table, the first run moves its rows into
    monthly partitions, a month per transaction, with a progress bar: writes dated in those months
    wait while their month moves; reads go on.
    """
    with reported_errors(), database(database_url) as url, db.connect(url, autocommit=True) as conn:
        if not partitions.supported(conn):
            fail("this database has no partitioned usage_events yet: run `usagemeter db migrate` first")
        with Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=err, transient=True
        ) as bar:
            tasks: dict[datetime, TaskID] = {}

            def advance(month_start: datetime, copied: int, events: int) -> None:
                if month_start not in tasks:
                    name = partitions.partition_name(month_start)
                    tasks[month_start] = bar.add_task(f"moving {name}", total=events)
                bar.update(tasks[month_start], completed=copied)

            moved = partitions.move_out_of_default(conn, progress=advance)
        for month in moved:
            out.print(f"moved {month.events:,} events into {month.partition}", highlight=False)
        created = partitions.create_ahead(conn, months_ahead=months_ahead)
        for name in created:
            out.print(f"created partition {name}", highlight=False)
        if not moved and not created:
            out.print("partitions are up to date", highlight=False)
