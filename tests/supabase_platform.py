"""A real Supabase database for the platform tier, built from Supabase's own SQL on a throwaway PostgreSQL 15.

The SQL and its build script live outside the repository (`../shared/supabase-platform` beside the
clone, or $USAGEMETER_SUPABASE_PLATFORM_DIR). The tier runs when $USAGEMETER_TEST_PLATFORM is
`supabase`; CI (CI=true) fails when the SQL is missing, a local run skips with the reason.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from psycopg import sql as pgsql

from tests.servers import DEBIAN_POSTGRESQL_15
from usagemeter import db
from usagemeter.ops import embedded

PLATFORM_MODE_ENV = "USAGEMETER_TEST_PLATFORM"
PLATFORM_DIR_ENV = "USAGEMETER_SUPABASE_PLATFORM_DIR"
# The database build.sh creates and our template migrates, and an unmigrated copy of it.
BUILT_DATABASE = "um_supabase"
PRISTINE_DATABASE = "um_supabase_pristine"
# The role the platform tier's `owner` connection arranges rows as (authenticator switches to it).
ARRANGING_ROLE = "supabase_admin"
# PostgreSQL refuses to run as root; the Debian package's OS user runs the throwaway cluster.
SERVER_OS_USER = "postgres"
BUILD_TIMEOUT_S = 180


def platform_mode() -> bool:
    """Whether this run is the Supabase platform tier."""
    return os.environ.get(PLATFORM_MODE_ENV, "") == "supabase"


def platform_sql_dir(repo_root: Path) -> Path:
    """Where Supabase's SQL and build.sh are: $USAGEMETER_SUPABASE_PLATFORM_DIR or ../shared beside the clone."""
    given = os.environ.get(PLATFORM_DIR_ENV)
    return Path(given) if given else repo_root.parent / "shared" / "supabase-platform"


def unavailable(reason: str) -> None:
    """Fail in CI, where the tier must run; skip locally, saying why."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"Supabase platform tier cannot run in CI: {reason}", pytrace=False)
    pytest.skip(f"Supabase platform tier: {reason}")


@dataclass(frozen=True)
class SupabaseCluster:
    """A throwaway PostgreSQL 15 cluster holding a database built the way a fresh Supabase project's is."""

    port: int

    def url(self, database: str, *, user: str = "postgres") -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{database}"


def _run(command: list[str], *, os_user: str | None, what: str) -> None:
    """Run a tool with output to a file (the postmaster inherits pipes); fail naming it and its output."""
    with tempfile.TemporaryFile("w+") as output:
        result = subprocess.run(
            command,
            user=os_user,
            cwd="/",
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=output,
            text=True,
            timeout=BUILD_TIMEOUT_S,
            check=False,
        )
        output.seek(0)
        said = output.read()
    if result.returncode != 0:
        raise RuntimeError(f"{what} failed (exit {result.returncode}):\n{said[-4000:]}")


@contextmanager
def supabase_cluster(sql_dir: Path) -> Iterator[SupabaseCluster]:
    """Start an empty PostgreSQL 15 cluster (bootstrap superuser supabase_admin, wal_level=logical), run
    build.sh, keep an unmigrated copy; stop and delete it all afterwards."""
    build = sql_dir / "build.sh"
    if not build.is_file():
        unavailable(f"{build} not found (set {PLATFORM_DIR_ENV}, or put shared/ beside the clone)")
    if not (DEBIAN_POSTGRESQL_15 / "initdb").exists():
        unavailable(f"PostgreSQL 15 binaries not found in {DEBIAN_POSTGRESQL_15}")
    os_user = SERVER_OS_USER if os.geteuid() == 0 else None
    base = Path(tempfile.mkdtemp(prefix="um_supabase_"))
    data_dir = base / "data"
    if os_user is not None:
        entry = pwd.getpwnam(os_user)
        os.chown(base, entry.pw_uid, entry.pw_gid)
    port = embedded.free_port()
    pg_ctl = [str(DEBIAN_POSTGRESQL_15 / "pg_ctl"), "-D", str(data_dir), "-w", "-t", "60"]
    try:
        _run(
            [
                str(DEBIAN_POSTGRESQL_15 / "initdb"),
                *("-D", str(data_dir), "-U", "supabase_admin", "--auth=trust"),
                *("--encoding=UTF8", "--locale=C", "--no-instructions"),
            ],
            os_user=os_user,
            what="initdb",
        )
        options = f"-p {port} -h 127.0.0.1 -c unix_socket_directories='' -c wal_level=logical"
        _run([*pg_ctl, "-l", str(base / "server.log"), "-o", options, "start"], os_user=os_user, what="pg_ctl start")
        _run([str(build), "127.0.0.1", str(port), BUILT_DATABASE], os_user=None, what="build.sh")
        cluster = SupabaseCluster(port)
        with db.connect(cluster.url("postgres", user="supabase_admin"), autocommit=True) as admin:
            admin.execute(
                pgsql.SQL("create database {} template {} owner postgres").format(
                    pgsql.Identifier(PRISTINE_DATABASE), pgsql.Identifier(BUILT_DATABASE)
                )
            )
            # The one addition to Supabase's roles (the image's first init script had it too): the RLS
            # tests arrange rows on the same connection whose requests switch role, so authenticator may
            # also SET ROLE supabase_admin for arranging (postgres cannot be granted: it is itself a
            # member of authenticator). NOINHERIT: without switching it has no privileges, as on Supabase.
            admin.execute("grant supabase_admin to authenticator")
        yield cluster
    finally:
        if (data_dir / "postmaster.pid").exists():
            _run([*pg_ctl, "-m", "immediate", "stop"], os_user=os_user, what="pg_ctl stop")
        shutil.rmtree(base, ignore_errors=True)
