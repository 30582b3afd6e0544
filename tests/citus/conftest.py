"""The citus tier: a coordinator and two workers of the wheel's PostgreSQL 18 with Citus loaded.

Every test here is marked `citus` (main runs deselect them with -m 'not citus'; CI runs them in a
step of their own). Without the Citus build ($USAGEMETER_CITUS_DIR, or ../shared/citus beside
the clone) the tier is skipped, saying what is missing.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests import citus_cluster
from usagemeter import db
from usagemeter.ops import distribute, migrate


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.path).parents:
            item.add_marker(pytest.mark.citus)


@pytest.fixture(scope="session")
def citus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[citus_cluster.CitusCluster]:
    """The three-node cluster for the run; its `url()` is the coordinator's `postgres` database as superuser."""
    build = citus_cluster.citus_dir(Path(__file__).resolve().parents[2])
    reason = citus_cluster.missing(build)
    if reason is not None:
        pytest.skip(f"citus tier: {reason}")
    with citus_cluster.citus_cluster(tmp_path_factory.mktemp("citus"), build) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def coordinator_url(citus: citus_cluster.CitusCluster) -> str:
    """URL of the coordinator (database `postgres`, superuser), the workers registered."""
    return citus.url()


@dataclass(frozen=True)
class DistributedDatabase:
    """A database on the cluster, migrated and distributed: `url` as the superuser, `app_url` as authenticator."""

    url: str
    app_url: str
    distribute_seconds: float


@pytest.fixture(scope="session")
def distributed(citus: citus_cluster.CitusCluster) -> Iterator[DistributedDatabase]:
    """One database for the tier, migrated and distributed once (shards cannot be cloned from a template):
    tests isolate themselves with tenants and users of their own."""
    name = "um_citus"
    url = citus.create_database(name)
    try:
        started = time.monotonic()
        with db.connect(url, autocommit=True) as conn:
            migrate.migrate(conn)
            citus.coordinator.enable_app_login(conn)
            distribute.distribute(conn)
        yield DistributedDatabase(url, citus.app_url(name), time.monotonic() - started)
    finally:
        citus.drop_database(name)
