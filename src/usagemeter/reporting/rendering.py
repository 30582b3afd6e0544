"""Summaries for people (a rich table, a terminal bar chart) and for machines (JSON, CSV)."""

from __future__ import annotations

import csv
import io
import json
import uuid
from collections import defaultdict
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from rich.console import Console
from rich.table import Table
from rich.text import Text

from usagemeter.reporting.summaries import SummaryRow

OutputFormat = Literal["table", "json", "csv"]
TOTALS = ("events", "tokens_input", "tokens_output", "tokens_total")
MONEY = ("cost", "currency")
BAR_WIDTH = 50


def _plain(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, uuid.UUID | Decimal):
        return str(value)  # money as a decimal string: exact, never a float
    return value


def as_records(rows: list[SummaryRow]) -> list[dict[str, Any]]:
    """Rows as flat JSON-ready dicts: the group keys used, then the totals."""
    return [{k: _plain(v) for k, v in row.as_dict().items()} for row in rows]


def to_json(rows: list[SummaryRow]) -> str:
    return json.dumps(as_records(rows), indent=2)


def to_csv(rows: list[SummaryRow], key_names: list[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=[*key_names, *TOTALS, *MONEY], lineterminator="\n")
    writer.writeheader()
    writer.writerows(as_records(rows))
    return buffer.getvalue()


def print_table(rows: list[SummaryRow], key_names: list[str], title: str, console: Console) -> None:
    table = Table(title=title, title_justify="left")
    for name in key_names:
        table.add_column(name)
    for name in TOTALS:
        table.add_column(name, justify="right")
    currency = rows[0].currency if rows else None
    table.add_column(f"cost ({currency})" if currency else "cost", justify="right")
    for record in as_records(rows):
        table.add_row(*(Text(str(record[k])) if record[k] is not None else "" for k in key_names),
                      *(f"{record[t]:,}" for t in TOTALS), record["cost"])  # fmt: skip
    if len(rows) > 1:
        table.add_section()
        table.add_row(
            "total", *([""] * (len(key_names) - 1)), *(f"{sum(getattr(r, t) for r in rows):,}" for t in TOTALS),
            str(sum((r.cost for r in rows), Decimal(0))),
        )  # fmt: skip
    console.print(table)


def print_chart(rows: list[SummaryRow], tz_label: str, console: Console) -> None:
    """Tokens per bucket (all groups together), one bar each: the shape of usage over time."""
    per_bucket: dict[datetime, int] = defaultdict(int)
    for row in rows:
        per_bucket[row.keys["bucket"]] += row.tokens_total
    if not per_bucket:
        console.print("no buckets to chart")
        return
    peak = max(per_bucket.values()) or 1
    console.print(f"tokens per bucket ({tz_label})")
    for bucket in sorted(per_bucket):
        total = per_bucket[bucket]
        bar = "█" * round(BAR_WIDTH * total / peak)
        console.print(f"{bucket.isoformat(timespec='minutes'):>25} {bar:<{BAR_WIDTH}} {total:,}", highlight=False)
