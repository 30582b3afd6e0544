"""A real usagemeter API on a loopback socket for tests: uvicorn in a thread, and tokens to call it with."""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import jwt
import uvicorn
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from usagemeter import api
from usagemeter.api import auth

SECRET = "test-secret-at-least-thirty-two-bytes-long"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Jwks:
    """A JWKS endpoint on loopback whose key set a test can change, counting fetches."""

    def __init__(self) -> None:
        self.keys: list[dict[str, Any]] = []
        self.fetches = 0
        jwks = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                jwks.fetches += 1
                body = json.dumps({"keys": jwks.keys}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/auth/v1/.well-known/jwks.json"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def add(self, public_key: Any, kid: str, alg: str) -> None:
        algorithm = RSAAlgorithm if alg == "RS256" else ECAlgorithm
        self.keys.append({**algorithm.to_jwk(public_key, as_dict=True), "kid": kid, "alg": alg, "use": "sig"})


@dataclass
class RunningApi:
    """The base URL of a running API, and a client that signs requests as whoever the test names."""

    base_url: str
    secret: str = SECRET
    clients: list[httpx.Client] = field(default_factory=list)
    signing_key: Any = None  # with `kid`: tokens are signed with this private key instead of the secret
    algorithm: str = "HS256"
    kid: str | None = None

    def token(self, user_id: uuid.UUID | None = None, *, role: str = "authenticated", **claims: Any) -> str:
        minted = auth.mint(self.secret, user_id=user_id, role=role, ttl=timedelta(minutes=10), **claims)
        if self.signing_key is None:
            return minted
        payload = jwt.decode(minted, self.secret, algorithms=["HS256"], options={"verify_aud": False})
        return jwt.encode(payload, self.signing_key, algorithm=self.algorithm, headers={"kid": self.kid})

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
