"""The CLI as a user drives it: a real process, a real database, exit codes and output."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from usagemeter.ops import embedded, migrate


def usagemeter(
    *args: str, env: dict[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "USAGEMETER_DATABASE_URL")}
    environment["COLUMNS"] = "200"
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "usagemeter", *args],
        capture_output=True,
        text=True,
        env=environment,
        timeout=180,
        input=stdin if stdin is not None else "",
    )


def test_migrate_then_status_on_a_given_database(empty_database: str) -> None:
    pending = usagemeter("db", "status", "--database-url", empty_database)
    assert pending.returncode == 1
    assert pending.stdout.count("pending") == len(migrate.discover_migrations())

    first = usagemeter("db", "migrate", "--database-url", empty_database)
    assert first.returncode == 0, first.stderr
    assert f"Applied {len(migrate.discover_migrations())} migration(s)." in first.stdout

    again = usagemeter("db", "migrate", env={"DATABASE_URL": empty_database})
    assert again.returncode == 0, again.stderr
    assert "Database is up to date." in again.stdout

    status = usagemeter("db", "status", env={"USAGEMETER_DATABASE_URL": empty_database})
    assert status.returncode == 0
    assert status.stdout.count("applied") == len(migrate.discover_migrations())


def test_unreachable_database_is_one_clear_line_and_exit_1() -> None:
    port = embedded.free_port()
    result = usagemeter("db", "status", "--database-url", f"postgresql://postgres@127.0.0.1:{port}/nowhere")
    assert result.returncode == 1
    assert "error: cannot reach the database" in result.stderr
    assert "Traceback" not in result.stderr


def test_gen_types_prints_supabase_typescript(empty_database: str) -> None:
    assert usagemeter("db", "migrate", "--database-url", empty_database).returncode == 0
    result = usagemeter("gen-types", "--lang", "typescript", "--database-url", empty_database)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("export type Json =")  # as `supabase gen types typescript` starts
    assert "usage_events: {" in result.stdout


@pytest.mark.slow
def test_embedded_default_migrates_and_stops_then_up_and_down(tmp_path: Path) -> None:
    env = {"USAGEMETER_DATA_DIR": str(tmp_path / "data")}
    server = embedded.EmbeddedPostgres(tmp_path / "data" / "postgres")

    migrated = usagemeter("db", "migrate", env=env)
    assert migrated.returncode == 0, migrated.stderr
    assert "applied" in migrated.stdout
    assert (tmp_path / "data" / "postgres" / "PG_VERSION").exists()
    assert not server.is_running(), "a one-off command stops the embedded server it started"

    up = usagemeter("db", "up", env=env)
    assert up.returncode == 0, up.stderr
    url = up.stdout.strip()
    try:
        assert server.is_running()
        with psycopg.connect(url) as conn:
            row = conn.execute("select count(*) from supabase_migrations.schema_migrations").fetchone()
        assert row == (len(migrate.discover_migrations()),)
        status = usagemeter("db", "status", env=env)
        assert status.returncode == 0
        assert server.is_running(), "a command that reused a running server leaves it running"
    finally:
        down = usagemeter("db", "down", env=env)
    assert down.returncode == 0
    assert not server.is_running()
