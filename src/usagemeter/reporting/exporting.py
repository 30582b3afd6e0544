"""Exports of raw events in constant memory: CSV, JSON Lines or Parquet, streamed as the caller's identity.

CSV is produced by the server (`COPY (query) TO STDOUT`), JSON Lines are built by the server and
read through a server-side cursor, Parquet is written in row groups from a server-side cursor:
memory stays bounded by one chunk whatever the size of the export. RLS decides what is exported.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any, Literal

import psycopg
from psycopg import sql as pgsql

from usagemeter import ledger, ledger_parquet
from usagemeter.db import Identity, acting_as
from usagemeter.db.identity import is_distributed
from usagemeter.reporting import report_sql
from usagemeter.reporting.filters import UsageFilter

ExportFormat = Literal["csv", "jsonl", "parquet"]
CHUNK_ROWS = ledger_parquet.CHUNK_ROWS  # bounds memory: one chunk of rows at a time
Progress = Callable[[int], None]


def export_events(
    conn: psycopg.Connection[Any],
    identity: Identity,
    query: UsageFilter,
    fmt: ExportFormat,
    sink: IO[bytes],
    *,
    progress: Progress | None = None,
) -> int:
    """Write the events of `query` to `sink`; returns how many were written."""
    distributed = is_distributed(conn)
    export = _Export(conn, query, query.active_filters(), query.parameters(), sink, progress or (lambda rows: None),
                     routed=distributed)  # fmt: skip
    with acting_as(conn, identity):
        # Times print as UTC, whatever the server's zone (and on a cluster, the workers' that format them).
        conn.execute(report_sql.USE_TIME_ZONE_PROPAGATED if distributed else report_sql.USE_TIME_ZONE, {"tz": "UTC"})
        writers = {"csv": export.csv, "jsonl": export.jsonl, "parquet": export.parquet}
        return writers[fmt]()


@dataclass(frozen=True)
class _Export:
    """One export: what to read, where to write, whom to tell how far it got."""

    conn: psycopg.Connection[Any]
    query: UsageFilter
    filters: list[str]
    params: dict[str, Any]
    sink: IO[bytes]
    report: Progress
    routed: bool  # a distributed database: a one-tenant or one-user export names the owner key (one shard)

    def _statement(self, columns: pgsql.Composable) -> pgsql.Composed:
        return report_sql.export_query(self.query.scope, self.filters, columns, routed=self.routed)

    def csv(self) -> int:
        statement = pgsql.SQL("copy ({}) to stdout with (format csv, header)").format(
            self._statement(report_sql.EXPORT_COLUMNS)
        )
        rows = -1  # the header line; no value holds a raw newline (jsonb escapes them, CHECKs forbid them)
        with self.conn.cursor() as cur, cur.copy(statement, self.params) as copy:
            for block in copy:
                self.sink.write(block)
                rows += bytes(block).count(b"\n")
                self.report(max(rows, 0))
        return max(rows, 0)

    def jsonl(self) -> int:
        statement = self._statement(report_sql.EXPORT_JSON_OBJECT)
        rows = 0
        with self.conn.cursor(name="usagemeter_export") as cur:
            cur.itersize = CHUNK_ROWS
            cur.execute(statement, self.params)
            while chunk := cur.fetchmany(CHUNK_ROWS):
                self.sink.write("".join(line + "\n" for (line,) in chunk).encode("utf-8"))
                rows += len(chunk)
                self.report(rows)
        return rows

    def parquet(self) -> int:
        statement = self._statement(report_sql.EXPORT_ARROW_COLUMNS)
        return ledger_parquet.write(self.conn, statement, self.params, ledger.EXPORTED, self.sink, report=self.report)
