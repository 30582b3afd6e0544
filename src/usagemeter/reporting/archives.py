"""Which months of a report's range have no raw events any more (retention took them out).

Summaries and statements of those months still answer, exactly, from the rollups; listings and
exports of them come back without those events. Readers say so: the CLI prints a note, the API
sends an `Usagemeter-Archived-Months` header, statements carry `raw_events_archived`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg

from usagemeter.db import Identity, acting_as, sql

queries = sql.load_queries("usagemeter.reporting")

HEADER = "Usagemeter-Archived-Months"


@dataclass(frozen=True)
class ArchivedMonth:
    """A UTC month without raw events; `archived` is whether a verified Parquet archive of them was kept."""

    start: datetime
    end: datetime
    archived: bool

    @property
    def label(self) -> str:
        return f"{self.start.astimezone(UTC):%Y-%m}"


def archived_months(
    conn: psycopg.Connection[Any], identity: Identity, start: datetime, end: datetime
) -> list[ArchivedMonth]:
    """The months overlapping [start, end) whose raw events were taken out by retention, oldest first."""
    with acting_as(conn, identity):
        rows = conn.execute(queries["archived_months"], {"start": start, "end": end}).fetchall()
    return [ArchivedMonth(row[0], row[1], row[2]) for row in rows]


def labels(months: list[ArchivedMonth]) -> str:
    """The months as people and the HTTP header read them: `2026-01, 2026-02`."""
    return ", ".join(m.label for m in months)


def note(months: list[ArchivedMonth], *, what: str) -> str | None:
    """A sentence for people about `what` (e.g. "these totals"), or None when no month is archived."""
    return f"raw events of {labels(months)} (UTC) were taken out by retention: {what}" if months else None
