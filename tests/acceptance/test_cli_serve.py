"""`usagemeter serve` and `usagemeter token`, as a user runs them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import jwt
import psycopg

from tests import factories
from tests.acceptance.test_cli_database import usagemeter
from tests.http_server import free_port

SECRET = "cli-secret-cli-secret-cli-secret-cli"


def test_token_mints_what_the_server_accepts() -> None:
    user = "7d8a4f2e-7b1c-4a8e-9f3e-2b6d5c4a1e0f"
    made = usagemeter("token", "--user", user, "--ttl", "30m", "--jwt-secret", SECRET)
    assert made.returncode == 0, made.stderr
    claims = jwt.decode(made.stdout.strip(), SECRET, algorithms=["HS256"], audience="authenticated")
    assert (claims["sub"], claims["role"]) == (user, "authenticated")
    assert 29 * 60 <= claims["exp"] - claims["iat"] <= 30 * 60
    service = usagemeter("token", "--role", "service_role", env={"USAGEMETER_JWT_SECRET": SECRET})
    assert jwt.decode(service.stdout.strip(), SECRET, algorithms=["HS256"])["role"] == "service_role"


def test_token_refuses_bad_input() -> None:
    assert "--ttl" in usagemeter("token", "--user", "7d8a4f2e-7b1c-4a8e-9f3e-2b6d5c4a1e0f", "--ttl", "soon",
                                 "--jwt-secret", SECRET).stderr  # fmt: skip
    assert usagemeter("token", "--jwt-secret", SECRET).returncode == 2  # a user token needs --user
    no_secret = usagemeter("token", "--role", "service_role")
    assert no_secret.returncode == 2
    assert "USAGEMETER_JWT_SECRET" in no_secret.stderr
    assert usagemeter("token", "--role", "postgres", "--jwt-secret", SECRET).returncode == 2


@contextmanager
def serving(*args: str, env: dict[str, str] | None = None) -> Iterator[tuple[subprocess.Popen[str], str]]:
    port = free_port()
    environment = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "USAGEMETER_DATABASE_URL")}
    process = subprocess.Popen(
        [sys.executable, "-m", "usagemeter", "serve", "--port", str(port), *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**environment, **(env or {})},
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        yield process, base
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)


def wait_ready(process: subprocess.Popen[str], base: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stdout.read() if process.stdout else ""
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError("usagemeter serve did not become ready")


def test_serve_answers_signed_requests_and_stops_on_sigterm(database_url: str, owner: psycopg.Connection[Any]) -> None:
    user = factories.add_user(owner)
    with serving("--database-url", database_url, env={"USAGEMETER_JWT_SECRET": SECRET}) as (process, base):
        wait_ready(process, base)
        token = usagemeter("token", "--user", str(user), "--jwt-secret", SECRET).stdout.strip()
        posted = httpx.post(f"{base}/v1/events", json={"action": "chat:message:reply", "tokens_input": 3},
                            headers={"Authorization": f"Bearer {token}"})  # fmt: skip
        assert posted.status_code == 201, posted.text
        assert httpx.get(f"{base}/v1/usage", params={"all": "true"}).status_code == 401
        process.send_signal(signal.SIGTERM)  # uvicorn shuts down gracefully, then re-raises the signal
        assert process.wait(timeout=30) in (0, -signal.SIGTERM, 128 + signal.SIGTERM)
        output = process.stdout.read() if process.stdout else ""
    assert f"{base}/" in output
    assert factories.count_events(owner) == 1


def test_serve_refuses_an_unmigrated_database_and_a_missing_secret(empty_database: str, database_url: str) -> None:
    with serving("--database-url", empty_database, env={"USAGEMETER_JWT_SECRET": SECRET}) as (process, _):
        assert process.wait(timeout=60) == 1
        assert "usagemeter db migrate" in (process.stdout.read() if process.stdout else "")
    with serving("--database-url", database_url) as (process, _):
        assert process.wait(timeout=60) == 1
        assert "USAGEMETER_JWT_SECRET" in (process.stdout.read() if process.stdout else "")


def test_serve_demo_prints_a_signed_in_url_with_the_demo_usage(database_url: str) -> None:
    with serving("--database-url", database_url, "--demo") as (process, base):
        wait_ready(process, base)
        assert process.stdout is not None
        printed = ""
        while "#token=" not in printed:
            printed += process.stdout.readline()
        token = printed.split("#token=")[1].split()[0]
        assert printed.count(f"{base}/#token=") == 1
        signed_in = {"Authorization": f"Bearer {token}"}
        tenants = httpx.get(f"{base}/v1/tenants", headers=signed_in).json()
        assert sorted(t["slug"] for t in tenants) == ["acme", "globex"]
        usage = httpx.get(f"{base}/v1/usage", params={"all": "true", "from": "2000-01-01", "to": "2100-01-01"},
                          headers=signed_in).json()  # fmt: skip
        assert usage[0]["events"] > 100
        assert httpx.get(f"{base}/", headers={}).status_code == 200
