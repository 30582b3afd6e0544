"""On a database built from Supabase's own SQL: postgres (not superuser) migrates, the auth service deletes a user.

Uses the shared fixture ../shared/supabase-platform (not part of the repository); skipped without it
or without Debian's PostgreSQL 15.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests import factories
from tests.servers import DEBIAN_POSTGRESQL_15
from usagemeter import db
from usagemeter.ops import embedded, migrate
from usagemeter.reporting import rollup_check

REPO = Path(__file__).resolve().parents[2]
PLATFORM = next(
    (p for p in (REPO.parent / "shared", REPO.parent.parent / "shared") if (p / "supabase-platform/build.sh").exists()),
    None,
)

pytestmark = pytest.mark.skipif(
    PLATFORM is None or not (DEBIAN_POSTGRESQL_15 / "initdb").exists() or shutil.which("psql") is None,
    reason="needs ../shared/supabase-platform, Debian's PostgreSQL 15 and psql",
)


def _run(command: list[str], *, os_user: str | None) -> None:
    result = subprocess.run(command, user=os_user, cwd="/", capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, f"{command[0]} failed: {result.stdout[-2000:]}{result.stderr[-2000:]}"


@pytest.fixture(scope="module")
def supabase_url() -> Iterator[str]:
    """A throwaway PostgreSQL 15 cluster holding a database built the way a Supabase project's is."""
    assert PLATFORM is not None
    os_user = "postgres" if os.geteuid() == 0 else None  # PostgreSQL refuses to run as root
    home = Path(tempfile.mkdtemp(prefix="um_supabase_"))
    if os_user is not None:
        entry = pwd.getpwnam(os_user)
        os.chown(home, entry.pw_uid, entry.pw_gid)
    data, port = home / "data", embedded.free_port()
    pg_ctl = str(DEBIAN_POSTGRESQL_15 / "pg_ctl")
    try:
        initdb = [str(DEBIAN_POSTGRESQL_15 / "initdb"), "-D", str(data), "-U", "supabase_admin", "--auth=trust"]
        _run([*initdb, "-E", "UTF8"], os_user=os_user)
        options = f"-p {port} -h 127.0.0.1 -c unix_socket_directories='' -c wal_level=logical"
        _run([pg_ctl, "-D", str(data), "-w", "-l", str(home / "log"), "-o", options, "start"], os_user=os_user)
        _run(["bash", str(PLATFORM / "supabase-platform/build.sh"), "127.0.0.1", str(port), "sb"], os_user=None)
        yield f"postgresql://postgres@127.0.0.1:{port}/sb"
    finally:
        subprocess.run([pg_ctl, "-D", str(data), "-w", "-m", "fast", "stop"], user=os_user, cwd="/", check=False)
        shutil.rmtree(home, ignore_errors=True)


def test_the_auth_service_deletes_a_user_with_tenant_and_personal_usage(supabase_url: str) -> None:
    with db.connect(supabase_url, autocommit=True) as conn:
        assert conn.execute("select rolsuper from pg_roles where rolname = current_user").fetchone() == (False,)
        migrate.migrate(conn)
        tenant, alice, bob = factories.add_tenant(conn), factories.add_user(conn), factories.add_user(conn)
        factories.add_member(conn, tenant, alice)
        for user in (alice, bob):
            factories.add_event(conn, tenant_id=tenant, user_id=user, tokens_input=10)
            factories.add_event(conn, tenant_id=None, user_id=user, tokens_input=3)
        assert rollup_check.fold(conn) == 4  # the rollups hold the events, not only the deltas
        tenant_total = conn.execute("select sum(tokens_total) from public.usage_rollup_tenant_daily").fetchone()

    auth_service = supabase_url.replace("postgres@", "supabase_auth_admin@", 1)
    with db.connect(auth_service, autocommit=True) as conn:
        assert conn.execute("delete from auth.users where id = %s", (alice,)).rowcount == 1

    with db.connect(supabase_url, autocommit=True) as conn:
        events: list[tuple[Any, ...]] = conn.execute(
            "select tenant_id, user_id from public.usage_events order by tenant_id nulls first, user_id nulls first"
        ).fetchall()
        assert events == [(None, bob), (tenant, None), (tenant, bob)]
        assert conn.execute("select sum(tokens_total) from public.usage_rollup_tenant_daily").fetchone() == tenant_total
        assert_no_rollup_row_of(conn, alice)
        assert rollup_check.differences(conn) == 0


def assert_no_rollup_row_of(conn: psycopg.Connection[Any], user: uuid.UUID) -> None:
    row = conn.execute(
        "select (select count(*) from public.usage_rollup_hourly where user_id = %(u)s)"
        " + (select count(*) from public.usage_rollup_daily where user_id = %(u)s)"
        " + (select count(*) from public.usage_rollup_deltas where user_id = %(u)s)",
        {"u": user},
    ).fetchone()
    assert row == (0,)
