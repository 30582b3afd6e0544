"""Opening connections: one place that names the application, so usagemeter shows in pg_stat_activity."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import conninfo


def connect(url: str, *, autocommit: bool = False) -> psycopg.Connection[tuple[Any, ...]]:
    """Open a connection; the application name shows usagemeter in pg_stat_activity."""
    return psycopg.connect(url, autocommit=autocommit, application_name="usagemeter")


def with_database(url: str, dbname: str) -> str:
    """The same server and credentials as `url`, another database."""
    return conninfo.make_conninfo(url, dbname=dbname)
