"""The one definition of a usage event's columns, shared by both flows.

Writers derive their INSERT statements and parameter arrays from it, readers their listing and
export columns, so a column is spelled once here (and once in the migration that creates it); a
migration test checks this list against the live table. Rollup SQL lives in migrations, where
the database keeps it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from psycopg import sql

ArrowType = Literal["string", "int16", "int32", "timestamp", "decimal"]


@dataclass(frozen=True)
class Column:
    """A column of public.usage_events: its SQL type, who sets it, and how it is exported."""

    name: str
    sql_type: str
    written: bool  # sent by writers
    generated: bool = False  # computed by the database from other columns (never written)
    exported: bool = True
    arrow: ArrowType = "string"  # its Parquet type (uuids and jsonb export as text)

    @property
    def identifier(self) -> sql.Identifier:
        return sql.Identifier(self.name)


COLUMNS: tuple[Column, ...] = (
    Column("id", "uuid", written=True),
    Column("tenant_id", "uuid", written=True),
    Column("user_id", "uuid", written=True),
    Column("action", "text", written=True),
    Column("module_id", "text", written=True),
    Column("tokens_input", "int", written=True, arrow="int32"),
    Column("tokens_output", "int", written=True, arrow="int32"),
    Column("tokens_total", "int", written=False, generated=True, arrow="int32"),
    Column("metadata", "jsonb", written=True),
    Column("idempotency_key", "text", written=True, exported=False),
    Column("created_at", "timestamptz", written=True, arrow="timestamp"),
    Column("personal_user_id", "uuid", written=False, generated=True, exported=False),
    Column("model", "text", written=False, generated=True),
    # Set by the database: the rating trigger, or the correction functions.
    Column("cost", "numeric(20,6)", written=False, arrow="decimal"),
    Column("corrects_event_id", "uuid", written=False),
    Column("correction_kind", "text", written=False),
    Column("correction_reason", "text", written=False),
    Column("event_count", "smallint", written=False, generated=True, arrow="int16"),
    Column("recorded_at", "timestamptz", written=False, arrow="timestamp"),
    Column("occurred_at", "timestamptz", written=False, arrow="timestamp"),  # set when booked after a closed period
)

# What writers send: created_at only when the service role gives it (users' events are stamped by the database).
WRITTEN = tuple(c for c in COLUMNS if c.written and c.name != "created_at")
WRITTEN_WITH_CREATED_AT = tuple(c for c in COLUMNS if c.written)
EXPORTED = tuple(c for c in COLUMNS if c.exported)


def column_list(columns: tuple[Column, ...], *, alias: str | None = None) -> sql.Composed:
    """`a, b, c` (or `e.a, e.b, e.c`) for a select or insert list."""
    if alias is None:
        return sql.SQL(", ").join(c.identifier for c in columns)
    return sql.SQL(", ").join(sql.Identifier(alias, c.name) for c in columns)
