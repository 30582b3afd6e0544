"""`usagemeter serve` (the HTTP API and dashboard) and `usagemeter token` (access tokens for local use)."""

from __future__ import annotations

import gc
import re
import secrets
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Annotated

import typer
import uvicorn

from usagemeter import api, db, errors, settings
from usagemeter.api import auth
from usagemeter.cli.common import DatabaseUrlOption, err, fail, logins, out, reported_errors
from usagemeter.ops import demo, migrate

JwtSecretOption = Annotated[
    str | None,
    typer.Option(
        "--jwt-secret", help="The project's JWT secret (HS256). Default: $USAGEMETER_JWT_SECRET", show_default=False
    ),
]
DURATION = re.compile(r"^(\d+)([smhd])$")
UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def _duration(text: str) -> timedelta:
    match = DURATION.fullmatch(text.strip())
    if match is None or int(match[1]) == 0:
        fail(f"--ttl: expected a duration such as 30m, 1h or 7d, got {text!r}", code=2)
    return timedelta(**{UNITS[match[2]]: int(match[1])})


# Young-generation collections every 100,000 allocations instead of 700, and full ones rarely: a
# request allocates a few thousand objects, almost all freed by reference counting, and each
# collection of a busy server's heap paused every in-flight request (measured: p99 of single-event
# POSTs 78 ms -> 27 ms, 2,640 -> 3,520 requests/s).
GC_THRESHOLDS = (100_000, 50, 1000)
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def _tune_garbage_collector() -> None:
    """Fewer, cheaper collections for the serving process; what exists at start is frozen out of them."""
    gc.set_threshold(*GC_THRESHOLDS)
    gc.freeze()


def _pending_migrations(admin_url: str) -> int:
    """How many migrations the database lacks (or has changed); the server refuses to start on an old schema."""
    with db.connect(admin_url, autocommit=True) as conn:
        states = migrate.states(conn, migrate.discover_migrations())
    return sum(state.status != "applied" for state in states)


def serve(
    host: Annotated[str, typer.Option("--host", help="Address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on")] = 8000,
    database_url: DatabaseUrlOption = None,
    demo: Annotated[
        bool, typer.Option("--demo", help="Load demo data into an empty database; sign in as its user")
    ] = False,
    jwt_secret: JwtSecretOption = None,
    jwks_url: Annotated[
        str | None,
        typer.Option("--jwks-url", help="The project's JWKS URL (RS256/ES256). Default: $USAGEMETER_JWKS_URL"),
    ] = None,
    jwt_issuer: Annotated[str | None, typer.Option("--jwt-issuer", help="Required `iss` of tokens, if any")] = None,
    spool: Annotated[
        Path | None, typer.Option("--spool", help="Directory where writes wait while the database is down (202)")
    ] = None,
    body_limit: Annotated[int, typer.Option("--body-limit", help="Largest request body in bytes")] = 1024 * 1024,
) -> None:
    """Run the HTTP API and the usage dashboard; every request runs in the database as its caller, under RLS."""
    config = settings.Settings()
    secret = jwt_secret or (config.jwt_secret.get_secret_value() if config.jwt_secret else None)
    jwks = jwks_url or config.jwks_url
    if demo and not secret:
        secret = secrets.token_urlsafe(32)  # this run's own: demo tokens die with the process
    with reported_errors(), logins(database_url) as found:
        pending = _pending_migrations(found.admin)
        if pending:
            fail(f"the database lacks {pending} migration(s): run `usagemeter db migrate` first")
        demo_token = _demo_token(found.admin, found.app, secret) if demo and secret else None
        try:
            verifier = auth.TokenVerifier(secret=secret, jwks_url=jwks, issuer=jwt_issuer or config.jwt_issuer)
        except errors.ConfigurationError as failure:
            fail(f"{failure}; or run with --demo")
        server_config = api.ServerConfig(
            app_database_url=found.app,
            verifier=verifier,
            body_limit=body_limit,
            spool_dir=spool,
            migrations=len(migrate.discover_migrations()),
            demo_user_token=demo_token,
        )
        url = f"http://{host}:{port}/"
        out.print(f"usagemeter on [bold]{url}[/] (API docs at {url}docs)", highlight=False)
        if demo_token:
            out.print(f"open [bold]{url}#token={demo_token}[/] to see the demo usage", highlight=False, soft_wrap=True)
            if host not in LOOPBACK_HOSTS:
                err.print(
                    f"[yellow]warning:[/] --demo signs in every visitor of {url} as the demo owner", highlight=False
                )
        app = api.create_app(server_config)
        _tune_garbage_collector()
        uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)


def _demo_token(admin_url: str, app_url: str, secret: str) -> str:
    """Load the demo data set when the database is empty, and a token of its owner (a member of both tenants)."""
    with db.connect(admin_url, autocommit=True) as conn:
        loaded = demo.load_demo(conn, app_url)
    what = f"loaded {loaded.events:,} events" if loaded.loaded else "already loaded"
    err.print(f"demo data: {what}; signed in as {demo.OWNER_EMAIL}", highlight=False)
    return auth.mint(secret, user_id=loaded.owner_id, email=demo.OWNER_EMAIL, ttl=timedelta(days=1))


def token(
    user: Annotated[uuid.UUID | None, typer.Option("--user", help="The user the token signs in (its `sub`)")] = None,
    role: Annotated[str, typer.Option("--role", help="authenticated or service_role")] = "authenticated",
    ttl: Annotated[str, typer.Option("--ttl", help="Lifetime: 30m, 1h, 7d")] = "1h",
    email: Annotated[str | None, typer.Option("--email", help="The `email` claim")] = None,
    jwt_secret: JwtSecretOption = None,
) -> None:
    """Print an HS256 access token signed with the configured secret, shaped as Supabase Auth issues them."""
    if role not in ("authenticated", "service_role"):
        fail(f"--role: expected authenticated or service_role, got {role!r}", code=2)
    if role == "authenticated" and user is None:
        fail("--user: a user's token needs their user id", code=2)
    config = settings.Settings()
    secret = jwt_secret or (config.jwt_secret.get_secret_value() if config.jwt_secret else None)
    if not secret:
        fail(
            "no JWT secret: pass --jwt-secret or set USAGEMETER_JWT_SECRET (the secret the server checks with)", code=2
        )
    print(auth.mint(secret, user_id=user, role=role, ttl=_duration(ttl), email=email, issuer=config.jwt_issuer))
