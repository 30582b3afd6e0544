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


def _insert(columns: tuple[ledger.Column, ...], *, binary: bool, careful: bool, owner_key: bool) -> LiteralString:
    """`insert into usage_events (...) select ... from unnest(%(col)s::type[], ...)`, as described above.

    With `owner_key` (a database distributed on Citus, docs/distributed.md) it also writes
    owner_id = coalesce(tenant_id, user_id), the distribution column Citus routes each row by.
    """
    arrays = sql.SQL(", ").join(
        sql.SQL("{}::{}[]").format(sql.Placeholder(c.name, format="b" if binary else "s"), sql.SQL(c.sql_type))
        for c in columns
    )
    selected = sql.SQL(", ").join(
        sql.SQL("coalesce(created_at, now())") if c.name == "created_at" else c.identifier for c in columns
    )
    targets = ledger.column_list(columns)
    if owner_key:
        targets = sql.SQL("{}, owner_id").format(targets)
        selected = sql.SQL("{}, coalesce(tenant_id, user_id)").format(selected)
    statement = sql.SQL(
        "insert into public.usage_events ({targets}) select {selected} from unnest({arrays}) as e({columns})"
    ).format(targets=targets, columns=ledger.column_list(columns), selected=selected, arrays=arrays)
    if careful:
        statement = sql.SQL("{} returning id, created_at").format(statement)
    return statement.as_string(None)


def insert_events(*, timed: bool, fast: bool, distributed: bool) -> LiteralString:
    """The INSERT for a chunk: with created_at or not, fast or careful, for one node or a Citus cluster."""
    return _STATEMENTS[timed, fast, distributed]


_STATEMENTS = {
    (timed, fast, distributed): _insert(
        ledger.WRITTEN_WITH_CREATED_AT if timed else ledger.WRITTEN,
        binary=fast,
        careful=not fast,
        owner_key=distributed,
    )
    for timed in (False, True)
    for fast in (False, True)
    for distributed in (False, True)
}
