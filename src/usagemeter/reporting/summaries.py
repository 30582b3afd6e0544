"""Usage summaries, run as the caller's identity so row-level security decides what counts.

    summarize(conn, Identity.user(uid), SummaryQuery(scope="all", start=..., end=..., group_by=["action"]))

A summary reads the coarsest exact source for its range: the daily rollups (or the tenant-wide
one), hourly rollups around them, and raw events for partial hours at the edges; each rollup with
the deltas not yet folded into it. Rollups plus deltas are exact at every commit (triggers append
the deltas), so every source gives the numbers the raw events would.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

import psycopg
from psycopg import errors as pgerrors
from psycopg import pq, sql
from psycopg.rows import dict_row
from pydantic import Field, field_validator

from usagemeter.db import Identity, acting_as
from usagemeter.db.identity import is_distributed
from usagemeter.reporting import archives, report_sql
from usagemeter.reporting.filters import ReportError, UsageFilter, time_zone

Bucket = Literal["hour", "day", "week", "month"]
GroupKey = report_sql.GroupKey

# Default caps on a summary's size (summarize's max_buckets and max_rows): 10,000 buckets is
# 27 years of days or 14 months of hours; 100,000 rows take about 100 MiB and a second to read.
MAX_BUCKETS = 10_000
MAX_ROWS = 100_000


class SummaryQuery(UsageFilter):
    """Totals over the filter, grouped by keys and optionally by a time bucket in a time zone."""

    group_by: tuple[GroupKey, ...] = ()
    bucket: Bucket | None = None
    tz: str = "UTC"
    top: int | None = Field(default=None, ge=1)

    @field_validator("group_by")
    @classmethod
    def _distinct(cls, keys: tuple[GroupKey, ...]) -> tuple[GroupKey, ...]:
        if len(set(keys)) != len(keys):
            raise ValueError("a grouping key is repeated")
        return keys

    @field_validator("tz")
    @classmethod
    def _known_zone(cls, tz: str) -> str:
        try:
            time_zone(tz)
        except ReportError as failure:
            raise ValueError(str(failure).removeprefix("tz: ")) from None
        return tz


@dataclass(frozen=True, slots=True)
class SummaryRow:
    """One group's totals; `keys` holds the grouping values used (action, domain, module_id, model, user_id, bucket).

    `cost` is exact (the sum of the events' stored costs, 6 decimal places) in `currency`, the
    price list's currency (None while there are no prices). A plain dataclass: summaries return
    hundreds of rows and validation would only re-check the database.
    """

    keys: dict[str, Any]
    events: int
    tokens_input: int
    tokens_output: int
    tokens_total: int
    cost: Decimal = Decimal("0.000000")
    currency: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {**self.keys, "events": self.events, "tokens_input": self.tokens_input,
                "tokens_output": self.tokens_output, "tokens_total": self.tokens_total,
                "cost": self.cost, "currency": self.currency}  # fmt: skip


@dataclass(frozen=True)
class SourcePlan:
    """Where a summary's numbers come from, and the whole hours and UTC days of its range."""

    source: report_sql.Source
    start: datetime
    end: datetime
    full_start: datetime
    full_end: datetime
    day_start: datetime
    day_end: datetime
    tenant_wide: bool = False  # one tenant, users not distinguished: the tenant-wide daily rollup serves

    @property
    def parts(self) -> list[str]:
        """The non-empty pieces that cover the range exactly once (see report_sql.SOURCE_PARTS)."""
        if self.source == "raw":
            return ["raw"]
        days = "tenant_days" if self.tenant_wide else "days"
        middle = ["hours"] if self.source == "hourly" else [days, "hours_head", "hours_tail"]
        bounds = {
            "raw_head": (self.start, self.full_start),
            "raw_tail": (self.full_end, self.end),
            "hours_head": (self.full_start, self.day_start),
            "hours_tail": (self.day_end, self.full_end),
        }
        return [p for p in [*middle, "raw_head", "raw_tail"] if p not in bounds or bounds[p][0] < bounds[p][1]]

    @property
    def raw_ranges(self) -> list[tuple[datetime, datetime]]:
        """The parts of the range read from raw events (the rest comes from the rollups)."""
        if self.source == "raw":
            return [(self.start, self.end)]
        edges = {"raw_head": (self.start, self.full_start), "raw_tail": (self.full_end, self.end)}
        return [edges[p] for p in self.parts if p in edges]


def _ceil(moment: datetime, unit: timedelta) -> datetime:
    floor = _floor(moment, unit)
    return floor if floor == moment else floor + unit


def _floor(moment: datetime, unit: timedelta) -> datetime:
    utc = moment.astimezone(UTC)
    midnight = utc.replace(hour=0, minute=0, second=0, microsecond=0)
    return midnight + (utc - midnight) // unit * unit


def _offsets(query: SummaryQuery) -> set[timedelta]:
    """The zone's UTC offsets over the range (sampled at each UTC day boundary and both ends)."""
    zone = time_zone(query.tz)
    moments = [query.start, query.end]
    day = _ceil(query.start, timedelta(days=1))
    while day < query.end:
        moments.append(day)
        day += timedelta(days=1)
    return {offset for offset in (m.astimezone(zone).utcoffset() for m in moments) if offset is not None}


def source_plan(query: SummaryQuery) -> SourcePlan:
    """The coarsest source that gives exactly the raw aggregation; all of them give the same numbers.

    Rollups lack metadata, so a metadata filter reads raw events. Hour buckets (and day, week or
    month buckets in a zone with a non-whole-hour offset) need hourly rows; daily rows (UTC days)
    serve totals without buckets, and day, week or month buckets in a zone at UTC+0.
    """
    hour, day = timedelta(hours=1), timedelta(days=1)
    plan = SourcePlan("raw", query.start, query.end, _ceil(query.start, hour), _floor(query.end, hour),
                      _ceil(query.start, day), _floor(query.end, day))  # fmt: skip
    offsets = _offsets(query) if query.bucket else {timedelta(0)}
    if query.metadata is not None or plan.full_start >= plan.full_end or any(o % hour for o in offsets):
        return plan
    daily_fits = query.bucket is None or (query.bucket != "hour" and offsets == {timedelta(0)})
    source: report_sql.Source = "daily" if daily_fits and plan.day_start < plan.day_end else "hourly"
    tenant_wide = query.scope == "tenant" and "user" not in query.group_by and query.by_user is None
    return dataclasses.replace(plan, source=source, tenant_wide=tenant_wide)


def summary_source(query: SummaryQuery) -> report_sql.Source:
    return source_plan(query).source


def bucket_count(query: SummaryQuery) -> int:
    """How many buckets the range spans in the query's zone (0 without a bucket), computed without the database."""
    if query.bucket is None:
        return 0
    zone = time_zone(query.tz)
    first, last = query.start.astimezone(zone), (query.end - timedelta(microseconds=1)).astimezone(zone)
    if query.bucket == "hour":  # as the SQL's series: the first local hour, then steps of one hour
        first_hour = first - timedelta(minutes=first.minute, seconds=first.second, microseconds=first.microsecond)
        return (last.astimezone(UTC) - first_hour.astimezone(UTC)) // timedelta(hours=1) + 1
    if query.bucket == "day":
        return (last.date() - first.date()).days + 1
    if query.bucket == "week":
        mondays = [m.date() - timedelta(days=m.weekday()) for m in (first, last)]
        return (mondays[1] - mondays[0]).days // 7 + 1
    return (last.year - first.year) * 12 + last.month - first.month + 1


def _refuse_raw_reads_of_archived_months(conn: psycopg.Connection[Any], identity: Identity, plan: SourcePlan) -> None:
    """A summary that needs raw events of a month retention took out would miss them: say so instead."""
    ranges = plan.raw_ranges
    if not ranges:
        return
    months = archives.archived_months(conn, identity, min(s for s, _ in ranges), max(e for _, e in ranges))
    missing = [m for m in months if any(m.start < end and m.end > start for start, end in ranges)]
    if missing:
        raise ReportError(
            f"range: the raw events of {archives.labels(missing)} (UTC) were taken out by retention; summaries of"
            " those months come from the rollups, which need whole hours and no metadata filter"
        )


def summary_statement(
    query: SummaryQuery, *, max_rows: int = MAX_ROWS, routed: bool = False
) -> tuple[sql.Composed, dict[str, Any]]:
    """The summary's SQL and parameters (summarize runs it after setting the session's time zone).

    `routed`: on a distributed database, a one-tenant or one-user summary names the owner key too.
    """
    plan = source_plan(query)
    statement = report_sql.summary_query(
        query.scope,
        query.active_filters(),
        query.group_by,
        bucketed=query.bucket is not None,
        parts=plan.parts,
        routed=routed,
    )
    params = {**query.parameters(), "bucket": query.bucket, "tz": query.tz, "full_start": plan.full_start,
              "full_end": plan.full_end, "day_start": plan.day_start, "day_end": plan.day_end,
              "top": query.top, "row_limit": max_rows + 1}  # fmt: skip
    return statement, params


@contextmanager
def _snapshot_per_worker(conn: psycopg.Connection[Any], *, wanted: bool) -> Iterator[None]:
    """REPEATABLE READ for the transaction the block opens, where a summary must read one snapshot per worker.

    Citus runs a summary over several owners in parts (the rollups, the deltas, the raw edges), each a
    query of its own: under READ COMMITTED a fold committing between two parts would be counted twice or
    not at all. In REPEATABLE READ over one connection per worker (report_sql.ONE_CONNECTION_PER_WORKER)
    every part sees the same snapshot of its worker, where each owner's rows all are. A transaction the
    caller holds open keeps its own level.
    """
    if not wanted or conn.info.transaction_status != pq.TransactionStatus.IDLE:
        yield
        return
    previous = conn.isolation_level
    conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    try:
        yield
    finally:
        conn.isolation_level = previous


def summarize(
    conn: psycopg.Connection[Any],
    identity: Identity,
    query: SummaryQuery,
    *,
    max_buckets: int = MAX_BUCKETS,
    max_rows: int = MAX_ROWS,
) -> list[SummaryRow]:
    """Totals as `identity` sees them (RLS applies); with a bucket, every bucket of the range, zeros included.

    Parameters
    ----------
    max_buckets, max_rows:
        Caps on the summary's size: a range of more buckets is refused before anything runs, and
        a result of more rows (buckets x groups) is refused after reading at most max_rows + 1.

    Raises
    ------
    ReportError
        A cap is exceeded, or the server does not know the time zone.
    """
    buckets = bucket_count(query)
    if buckets > max_buckets:
        raise ReportError(
            f"bucket: the range spans {buckets:,} {query.bucket} buckets, more than the {max_buckets:,} allowed"
            " (max_buckets): use a coarser bucket or a shorter range"
        )
    _refuse_raw_reads_of_archived_months(conn, identity, source_plan(query))
    distributed = is_distributed(conn)
    statement, params = summary_statement(query, max_rows=max_rows, routed=distributed)
    use_time_zone = report_sql.USE_TIME_ZONE_PROPAGATED if distributed else report_sql.USE_TIME_ZONE
    one_snapshot = distributed and query.scope == "all"  # others are one statement on one shard
    try:
        with (
            _snapshot_per_worker(conn, wanted=one_snapshot),
            conn.pipeline(),
            acting_as(conn, identity),
            conn.cursor(row_factory=dict_row) as cur,
        ):
            if one_snapshot:
                cur.execute(report_sql.ONE_CONNECTION_PER_WORKER)
            cur.execute(use_time_zone, params)
            currency_row = cur.execute(report_sql.PRICE_CURRENCY).fetchone()
            rows = cur.execute(statement, params).fetchall()
    except pgerrors.InvalidParameterValue as failure:
        refusal = failure.diag.message_primary or ""
        if "time zone" not in refusal.lower() and "timezone" not in refusal.lower():
            raise  # only setting TimeZone refuses a value this way: buckets are validated
        raise ReportError(f"tz: the database does not accept time zone {query.tz!r} ({refusal})") from None
    if len(rows) > max_rows:
        shape = f"; {buckets:,} buckets x more than {max_rows // buckets:,} groups" if buckets else ""
        raise ReportError(
            f"summary: more than the {max_rows:,} rows allowed (max_rows{shape}): use a coarser bucket,"
            " a shorter range, or top (--top N) to keep the biggest groups"
        )
    key_names = [report_sql.GROUP_COLUMNS[k][0] for k in query.group_by]
    zone = time_zone(query.tz)
    currency = next(iter(currency_row.values())) if currency_row else None
    result = []
    for row in rows:
        keys = {name: row[name] for name in key_names}
        if query.bucket is not None:
            keys["bucket"] = row["bucket"].astimezone(zone)  # in the report's zone, whatever the session's
        result.append(SummaryRow(keys, row["events"], row["tokens_input"], row["tokens_output"], row["tokens_total"],
                                 row["cost"], currency))  # fmt: skip
    return result
