"""The report queries: fixed SQL fragments, picked by validated enum values and joined with psycopg.sql.

Reports vary in their grouping and filters, so their SQL is composed; every fragment is a
constant here, and every value travels as a bound parameter. Nothing a caller types becomes SQL.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from psycopg import sql

from usagemeter import ledger, ledger_parquet

GroupKey = Literal["action", "domain", "module", "model", "user"]
Scope = Literal["tenant", "user", "all"]

# Output name and SQL expression of each grouping.
GROUP_COLUMNS: dict[GroupKey, tuple[str, sql.Composable]] = {
    "action": ("action", sql.SQL("e.action")),
    "domain": ("domain", sql.SQL("split_part(e.action, ':', 1) || ':' || split_part(e.action, ':', 2)")),
    "module": ("module_id", sql.SQL("coalesce(e.module_id, split_part(e.action, ':', 1))")),
    "model": ("model", sql.SQL("e.model")),
    "user": ("user_id", sql.SQL("e.user_id")),
}

SCOPE_FILTERS: dict[Scope, sql.Composable] = {
    "tenant": sql.SQL("e.tenant_id = %(tenant_id)s"),
    "user": sql.SQL("e.tenant_id is null and e.user_id = %(user_id)s"),
    "all": sql.SQL("true"),  # what the caller may see: RLS decides
}

# On a database distributed by owner (docs/distributed.md), a one-tenant or one-user scope also names the
# owner key, which every table a summary reads carries there: the query is then one task on that owner's
# shard instead of one per shard.
OWNER_FILTERS: dict[Scope, sql.Composable] = {
    "tenant": sql.SQL("e.owner_id = %(tenant_id)s"),
    "user": sql.SQL("e.owner_id = %(user_id)s"),
}

# Optional filters, each used only when its parameter is given.
OPTIONAL_FILTERS: dict[str, sql.Composable] = {
    "action": sql.SQL("e.action = %(action)s"),
    "action_prefix": sql.SQL("starts_with(e.action, %(action_prefix)s)"),
    "module": sql.SQL("coalesce(e.module_id, split_part(e.action, ':', 1)) = %(module)s"),
    "by_user": sql.SQL("e.user_id = %(by_user)s"),
    "metadata": sql.SQL("e.metadata @> %(metadata)s::jsonb"),
    "after": sql.SQL("(e.created_at, e.id) < (%(after_time)s, %(after_id)s)"),
}

BUCKET_EXPRESSION = sql.SQL("date_trunc(%(bucket)s, e.created_at)")

USE_TIME_ZONE = "select set_config('TimeZone', %(tz)s, true)"
# On a distributed database: by SET LOCAL, which Citus sends on to the workers that evaluate the buckets.
USE_TIME_ZONE_PROPAGATED = "select usagemeter_request.set_time_zone_v1(%(tz)s)"
# On a distributed database, for a summary over several owners in REPEATABLE READ: one connection per
# worker, so every part of the query reads the same snapshot there (summaries._snapshot_per_worker).
ONE_CONNECTION_PER_WORKER = "set local citus.max_adaptive_executor_pool_size = 1"

# The currency of the price list (every price shares one), as the caller sees it; NULL before any price.
PRICE_CURRENCY = "select min(p.currency) from public.usage_prices as p"


def where_clause(
    scope: Scope,
    filters: Sequence[str],
    *,
    time_column: str = "created_at",
    start: str = "start",
    end: str = "end",
    routed: bool = False,
) -> sql.Composed:
    """Scope, time range and filters on alias `e` (the raw table, or the rollup with its `bucket`).

    `routed` adds the owner key of a one-tenant or one-user scope (a distributed database only).
    """
    owner = [OWNER_FILTERS[scope]] if routed and scope in OWNER_FILTERS else []
    parts = [
        *owner,
        SCOPE_FILTERS[scope],
        sql.SQL("e.{} >= {}").format(sql.Identifier(time_column), sql.Placeholder(start)),
        sql.SQL("e.{} < {}").format(sql.Identifier(time_column), sql.Placeholder(end)),
    ]
    parts += [OPTIONAL_FILTERS[name] for name in filters]
    return sql.SQL(" and ").join(parts)


RAW_ROWS = sql.SQL(
    "select e.created_at, e.tenant_id, e.user_id, e.action, e.module_id, e.model, e.event_count as events,"
    " e.tokens_input, e.tokens_output, e.tokens_total, e.cost from public.usage_events as e where {}"
)
HOURLY_ROWS = sql.SQL(
    "select e.bucket as created_at, e.tenant_id, e.user_id, e.action, e.module_id, e.model, e.events,"
    " e.tokens_input, e.tokens_output, e.tokens_total, e.cost from public.usage_rollup_hourly as e where {}"
)
DAILY_ROWS = sql.SQL(
    "select e.day as created_at, e.tenant_id, e.user_id, e.action, e.module_id, e.model, e.events,"
    " e.tokens_input, e.tokens_output, e.tokens_total, e.cost from public.usage_rollup_daily as e where {}"
)

TENANT_DAILY_ROWS = sql.SQL(
    "select e.day as created_at, e.tenant_id, null::uuid as user_id, e.action, e.module_id, e.model, e.events,"
    " e.tokens_input, e.tokens_output, e.tokens_total, e.cost from public.usage_rollup_tenant_daily as e where {}"
)
# Changes not yet folded into the rollups: added to any rollup part, they make it exact.
DELTA_ROWS = sql.SQL(
    "select e.bucket as created_at, e.tenant_id, e.user_id, e.action, e.module_id, e.model, e.events,"
    " e.tokens_input, e.tokens_output, e.tokens_total, e.cost from public.usage_rollup_deltas as e where {}"
)

Source = Literal["raw", "hourly", "daily"]

# The pieces a summary's rows can come from: (table, its time column, start parameter, end parameter).
SOURCE_PARTS: dict[str, tuple[sql.SQL, str, str, str]] = {
    "raw": (RAW_ROWS, "created_at", "start", "end"),
    "raw_head": (RAW_ROWS, "created_at", "start", "full_start"),
    "raw_tail": (RAW_ROWS, "created_at", "full_end", "end"),
    "hours": (HOURLY_ROWS, "bucket", "full_start", "full_end"),
    "hours_head": (HOURLY_ROWS, "bucket", "full_start", "day_start"),
    "hours_tail": (HOURLY_ROWS, "bucket", "day_end", "full_end"),
    "days": (DAILY_ROWS, "day", "day_start", "day_end"),
    "tenant_days": (TENANT_DAILY_ROWS, "day", "day_start", "day_end"),
}
# The rollup parts together always cover the whole hours [full_start, full_end) exactly (the raw
# parts cover the partial hours around them), so one read of the unfolded deltas of that range
# completes them all; deltas are per hour, so each falls in the right day too.
ROLLUP_DELTAS = (DELTA_ROWS, "bucket", "full_start", "full_end")


def events_source(scope: Scope, filters: Sequence[str], parts: Sequence[str], *, routed: bool = False) -> sql.Composed:
    """The rows a summary adds up, as (created_at, ..., events, tokens...), from the given parts.

    The caller picks the parts that cover [start, end) exactly once and are not empty: e.g. the
    daily rollup's whole UTC days, hourly rows for the whole hours around them, raw events for
    the partial hours at either end. With any rollup part come the unfolded deltas of the whole
    hours (ROLLUP_DELTAS): read in the same snapshot, the sum is exact.
    """
    pieces = [SOURCE_PARTS[part] for part in parts]
    if any(not part.startswith("raw") for part in parts):
        pieces.append(ROLLUP_DELTAS)
    return sql.SQL(" union all ").join(
        table.format(where_clause(scope, filters, time_column=column, start=start, end=end, routed=routed))
        for table, column, start, end in pieces
    )


def summary_query(
    scope: Scope,
    filters: Sequence[str],
    group_by: Sequence[GroupKey],
    *,
    bucketed: bool,
    parts: Sequence[str],
    routed: bool = False,
) -> sql.Composed:
    """Totals per group (and per bucket); with buckets, every group gets every bucket, zero-filled.

    Groups left with nothing (events voided, zero rollup rows) are skipped; a group of corrections
    alone (booked in another period than their events) keeps its token and cost changes.
    Only the %(top)s groups with the most tokens are kept (all of them when it is null), and at
    most %(row_limit)s rows are returned, so the caller can tell a result that is too big.
    """
    keys: list[sql.Composable] = [
        sql.SQL("{} as {}").format(GROUP_COLUMNS[key][1], sql.Identifier(GROUP_COLUMNS[key][0])) for key in group_by
    ]
    key_names = [sql.Identifier(GROUP_COLUMNS[key][0]) for key in group_by]
    if bucketed:
        keys.append(sql.SQL("{} as bucket").format(BUCKET_EXPRESSION))
    select_keys = sql.SQL(", ").join(keys) if keys else sql.SQL("")
    totals = sql.SQL(
        "coalesce(sum(e.events), 0)::bigint as events, coalesce(sum(e.tokens_input), 0)::bigint as tokens_input,"
        " coalesce(sum(e.tokens_output), 0)::bigint as tokens_output,"
        " coalesce(sum(e.tokens_total), 0)::bigint as tokens_total, coalesce(sum(e.cost), 0)::numeric(20, 6) as cost"
    )
    group = sql.SQL(
        " group by {} having (sum(e.events), sum(e.tokens_input), sum(e.tokens_output), sum(e.cost)) <> (0, 0, 0, 0)"
    ).format(sql.SQL(", ").join(sql.SQL(str(i + 1)) for i in range(len(keys))))
    grouped = sql.SQL("select {keys}{comma}{totals} from ({source}) as e{group}").format(
        keys=select_keys,
        comma=sql.SQL(", ") if keys else sql.SQL(""),
        totals=totals,
        source=events_source(scope, filters, parts, routed=routed),
        group=group if keys else sql.SQL(""),
    )
    positions = [sql.SQL(str(i + 1)) for i in range(len(key_names))]
    if not bucketed:
        biggest_first = sql.SQL(", ").join([sql.SQL(f"{len(keys) + 4} desc"), *positions])
        return sql.SQL("{} order by {} limit least(%(top)s, %(row_limit)s)").format(grouped, biggest_first)
    series = sql.SQL(", ").join(key_names) if key_names else sql.SQL("")
    series_source = (
        sql.SQL("(select {} from agg group by {} order by sum(tokens_total) desc, {} limit %(top)s) as s").format(
            series, sql.SQL(", ").join(positions), sql.SQL(", ").join(positions)
        )
        if key_names
        else sql.SQL("(select) as s")
    )
    join_on = sql.SQL(" and ").join(
        [sql.SQL("a.bucket = b.bucket")] + [sql.SQL("a.{0} is not distinct from s.{0}").format(k) for k in key_names]
    )
    return sql.SQL(
        "with agg as ({grouped}),"
        " buckets as (select generate_series(date_trunc(%(bucket)s, %(start)s::timestamptz),"
        " %(end)s::timestamptz - interval '1 microsecond', ('1 ' || %(bucket)s)::interval) as bucket)"
        " select {series_cols}b.bucket, coalesce(a.events, 0) as events,"
        " coalesce(a.tokens_input, 0) as tokens_input, coalesce(a.tokens_output, 0) as tokens_output,"
        " coalesce(a.tokens_total, 0) as tokens_total, coalesce(a.cost, 0)::numeric(20, 6) as cost"
        " from {series_source} cross join buckets as b left join agg as a on {join_on}"
        " order by {order}b.bucket limit %(row_limit)s"
    ).format(
        grouped=grouped,
        series_cols=sql.SQL("").join(sql.SQL("s.{}, ").format(k) for k in key_names),
        series_source=series_source,
        join_on=join_on,
        order=sql.SQL("").join(sql.SQL("s.{}, ").format(k) for k in key_names),
    )


def listing_query(scope: Scope, filters: Sequence[str], *, routed: bool = False) -> sql.Composed:
    """One page of events, newest first, after the cursor when given (keyset pagination)."""
    return sql.SQL(
        "select {columns} from public.usage_events as e where {where}"
        " order by e.created_at desc, e.id desc limit %(limit)s"
    ).format(columns=EXPORT_COLUMNS, where=where_clause(scope, filters, routed=routed))


# The exported columns (usagemeter.ledger), as rows and as one JSON object per event built by the server.
EXPORT_COLUMNS = ledger.column_list(ledger.EXPORTED, alias="e")
EXPORT_JSON_OBJECT = sql.SQL("json_build_object({})::text").format(
    sql.SQL(", ").join(
        sql.SQL("{}, {}").format(sql.Literal(c.name), sql.Identifier("e", c.name)) for c in ledger.EXPORTED
    )
)
# For Parquet: uuids and jsonb as text, the rest as they are.
EXPORT_ARROW_COLUMNS = ledger_parquet.arrow_select_list(ledger.EXPORTED)


def export_query(
    scope: Scope, filters: Sequence[str], columns: sql.Composable, *, routed: bool = False
) -> sql.Composed:
    """Every event in the filter, oldest first, for streaming out (COPY or a server-side cursor)."""
    return sql.SQL("select {columns} from public.usage_events as e where {where} order by e.created_at, e.id").format(
        columns=columns, where=where_clause(scope, filters, routed=routed)
    )
