"""Checking, folding and rebuilding the rollups, which triggers keep exact as events are written.

Writers append deltas (usage_rollup_deltas); the rollups plus the deltas equal the raw events at
every commit. Folding moves the deltas into the rollups: the triggers do it every 1000 deltas, and
`fold` does it on demand. A rebuild is for repairs only: after a TRUNCATE, a restore without
triggers, or triggers that were disabled. It runs in one transaction that holds writers off
(SHARE lock) until it commits.
"""

from __future__ import annotations

from typing import Any

import psycopg

from usagemeter.db import sql
from usagemeter.db.identity import is_distributed

queries = sql.load_queries("usagemeter.reporting")


def differences(conn: psycopg.Connection[Any]) -> int:
    """How many (hour or day, tenant, user, action) groups disagree between the rollups and the raw events."""
    row = conn.execute(queries["rollup_differences"]).fetchone()
    return int(row[0]) if row else 0


def fold(conn: psycopg.Connection[Any]) -> int | None:
    """Move the unfolded deltas into the rollups; their number, or None when another fold was running."""
    row = conn.execute(queries["fold_rollups"]).fetchone()
    return None if row is None or row[0] is None else int(row[0])


def rebuild(conn: psycopg.Connection[Any]) -> int:
    """Recompute the rollups from the raw events (no deltas left); returns the number of hourly rows written."""
    with conn.transaction():
        conn.execute(queries["lock_rollups_for_rebuild"])
        conn.execute(queries["lock_usage_for_rebuild"])
        # on a distributed database the rollups' rows name their owner_id (docs/distributed.md)
        if is_distributed(conn):
            conn.execute(queries["clear_rollups_distributed"])
            hours = conn.execute(queries["rebuild_hourly_rollup_distributed"]).rowcount
            conn.execute(queries["rebuild_daily_rollup_distributed"])
            conn.execute(queries["rebuild_tenant_daily_rollup_distributed"])
            return hours
        conn.execute(queries["clear_rollups"])
        hours = conn.execute(queries["rebuild_hourly_rollup"]).rowcount
        conn.execute(queries["rebuild_daily_rollup"])
        conn.execute(queries["rebuild_tenant_daily_rollup"])
        return hours
