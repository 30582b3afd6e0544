"""The CLI as a user drives it: a real process, a real database, exit codes and output."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from psycopg import conninfo

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
        with psycopg.connect(server.app_url()) as conn:
            assert conn.execute("select current_user").fetchone() == ("authenticator",)
        _assert_password_logins_only(url, server)
        status = usagemeter("db", "status", env=env)
        assert status.returncode == 0
        assert server.is_running(), "a command that reused a running server leaves it running"
    finally:
        down = usagemeter("db", "down", env=env)
    assert down.returncode == 0
    assert not server.is_running()


def _assert_password_logins_only(url: str, server: embedded.EmbeddedPostgres) -> None:
    """The server `db up` leaves running takes no login without its password, and the passwords are private."""
    params = conninfo.conninfo_to_dict(url)
    assert params.get("password"), "the printed URL carries the password"
    without_password = conninfo.make_conninfo(
        "", **{k: v for k, v in params.items() if k != "password"}, passfile=os.devnull
    )
    for user in ("postgres", "authenticator", "anon"):
        with pytest.raises(psycopg.OperationalError, match="no password supplied"):
            psycopg.connect(conninfo.make_conninfo(without_password, user=user))
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(conninfo.make_conninfo(url, password="not-the-password"))
    for name in (embedded.SUPERUSER_PASSWORD_FILE, embedded.APP_PASSWORD_FILE):
        mode = (server.data_dir / name).stat().st_mode
        assert stat.S_IMODE(mode) == 0o600, f"{name} is {oct(stat.S_IMODE(mode))}"
    assert not list(server.data_dir.parent.glob("*.password")), "no password left outside the data directory"


@pytest.mark.slow
def test_sigterm_stops_a_command_and_the_embedded_server_it_started(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "USAGEMETER_DATABASE_URL")}
    env["USAGEMETER_DATA_DIR"] = str(tmp_path / "data")
    server = embedded.EmbeddedPostgres(tmp_path / "data" / "postgres")
    command = subprocess.Popen(
        [sys.executable, "-m", "usagemeter", "record", "--file", "-"],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert command.stderr is not None
        started = command.stderr.readline()  # printed once the server is up and migrated, before reading stdin
        assert "embedded PostgreSQL in" in started, started
        assert server.is_running()
        command.send_signal(signal.SIGTERM)
        assert command.wait(timeout=60) == 128 + signal.SIGTERM
        assert not server.is_running(), "the command's embedded server outlived it"
    finally:
        if command.poll() is None:
            command.kill()
        server.stop(mode="immediate")
