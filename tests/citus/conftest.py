"""The citus tier: a coordinator and two workers of the wheel's PostgreSQL 18 with Citus loaded.

Every test here is marked `citus` (main runs deselect them with -m 'not citus'; CI runs them in a
step of their own). Without the Citus build ($USAGEMETER_CITUS_DIR, or ../shared/citus beside
the clone) the tier is skipped, saying what is missing.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import citus_cluster


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
