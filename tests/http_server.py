"""A real usagemeter API on a loopback socket for tests: uvicorn in a thread, and tokens to call it with."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import httpx
import uvicorn

from usagemeter import api
from usagemeter.api import auth

SECRET = "test-secret-at-least-thirty-two-bytes-long"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class RunningApi:
    """The base URL of a running API, and a client that signs requests as whoever the test names."""

    base_url: str
    secret: str = SECRET
    clients: list[httpx.Client] = field(default_factory=list)

    def token(self, user_id: uuid.UUID | None = None, *, role: str = "authenticated", **claims: Any) -> str:
        return auth.mint(self.secret, user_id=user_id, role=role, ttl=timedelta(minutes=10), **claims)

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        made = httpx.Client(base_url=self.base_url, headers=headers, timeout=30.0)
        self.clients.append(made)
        return made

    def as_user(self, user_id: uuid.UUID) -> httpx.Client:
        return self.client(self.token(user_id))

    def as_service(self) -> httpx.Client:
        return self.client(self.token(role="service_role"))


@contextmanager
def running_api(config: api.ServerConfig) -> Iterator[RunningApi]:
    """Serve `config` on a free loopback port until the block ends."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(api.create_app(config), host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, name="usagemeter-test-api", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test API did not start")
        time.sleep(0.02)
    running = RunningApi(base_url=f"http://127.0.0.1:{port}")
    try:
        yield running
    finally:
        for client in running.clients:
            client.close()
        server.should_exit = True
        thread.join(timeout=30)
