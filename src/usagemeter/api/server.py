"""What one running API holds: its configuration, the token verifier, the write recorder, the read pool, metrics.

Writes go through the AsyncRecorder (group commit awaited on the event loop, no thread per request);
reads run the reporting functions on a pool of app-login connections in FastAPI's worker threads.
Both pools connect as `authenticator`, and every transaction takes on the caller's role and claims.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from psycopg import conninfo
from psycopg_pool import ConnectionPool

from usagemeter import db
from usagemeter.api import auth
from usagemeter.api.metrics import Metrics
from usagemeter.db import retry
from usagemeter.recording.recorder import AsyncRecorder, EnqueueOptions

# Writes ride out a restart of a few seconds, and answer 503 well before a client's usual timeout.
WRITE_RETRY = retry.RetryPolicy(attempts=6, first_delay_s=0.05, max_delay_s=1.0, connect_timeout_s=2.0)
READ_POOL_TIMEOUT_S = 5.0  # a request waits this long for a read connection, then answers 503
SESSION_STATEMENT_TIMEOUT = "30s"  # the service role's statements (no per-role timeout) stop here, reads and writes
MiB = 1024 * 1024


@dataclass(frozen=True)
class ServerConfig:
    """How to run the API.

    Parameters
    ----------
    app_database_url:
        The app login (`authenticator`) URL: both pools connect with it.
    verifier:
        Checks bearer tokens.
    body_limit:
        Largest request body accepted, in bytes (413 beyond).
    spool_dir:
        When set, writes the database cannot take in time go to this spool (202) instead of 503.
    read_pool_size, write_pool_size:
        Connections for reads and for the recorder.
    migrations:
        How many migrations the database had applied when the server started (shown by /readyz).
    demo_user_token:
        Token the dashboard signs in with under --demo (never set otherwise).
    """

    app_database_url: str
    verifier: auth.TokenVerifier
    body_limit: int = MiB
    spool_dir: Path | None = None
    read_pool_size: int = 8
    write_pool_size: int = 4
    migrations: int = 0
    demo_user_token: str | None = None


@dataclass
class Server:
    """The live resources of one app, opened by the lifespan and closed with it."""

    config: ServerConfig
    recorder: AsyncRecorder
    read_pool: ConnectionPool[Any]
    metrics: Metrics

    @classmethod
    def open(cls, config: ServerConfig, measured: Metrics) -> Server:
        enqueue = EnqueueOptions(spool_dir=config.spool_dir) if config.spool_dir else None
        url = conninfo.make_conninfo(
            config.app_database_url, options=f"-c statement_timeout={SESSION_STATEMENT_TIMEOUT}"
        )
        recorder = AsyncRecorder(
            url,
            pool_size=config.write_pool_size,
            retry_policy=WRITE_RETRY,
            enqueue_options=enqueue,
        )
        read_pool = db.app_pool(
            url,
            max_size=config.read_pool_size,
            timeout=READ_POOL_TIMEOUT_S,
            name="usagemeter-reads",
            check=True,  # reads are not retried: a connection a restart left dead is replaced, not failed
        )
        return cls(config=config, recorder=recorder, read_pool=read_pool, metrics=measured)

    def spool_depth(self) -> int:
        counters = self.recorder.counters
        return max(0, counters.queued - counters.written - counters.rejected)

    def pools(self) -> dict[str, ConnectionPool[Any]]:
        return {"reads": self.read_pool, "writes": self.recorder.pool}

    async def close(self) -> None:
        await self.recorder.close()
        self.read_pool.close()
