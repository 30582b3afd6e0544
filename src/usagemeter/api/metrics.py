"""Prometheus metrics of one server: requests and latency by route, events, refusals, spool and pools.

Each app has its own registry (never the process-global one), so two apps in one process, as in
tests, count apart.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.exposition import generate_latest
from psycopg_pool import ConnectionPool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """The server's instruments, in a registry of their own."""

    def __init__(self) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]  # *_created series only double the output
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "usagemeter_http_requests", "HTTP requests answered", ["method", "route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "usagemeter_http_request_duration_seconds",
            "Time to answer an HTTP request",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.events_recorded = Counter(
            "usagemeter_events_recorded", "Events stored by this server", registry=self.registry
        )
        self.duplicates = Counter(
            "usagemeter_event_duplicates",
            "Events answered as already stored (idempotent retries)",
            registry=self.registry,
        )
        self.refusals = Counter(
            "usagemeter_write_refusals", "Writes refused, by problem type", ["kind"], registry=self.registry
        )
        self.spooled = Counter(
            "usagemeter_events_spooled",
            "Events accepted into the spool while the database was down",
            registry=self.registry,
        )
        self.spool_depth = Gauge(
            "usagemeter_spool_depth", "Events buffered or spooled, not yet written", registry=self.registry
        )
        self.pool_connections = Gauge(
            "usagemeter_pool_connections",
            "Connections of each pool, by state",
            ["pool", "state"],
            registry=self.registry,
        )
        self.pool_waiting = Gauge(
            "usagemeter_pool_requests_waiting", "Requests waiting for a connection", ["pool"], registry=self.registry
        )

    def observe_pools(self, pools: dict[str, ConnectionPool[Any]], spool_depth: Callable[[], int]) -> None:
        """Take the pools' and the spool's current state, just before an exposition."""
        for name, pool in pools.items():
            stats = pool.get_stats()
            size, available = stats.get("pool_size", 0), stats.get("pool_available", 0)
            self.pool_connections.labels(name, "in_use").set(size - available)
            self.pool_connections.labels(name, "idle").set(available)
            self.pool_connections.labels(name, "max").set(pool.max_size)
            self.pool_waiting.labels(name).set(stats.get("requests_waiting", 0))
        self.spool_depth.set(spool_depth())

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class RequestMetrics:
    """ASGI middleware counting each HTTP request by its route template (never the raw path: ids would explode it)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        counted = False

        def count() -> None:
            nonlocal counted
            counted = True
            template = getattr(scope.get("route"), "path", None) or "unmatched"
            method = scope.get("method", "")
            self.metrics.requests.labels(method, template, str(status)).inc()
            self.metrics.latency.labels(method, template).observe(time.perf_counter() - started)

        async def send_counting(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                count()  # before the last bytes leave: a client's next request already sees this one counted
            await send(message)

        try:
            await self.app(scope, receive, send_counting)
        finally:
            if not counted:  # no complete answer went out (the client left, or the app failed)
                count()
