"""Running the API: health, readiness, metrics, OpenAPI; and what clients see when the database goes away."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests import factories, http_server
from tests.http_server import RunningApi
from tests.servers import migrated_own_server, server_binaries
from usagemeter import api, db
from usagemeter.api import auth
from usagemeter.ops import embedded

ACTION = "chat:message:reply"


def test_health_readiness_and_the_openapi_document(api_server: RunningApi) -> None:
    client = api_server.client()
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"
    spec = client.get("/openapi.json").json()
    for path in ("/v1/events", "/v1/usage", "/v1/export", "/v1/quotas", "/v1/statements/{tenant}/{month}"):
        assert path in spec["paths"]
    assert "text/html" in client.get("/docs").headers["content-type"]


def test_metrics_count_requests_by_route_events_and_refusals(
    api_server: RunningApi, owner: psycopg.Connection[Any]
) -> None:
    user = factories.add_user(owner)
    client = api_server.as_user(user)
    for n in range(3):
        assert client.post(
            "/v1/events", json={"action": ACTION}, headers={"Idempotency-Key": f"m{n % 2}"}
        ).status_code in (200, 201)
    assert client.post("/v1/events", json={"action": ACTION, "tenant_id": str(uuid.uuid4())}).status_code == 403
    text = client.get("/metrics").text
    assert 'usagemeter_http_requests_total{method="POST",route="/v1/events",status="201"} 2.0' in text
    assert 'usagemeter_http_requests_total{method="POST",route="/v1/events",status="200"} 1.0' in text
    assert "usagemeter_events_recorded_total 2.0" in text
    assert "usagemeter_event_duplicates_total 1.0" in text
    assert 'usagemeter_write_refusals_total{kind="write-refused"} 1.0' in text
    assert 'usagemeter_http_request_duration_seconds_bucket{le="+Inf",method="POST",route="/v1/events"} 4.0' in text
    assert 'usagemeter_pool_connections{pool="writes",state="max"} 4.0' in text
    assert "usagemeter_spool_depth 0.0" in text
    client.get(f"/v1/statements/{uuid.uuid4()}/2026-06")
    assert 'route="/v1/statements/{tenant}/{month}"' in client.get("/metrics").text  # templates, never raw ids


@pytest.fixture(params=server_binaries()[-1:])
def own_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[embedded.EmbeddedPostgres]:
    """A cluster of our own, to stop and start without disturbing other tests."""
    with migrated_own_server(tmp_path / "pgdata", request.param) as server:
        yield server


def config_for(server: embedded.EmbeddedPostgres, spool_dir: Path | None = None) -> api.ServerConfig:
    return api.ServerConfig(
        app_database_url=server.app_url(),
        verifier=auth.TokenVerifier(secret=http_server.SECRET, jwks_url=None),
        spool_dir=spool_dir,
    )


CLIENT_TIMEOUT_S = 30.0


def test_a_restart_while_posting_stores_every_201_exactly_once_and_nothing_hangs(
    own_server: embedded.EmbeddedPostgres,
) -> None:
    with db.connect(own_server.url(), autocommit=True) as conn:
        user = factories.add_user(conn)
    with http_server.running_api(config_for(own_server)) as running:
        client = httpx.Client(
            base_url=running.base_url,
            timeout=CLIENT_TIMEOUT_S,
            headers={"Authorization": f"Bearer {running.token(user)}"},
        )
        created: dict[str, str] = {}
        failures: list[int | str] = []
        slowest = 0.0
        restarted = threading.Event()

        def restart_in_the_middle() -> None:
            while len(created) < 100:
                time.sleep(0.01)
            own_server.stop(mode="fast")
            time.sleep(2.0)
            own_server.start()
            restarted.set()

        restarter = threading.Thread(target=restart_in_the_middle)
        restarter.start()
        n = 0
        deadline = time.monotonic() + 120
        while (not restarted.is_set() or len(created) < 400) and time.monotonic() < deadline:
            key = f"loop-{n}"
            started = time.monotonic()
            try:
                answer = client.post(
                    "/v1/events", json={"action": ACTION, "tokens_input": n}, headers={"Idempotency-Key": key}
                )
            except httpx.HTTPError as failure:
                failures.append(type(failure).__name__)
            else:
                if answer.status_code in (200, 201):
                    created[key] = answer.json()["id"]
                    n += 1
                else:
                    failures.append(answer.status_code)  # retried with the same key on the next turn
            slowest = max(slowest, time.monotonic() - started)
        restarter.join(timeout=60)
        client.close()
    assert restarted.is_set()
    assert slowest < CLIENT_TIMEOUT_S
    assert all(code in (503, "ReadError", "RemoteProtocolError", "ConnectError") for code in failures), failures
    with db.connect(own_server.url()) as conn:
        rows = conn.execute("select id::text, idempotency_key from public.usage_events").fetchall()
    stored = dict((key, event_id) for event_id, key in rows)
    assert len(rows) == len(stored), "an event was stored twice"
    assert stored == created


def test_with_the_database_down_reads_say_so_and_writes_answer_503_or_spool(
    own_server: embedded.EmbeddedPostgres, tmp_path: Path
) -> None:
    with db.connect(own_server.url(), autocommit=True) as conn:
        user = factories.add_user(conn)
    with (
        http_server.running_api(config_for(own_server)) as plain,
        http_server.running_api(config_for(own_server, tmp_path / "spool")) as spooling,
    ):
        own_server.stop(mode="fast")
        try:
            ready = plain.client().get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["status"] == "unavailable"
            started = time.monotonic()
            refused = plain.as_user(user).post("/v1/events", json={"action": ACTION})
            assert refused.status_code == 503
            assert refused.headers["content-type"] == "application/problem+json"
            assert "retry-after" in refused.headers
            assert time.monotonic() - started < CLIENT_TIMEOUT_S
            usage = plain.as_user(user).get("/v1/usage", params={"all": "true"})
            assert usage.status_code == 503
            accepted = spooling.as_user(user).post("/v1/events", json={"action": ACTION, "tokens_input": 77})
            assert accepted.status_code == 202, accepted.text
            assert accepted.json() == {"spooled": 1, "status": "spooled"}
        finally:
            own_server.start()
        deadline = time.monotonic() + 60
        found: Any = None
        while time.monotonic() < deadline:
            with db.connect(own_server.url()) as conn:
                found = conn.execute("select tokens_input from public.usage_events").fetchall()
            if found:
                break
            time.sleep(0.5)
        assert found == [(77,)]
        # Ready again once the read pool has reconnected, within its reconnection backoff (it grew
        # while the database was down): a readiness probe polls, and so does this test.
        deadline = time.monotonic() + 60
        while plain.client().get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, "/readyz never recovered after the database came back"
            time.sleep(0.5)
        assert plain.as_user(user).get("/v1/usage", params={"all": "true"}).status_code == 200
