"""Ledger rows as Parquet: the export (what a caller may see) and the retention archive (every column).

Rows come from a server-side cursor whose select list is `arrow_select_list(columns)`, and are
written in row groups, so memory stays bounded by one chunk whatever the size of the month.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import psycopg
from psycopg import sql

from usagemeter import ledger

CHUNK_ROWS = 5_000  # rows per fetch and per row group


def arrow_select_list(columns: tuple[ledger.Column, ...], *, alias: str = "e") -> sql.Composed:
    """The select list Parquet is written from: uuids and jsonb as text, the rest as they are."""
    return sql.SQL(", ").join(
        sql.SQL("{}::text").format(sql.Identifier(alias, c.name))
        if c.sql_type in ("uuid", "jsonb")
        else sql.Identifier(alias, c.name)
        for c in columns
    )


def write(
    conn: psycopg.Connection[Any],
    statement: sql.Composed,
    params: dict[str, Any],
    columns: tuple[ledger.Column, ...],
    sink: IO[bytes] | Path,
    *,
    report: Callable[[int], None] = lambda rows: None,
) -> int:
    """Run `statement` (selecting arrow_select_list(columns)) and write its rows to `sink`; returns how many."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    arrow_types = {"string": pa.string(), "int16": pa.int16(), "int32": pa.int32(),
                   "timestamp": pa.timestamp("us", tz="UTC"), "decimal": pa.decimal128(20, 6)}  # fmt: skip
    schema = pa.schema([(c.name, arrow_types[c.arrow]) for c in columns])
    rows = 0
    with conn.cursor(name="usagemeter_parquet") as cur, pq.ParquetWriter(sink, schema) as writer:
        cur.itersize = CHUNK_ROWS
        cur.execute(statement, params)
        while chunk := cur.fetchmany(CHUNK_ROWS):
            by_column = zip(*chunk, strict=True)
            arrays = [pa.array(values, type=field.type) for values, field in zip(by_column, schema, strict=True)]
            writer.write_table(pa.Table.from_arrays(arrays, schema=schema))
            rows += len(chunk)
            report(rows)
    return rows
