"""A three-node Citus cluster for the citus tier: a coordinator and two workers from the wheel's PostgreSQL 18.

Citus is not part of the project. Its build for the wheel's PostgreSQL lives in
$USAGEMETER_CITUS_DIR, by default `../shared/citus` beside the clone (see its README): `lib/`
holds citus.so, `share/extension/` its control and SQL files. Each node loads it through
PostgreSQL 18's `dynamic_library_path` and `extension_control_path`, so the wheel is not touched.

Every node is an `embedded.EmbeddedPostgres` (TCP on 127.0.0.1, passwords required). The nodes
share one superuser password, which the coordinator hands to Citus in `pg_dist_authinfo` for its
connections to the workers; `db distribute` does the same for the roles requests run as.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql as pgsql

from usagemeter import db
from usagemeter.ops import embedded

CITUS_DIR_ENV = "USAGEMETER_CITUS_DIR"
WORKERS = 2


def citus_dir(repo_root: Path) -> Path:
    """Where the Citus build is: $USAGEMETER_CITUS_DIR, or ../shared/citus beside the clone."""
    given = os.environ.get(CITUS_DIR_ENV)
    return Path(given).resolve() if given else repo_root.parent / "shared" / "citus"


def missing(build: Path) -> str | None:
    """Why the build cannot be used, or None when it has the library and the extension files."""
    for needed in (build / "lib" / "citus.so", build / "share" / "extension" / "citus.control"):
        if not needed.is_file():
            return f"{needed} not found (set {CITUS_DIR_ENV} to a Citus build for the wheel's PostgreSQL)"
    return None


def _citus_settings(build: Path) -> dict[str, str]:
    return {
        "shared_preload_libraries": "citus",
        "dynamic_library_path": f"{build / 'lib'}:$libdir",
        "extension_control_path": f"{build / 'share'}:$system",
        # Small test nodes: Citus's default pool per worker would hold many idle connections.
        "max_connections": "200",
        # Citus runs a maintenance worker per database; tests make several databases.
        "max_worker_processes": "32",
    }


@dataclass
class CitusCluster:
    """A running coordinator and its workers; `url`/`app_url` reach the coordinator."""

    coordinator: embedded.EmbeddedPostgres
    workers: list[embedded.EmbeddedPostgres]
    start_seconds: float = field(default=0.0)

    @property
    def nodes(self) -> list[embedded.EmbeddedPostgres]:
        return [self.coordinator, *self.workers]

    def url(self, database: str = "postgres") -> str:
        return self.coordinator.url(database)

    def app_url(self, database: str = "postgres") -> str:
        return self.coordinator.app_url(database)

    def create_database(self, name: str) -> str:
        """A new database on every node with the extension, the workers registered; returns the coordinator URL."""
        for node in self.nodes:
            with db.connect(node.url(), autocommit=True) as conn:
                conn.execute(pgsql.SQL("create database {}").format(pgsql.Identifier(name)))
        for node in self.workers:
            with db.connect(node.url(name), autocommit=True) as conn:
                conn.execute("create extension citus")
        with db.connect(self.url(name), autocommit=True) as conn:
            _register_workers(conn, self)
        return self.url(name)

    def drop_database(self, name: str) -> None:
        for node in self.nodes:
            with db.connect(node.url(), autocommit=True) as conn:
                conn.execute(pgsql.SQL("drop database if exists {} with (force)").format(pgsql.Identifier(name)))


def _register_workers(conn: psycopg.Connection[Any], cluster: CitusCluster) -> None:
    """On the coordinator's database: the extension, the superuser's password for node connections, the nodes."""
    conn.execute("create extension if not exists citus")
    password = _superuser_password(cluster.coordinator)
    database = conn.execute("select current_database()").fetchone()
    assert database is not None
    # Every node, not only the coordinator: a worker opens connections of its own to the other nodes
    # (a trigger on a reference table's placement locks the table on every node).
    _store_superuser_login(conn, password)
    for worker in cluster.workers:
        with db.connect(worker.url(database[0]), autocommit=True) as on_worker:
            _store_superuser_login(on_worker, password)
    conn.execute("select citus_set_coordinator_host('127.0.0.1', %s)", [cluster.coordinator.port])
    for worker in cluster.workers:
        conn.execute("select citus_add_node('127.0.0.1', %s)", [worker.port])


def _store_superuser_login(conn: psycopg.Connection[Any], password: str) -> None:
    conn.execute(
        "insert into pg_dist_authinfo (nodeid, rolename, authinfo) values (0, 'postgres', %s)"
        " on conflict (nodeid, rolename) do update set authinfo = excluded.authinfo",
        [f"password={password}"],
    )


def _superuser_password(node: embedded.EmbeddedPostgres) -> str:
    return (node.data_dir / embedded.SUPERUSER_PASSWORD_FILE).read_text().strip()


def _start_node(data_dir: Path, settings: dict[str, str], password: str | None) -> embedded.EmbeddedPostgres:
    """Start a node, set Citus's settings and (for a worker) the shared superuser password, restart it."""
    node = embedded.EmbeddedPostgres(data_dir)
    node.start()
    with db.connect(node.url(), autocommit=True) as conn:
        for name, value in settings.items():
            conn.execute(pgsql.SQL("alter system set {} = {}").format(pgsql.Identifier(name), pgsql.Literal(value)))
        if password is not None:
            conn.execute(pgsql.SQL("alter role postgres with password {}").format(pgsql.Literal(password)))
    if password is not None:
        # The file keeps its owner and 0600 mode; the node's URLs now carry the shared password.
        (data_dir / embedded.SUPERUSER_PASSWORD_FILE).write_text(password + "\n")
    node.stop()
    node.start()
    return node


@contextmanager
def citus_cluster(base_dir: Path, build: Path, *, workers: int = WORKERS) -> Iterator[CitusCluster]:
    """Start a coordinator and `workers` workers in `base_dir`, Citus loaded from `build`; stop and delete after."""
    started = time.monotonic()
    settings = _citus_settings(build)
    coordinator = _start_node(base_dir / "coordinator", settings, None)
    password = _superuser_password(coordinator)
    nodes: list[embedded.EmbeddedPostgres] = [coordinator]
    try:
        with futures.ThreadPoolExecutor(max_workers=workers) as pool:
            running = [pool.submit(_start_node, base_dir / f"worker{n}", settings, password) for n in range(workers)]
            started_workers = [each.result() for each in running]
        nodes.extend(started_workers)
        cluster = CitusCluster(coordinator, started_workers)
        for worker in started_workers:
            with db.connect(worker.url(), autocommit=True) as conn:
                conn.execute("create extension citus")
        with db.connect(cluster.url(), autocommit=True) as conn:
            _register_workers(conn, cluster)
        cluster.start_seconds = time.monotonic() - started
        yield cluster
    finally:
        for node in nodes:
            node.stop(mode="immediate")
        shutil.rmtree(base_dir, ignore_errors=True)
