"""The INSERT statements of the write flow, composed from the one column definition (usagemeter.ledger).

Four variants: with or without created_at (only the service role may set it), and the fast path
(binary parameters, nothing returned: a used id or key fails the statement with a unique_violation
and the careful path takes over) or the careful path (returning each stored row's id and time; the
writer looks up what is stored already first, since ids and keys are unique across the partitions
of usage_events, where ON CONFLICT sees one partition only).
Each is rendered to text once, at import: the hot path sends plain strings.
"""

from __future__ import annotations

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
        "insert into public.usage_events ({columns}) select {selected} from unnest({arrays}) as e({columns})"
    ).format(columns=ledger.column_list(columns), selected=selected, arrays=arrays)
    if careful:
        statement = sql.SQL("{} returning id, created_at").format(statement)
    return statement.as_string(None)


INSERT_EVENTS = _insert(ledger.WRITTEN, binary=False, careful=True)
INSERT_EVENTS_WITH_CREATED_AT = _insert(ledger.WRITTEN_WITH_CREATED_AT, binary=False, careful=True)
INSERT_EVENTS_FAST = _insert(ledger.WRITTEN, binary=True, careful=False)
INSERT_EVENTS_FAST_WITH_CREATED_AT = _insert(ledger.WRITTEN_WITH_CREATED_AT, binary=True, careful=False)
