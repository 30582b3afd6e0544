"""The embedded server's doors: password logins only, private password files, and the CLI's signal handling."""

from __future__ import annotations

import os
import signal
import stat
from pathlib import Path
from types import FrameType

import psycopg
import pytest
from psycopg import conninfo

from usagemeter import db
from usagemeter.cli import common
from usagemeter.ops import embedded


def _without_password(url: str) -> str:
    params = {k: v for k, v in conninfo.conninfo_to_dict(url).items() if k != "password"}
    return conninfo.make_conninfo("", **params, passfile=os.devnull)


def test_a_cluster_made_with_trust_logins_gets_a_password_on_start(tmp_path: Path) -> None:
    """Clusters initialised by earlier usagemeter versions (initdb --auth=trust) are closed on their next start."""
    server = embedded.EmbeddedPostgres(tmp_path / "pgdata")
    server.data_dir.mkdir(mode=0o700)
    os_user = embedded.SERVER_OS_USER if os.geteuid() == 0 else None
    if os_user:
        embedded._prepare_for_unprivileged_server(server.data_dir, server.bin_dir)
    server._run("initdb", ["-D", str(server.data_dir), "-U", "postgres", "--auth=trust", "--no-instructions"], os_user)
    with server:
        with db.connect(server.url()) as conn:
            assert conn.execute("select current_user").fetchone() == ("postgres",)
        with pytest.raises(psycopg.OperationalError, match="no password supplied"):
            psycopg.connect(_without_password(server.url()))
        mode = stat.S_IMODE((server.data_dir / embedded.SUPERUSER_PASSWORD_FILE).stat().st_mode)
        assert mode == 0o600


def _sentinel(signum: int, frame: FrameType | None) -> None:
    """A handler the host program installed before using usagemeter."""


def test_sigterm_handling_is_the_cli_commands_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DATABASE_URL", "USAGEMETER_DATABASE_URL", "USAGEMETER_APP_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("USAGEMETER_DATA_DIR", str(tmp_path / "data"))
    previous = signal.signal(signal.SIGTERM, _sentinel)
    try:
        with common.database(None) as url:  # library use: the embedded server, the host's handler untouched
            assert signal.getsignal(signal.SIGTERM) is _sentinel
            with db.connect(url) as conn:
                conn.execute("select 1")
        assert signal.getsignal(signal.SIGTERM) is _sentinel

        token = common.command_line.set(True)  # what the `usagemeter` command line sets before a command
        try:
            with common.app_database(None) as app_url:
                assert signal.getsignal(signal.SIGTERM) not in (_sentinel, signal.SIG_DFL)
                with db.connect_app(app_url) as conn:
                    assert conn.execute("select current_user").fetchone() == ("authenticator",)
        finally:
            common.command_line.reset(token)
        assert signal.getsignal(signal.SIGTERM) is _sentinel, "the command's handler outlived the command"
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
