"""What every benchmark needs: a server, a scratch migrated database, timings, and the output format.

Benchmarks print a rich table for people and, as their last line, one JSON object for machines.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql as pgsql
from rich.console import Console
from rich.table import Table

from usagemeter import db
from usagemeter.ops import embedded, migrate


@contextmanager
def server(url: str | None) -> Iterator[str]:
    """The given server, $DATABASE_URL's, or a throwaway embedded PostgreSQL."""
    url = url or os.environ.get("USAGEMETER_DATABASE_URL") or os.environ.get("DATABASE_URL")
    if url:
        yield url
        return
    with (
        tempfile.TemporaryDirectory(prefix="usagemeter-bench-") as scratch,
        embedded.EmbeddedPostgres(Path(scratch) / "pgdata") as pg,
    ):
        with db.connect(pg.url(), autocommit=True) as conn:
            migrate.apply_platform_shim(conn)  # roles are cluster-wide: authenticator exists from here on
            pg.enable_app_login(conn)
        os.environ["USAGEMETER_AUTHENTICATOR_PASSWORD"] = pg.app_password()
        yield pg.url()


def app_url(url: str) -> str:
    """The app login (`authenticator`) on `url`'s database, as recorders and reports connect in production."""
    return db.app_url(url, password=os.environ.get("USAGEMETER_AUTHENTICATOR_PASSWORD"))


@contextmanager
def scratch_database(server_url: str, *, keep: bool = False) -> Iterator[str]:
    """A new migrated database for one benchmark run, dropped afterwards unless `keep`."""
    name = f"um_bench_{uuid.uuid4().hex[:10]}"
    with db.connect(server_url, autocommit=True) as conn:
        conn.execute(pgsql.SQL("create database {}").format(pgsql.Identifier(name)))
    url = db.with_database(server_url, name)
    try:
        with db.connect(url, autocommit=True) as conn:
            migrate.migrate(conn)
        yield url
    finally:
        if not keep:
            with db.connect(server_url, autocommit=True) as conn:
                conn.execute(pgsql.SQL("drop database if exists {} with (force)").format(pgsql.Identifier(name)))


@dataclass(frozen=True)
class Timing:
    """Wall-clock milliseconds of repeated runs of one operation."""

    label: str
    samples_ms: list[float]

    @property
    def p50(self) -> float:
        return statistics.median(self.samples_ms)

    @property
    def p95(self) -> float:
        ordered = sorted(self.samples_ms)
        return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def measure(label: str, operation: Callable[[], Any], *, repeat: int, warmup: int = 3) -> Timing:
    """Run `operation` warmup times unmeasured, then `repeat` times measured."""
    for _ in range(warmup):
        operation()
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        operation()
        samples.append((time.perf_counter() - started) * 1000)
    return Timing(label, samples)


def server_description(conn: psycopg.Connection[Any]) -> str:
    row = conn.execute("select current_setting('server_version')").fetchone()
    version = row[0] if row else "?"
    return f"PostgreSQL {version} on {platform.machine()}, {os.cpu_count()} cores"


def print_timings(title: str, timings: list[Timing], console: Console) -> None:
    table = Table(title=title, title_justify="left")
    table.add_column("query")
    table.add_column("p50 ms", justify="right")
    table.add_column("p95 ms", justify="right")
    for timing in timings:
        table.add_row(timing.label, f"{timing.p50:.2f}", f"{timing.p95:.2f}")
    console.print(table)


def print_summary(summary: dict[str, Any]) -> None:
    """The machine-readable last line."""
    print(json.dumps(summary, sort_keys=True), flush=True)
