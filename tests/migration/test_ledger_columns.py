"""The one definition of the event's columns (usagemeter.ledger) against the migrated table and its readers."""

from __future__ import annotations

from typing import Any

import psycopg

from usagemeter import ledger
from usagemeter.reporting import listing


def test_the_definition_names_every_column_of_the_table_with_its_type(owner: psycopg.Connection[Any]) -> None:
    rows = owner.execute(
        "select a.attname, format_type(a.atttypid, a.atttypmod), a.attgenerated <> ''"
        " from pg_attribute as a where a.attrelid = 'public.usage_events'::regclass and a.attnum > 0"
        " and not a.attisdropped order by a.attnum"
    ).fetchall()
    aliases = {"integer": "int", "timestamp with time zone": "timestamptz"}
    in_database = {name: (aliases.get(sql_type, sql_type), generated) for name, sql_type, generated in rows}
    defined = {c.name: (c.sql_type, c.generated) for c in ledger.COLUMNS}
    assert defined == in_database


def test_writers_never_send_a_generated_column() -> None:
    assert all(c.written and not c.generated for c in ledger.WRITTEN_WITH_CREATED_AT)
    assert {c.name for c in ledger.WRITTEN_WITH_CREATED_AT} - {c.name for c in ledger.WRITTEN} == {"created_at"}


def test_listing_rows_carry_exactly_the_exported_columns() -> None:
    assert list(listing.UsageEventRow.model_fields) == [c.name for c in ledger.EXPORTED]
