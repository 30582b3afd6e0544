"""Monthly partitions of usage_events: created ahead, and rows moved out of the default partition.

The database does the work (usagemeter_private.*_usage_event_* functions, see the migration
20261205090000_partition_usage_events.sql); this module runs it in the right transactions and
reports progress. Both operations are safe to run at any time and again after a crash: a month is
moved in one transaction, so it is either still in the default partition or in its own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from usagemeter.db import sql

queries = sql.load_queries("usagemeter.ops")

# Blocks of the default partition copied per statement when moving a month: 8 MiB, a progress step.
COPY_BLOCKS = 1024
MONTHS_AHEAD = 3


@dataclass(frozen=True)
class MovedMonth:
    """A month moved out of the default partition into its own."""

    month_start: datetime
    partition: str
    events: int


# Called as a month's copy advances: (its partition, events copied so far, events of the month).
MoveProgress = Callable[[str, int, int], None]


def supported(conn: psycopg.Connection[Any]) -> bool:
    """Whether usage_events is partitioned here (its migration has been applied)."""
    row = conn.execute(queries["partitions_supported"]).fetchone()
    return bool(row and row[0])


def create_ahead(conn: psycopg.Connection[Any], *, months_ahead: int = MONTHS_AHEAD) -> list[str]:
    """Create the missing partitions from this month to `months_ahead` later; returns their names."""
    with conn.transaction():
        created = conn.execute(queries["create_usage_event_partitions"], {"months_ahead": months_ahead})
        return [row[0] for row in created]


def default_months(conn: psycopg.Connection[Any]) -> list[tuple[datetime, int]]:
    """The months the default partition holds rows of, with their counts (it scans the default partition)."""
    return [(row[0], row[1]) for row in conn.execute(queries["default_usage_event_months"])]


def move_out_of_default(conn: psycopg.Connection[Any], *, progress: MoveProgress | None = None) -> list[MovedMonth]:
    """Move every month the default partition holds into a partition of its own, oldest first.

    Each month is one transaction that locks the default partition against writes (reads go on),
    so writes dated in months without a partition wait while a month moves. Ids and every column
    are kept; rollups, budgets and keys are untouched (the same events, in another table).
    """
    months = default_months(conn)
    moved: list[MovedMonth] = []
    for month_start, events in months:
        moved.append(_move_month(conn, month_start, events, progress))
    if moved and conn.autocommit:  # VACUUM cannot run in a transaction; autovacuum gets to it otherwise
        conn.execute(queries["vacuum_default_usage_event_partition"])
    return moved


def _move_month(
    conn: psycopg.Connection[Any], month_start: datetime, events: int, progress: MoveProgress | None
) -> MovedMonth:
    with conn.transaction():
        row = conn.execute(queries["begin_usage_event_month_move"], {"month_start": month_start}).fetchone()
        assert row is not None
        name, blocks = str(row[0]), int(row[1])
        copied = 0
        for first_block in range(0, blocks, COPY_BLOCKS):
            step = {"month_start": month_start, "first_block": first_block, "last_block": first_block + COPY_BLOCKS}
            row = conn.execute(queries["copy_usage_event_month_rows"], step).fetchone()
            assert row is not None
            copied += int(row[0])
            if progress is not None:
                progress(name, copied, events)
        row = conn.execute(
            queries["finish_usage_event_month_move"], {"month_start": month_start, "copied": copied}
        ).fetchone()
        assert row is not None
    return MovedMonth(month_start, name, int(row[0]))
