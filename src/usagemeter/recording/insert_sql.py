"""The INSERT statements of the write flow, composed from the one column definition (usagemeter.ledger).

Four variants: with or without created_at (only the service role may set it), and the fast path
(binary parameters, nothing returned: a used id or key fails the statement with a unique_violation
and the careful path takes over) or the careful path (returning each stored row's id and time; the
writer looks up what is stored already first, since ids and keys are unique across the partitions
of usage_events, where ON CONFLICT sees one partition only).
Each is rendered to text once, at import: the hot path sends plain strings.

On a database distributed on Citus the rows go as a multi-row VALUES list instead (`insert_event_rows`):
Citus sends the rows of an INSERT ... SELECT to the shards with COPY, which PostgreSQL refuses into
a table under row-level security ("COPY FROM not supported with row-level security") for every
role but the service role; a VALUES list is split by shard into plain INSERTs. Those statements
depend on the row count and are rendered once per count.
"""

from __future__ import annotations

from functools import lru_cache
from typing import LiteralString

from psycopg import sql

from usagemeter import ledger


def _insert(columns: tuple[ledger.Column, ...], *, binary: bool, careful: bool) -> LiteralString:
    """`insert into usage_events (...) select ... from unnest(%(col)s::type[], ...)`, as described above."""
    arrays = sql.SQL(", ").join(
        sql.SQL("{}::{}[]").format(sql.Placeholder(c.name, format="b" if binary else "s"), sql.SQL(c.sql_type))
        for c in columns
    )
    selected = sql.SQL(", ").join(
        sql.SQL("coalesce(created_at, now())") if c.name == "created_at" else c.identifier for c in columns
    )
    statement = sql.SQL(
        "insert into public.usage_events ({targets}) select {selected} from unnest({arrays}) as e({columns})"
    ).format(targets=ledger.column_list(columns), columns=ledger.column_list(columns), selected=selected, arrays=arrays)
    if careful:
        statement = sql.SQL("{} returning id, created_at").format(statement)
    return statement.as_string(None)


def insert_events(*, timed: bool, fast: bool) -> LiteralString:
    """The INSERT for a chunk on one node: with created_at or not, fast or careful."""
    return _STATEMENTS[timed, fast]


_STATEMENTS = {
    (timed, fast): _insert(ledger.WRITTEN_WITH_CREATED_AT if timed else ledger.WRITTEN, binary=fast, careful=not fast)
    for timed in (False, True)
    for fast in (False, True)
}


@lru_cache(maxsize=128)
def insert_event_rows(*, timed: bool, fast: bool, rows: int) -> LiteralString:
    """`insert into usage_events (..., owner_id) values (...), ...` of `rows` rows, for a Citus cluster.

    Positional parameters, row after row: the written columns (usagemeter.ledger), then owner_id,
    which the writer sends as coalesce(tenant_id, user_id); fast or careful as `insert_events`.
    """
    if rows < 1:
        raise ValueError(f"an INSERT needs at least one row (got {rows})")
    columns = ledger.WRITTEN_WITH_CREATED_AT if timed else ledger.WRITTEN
    placeholder = sql.Placeholder(format="b" if fast else "s")
    values = [
        sql.SQL("coalesce({}::{}, now())" if c.name == "created_at" else "{}::{}").format(
            placeholder, sql.SQL(c.sql_type)
        )
        for c in columns
    ]
    row = sql.SQL("({}, {}::uuid)").format(sql.SQL(", ").join(values), placeholder)
    statement = sql.SQL("insert into public.usage_events ({targets}, owner_id) values {rows}").format(
        targets=ledger.column_list(columns), rows=sql.SQL(", ").join([row] * rows)
    )
    if not fast:
        statement = sql.SQL("{} returning id, created_at").format(statement)
    return statement.as_string(None)
