"""Test databases: one migrated template per run, and a fresh clone of it for every test.

The server is $USAGEMETER_TEST_DATABASE_URL or $DATABASE_URL when set (CI points it at the
machine's PostgreSQL 15), otherwise an embedded PostgreSQL started for the run. With
$USAGEMETER_TEST_PLATFORM=supabase (the platform tier) it is a throwaway PostgreSQL 15 holding a
database built from Supabase's own SQL: the template is that database migrated as `postgres` (not
a superuser there), and `owner` connects as `authenticator`, switching role per request as
PostgREST does.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import conninfo
from psycopg import sql as pgsql

from tests import supabase_platform
from usagemeter import db
from usagemeter.ops import embedded, migrate


def _create_database(server_url: str, name: str, *, template: str | None = None) -> None:
    with db.connect(server_url, autocommit=True) as conn:
        if template is None:
            conn.execute(pgsql.SQL("create database {}").format(pgsql.Identifier(name)))
        else:
            conn.execute(
                pgsql.SQL("create database {} template {}").format(pgsql.Identifier(name), pgsql.Identifier(template))
            )


def _drop_database(server_url: str, name: str) -> None:
    with db.connect(server_url, autocommit=True) as conn:
        conn.execute(pgsql.SQL("drop database if exists {} with (force)").format(pgsql.Identifier(name)))


@pytest.fixture(scope="session")
def supabase_cluster() -> Iterator[supabase_platform.SupabaseCluster | None]:
    """The platform tier's Supabase-built cluster; None in the other tiers."""
    if not supabase_platform.platform_mode():
        yield None
        return
    with supabase_platform.supabase_cluster(supabase_platform.platform_sql_dir(Path(__file__).parents[1])) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def embedded_test_server(
    tmp_path_factory: pytest.TempPathFactory, supabase_cluster: supabase_platform.SupabaseCluster | None
) -> Iterator[embedded.EmbeddedPostgres | None]:
    """The embedded PostgreSQL the run uses when no server is given (its app login enabled); None otherwise."""
    if supabase_cluster is not None or os.environ.get("USAGEMETER_TEST_DATABASE_URL") or os.environ.get("DATABASE_URL"):
        yield None
        return
    with embedded.EmbeddedPostgres(tmp_path_factory.mktemp("embedded") / "pgdata") as server:
        with db.connect(server.url(), autocommit=True) as conn:
            migrate.apply_platform_shim(conn)  # roles are cluster-wide: authenticator exists from here on
            server.enable_app_login(conn)
        # CLI and benchmark processes find the app login's password as users do: in the environment.
        os.environ["USAGEMETER_AUTHENTICATOR_PASSWORD"] = server.app_password()
        try:
            yield server
        finally:
            del os.environ["USAGEMETER_AUTHENTICATOR_PASSWORD"]


@pytest.fixture(scope="session")
def server_url(
    embedded_test_server: embedded.EmbeddedPostgres | None, supabase_cluster: supabase_platform.SupabaseCluster | None
) -> str:
    """URL of a maintenance database on the server under test, as its admin (Supabase's `postgres` there)."""
    if supabase_cluster is not None:
        return supabase_cluster.url("postgres")
    if embedded_test_server is not None:
        return embedded_test_server.url()
    return os.environ.get("USAGEMETER_TEST_DATABASE_URL") or os.environ["DATABASE_URL"]


@pytest.fixture(scope="session")
def template_database(server_url: str, supabase_cluster: supabase_platform.SupabaseCluster | None) -> Iterator[str]:
    """A database migrated once per run; every test clones it."""
    if supabase_cluster is not None:
        with db.connect(db.with_database(server_url, supabase_platform.BUILT_DATABASE), autocommit=True) as conn:
            migrate.migrate(conn)
        yield supabase_platform.BUILT_DATABASE
        return
    name = f"um_tpl_{uuid.uuid4().hex[:10]}"
    _create_database(server_url, name)
    try:
        with db.connect(db.with_database(server_url, name), autocommit=True) as conn:
            migrate.migrate(conn)
        yield name
    finally:
        _drop_database(server_url, name)


def authenticator_password_of(server: embedded.EmbeddedPostgres | None) -> str | None:
    """The app login's password: the embedded server's own, none on a trust server given by URL."""
    if server is None:
        return os.environ.get("USAGEMETER_AUTHENTICATOR_PASSWORD")
    return server.app_password()


@pytest.fixture
def empty_database(server_url: str) -> Iterator[str]:
    """URL of a new, empty, unmigrated database, dropped after the test."""
    name = f"um_e_{uuid.uuid4().hex[:12]}"
    _create_database(server_url, name)
    try:
        yield db.with_database(server_url, name)
    finally:
        _drop_database(server_url, name)


@pytest.fixture
def database_url(server_url: str, template_database: str) -> Iterator[str]:
    """URL of a fresh migrated database, cloned from the template and dropped after the test."""
    name = f"um_t_{uuid.uuid4().hex[:12]}"
    _create_database(server_url, name, template=template_database)
    try:
        yield db.with_database(server_url, name)
    finally:
        _drop_database(server_url, name)


@pytest.fixture
def owner(
    database_url: str, supabase_cluster: supabase_platform.SupabaseCluster | None
) -> Iterator[psycopg.Connection[Any]]:
    """A connection as the table owner (bypasses RLS): for arranging data, never for asserting policies.

    In the platform tier it logs in as `authenticator` and arranges as Supabase's superuser (the
    table owner `postgres` is itself a member of authenticator, so it cannot be granted), and
    `acting_as` switches role from `authenticator`, which must be granted that role, as PostgREST does.
    """
    if supabase_cluster is None:
        with db.connect(database_url, autocommit=True) as conn:
            yield conn
        return
    with db.connect(conninfo.make_conninfo(database_url, user="authenticator"), autocommit=True) as conn:
        conn.execute(pgsql.SQL("set role {}").format(pgsql.Identifier(supabase_platform.ARRANGING_ROLE)))
        yield conn


@pytest.fixture
def app_database_url(database_url: str, embedded_test_server: embedded.EmbeddedPostgres | None) -> str:
    """The same database as `database_url`, logged in as `authenticator`: what recorders and reports use."""
    return db.app_url(database_url, password=authenticator_password_of(embedded_test_server))


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return Path(__file__).resolve().parents[1]


@pytest.fixture
def api_server(app_database_url: str, tmp_path: Path) -> Iterator[Any]:
    """The HTTP API on a loopback socket over a fresh database, checking HS256 tokens with a test secret."""
    from tests import http_server
    from usagemeter import api
    from usagemeter.api import auth

    config = api.ServerConfig(
        app_database_url=app_database_url,
        verifier=auth.TokenVerifier(secret=http_server.SECRET, jwks_url=None),
        spool_dir=None,
    )
    with http_server.running_api(config) as running:
        yield running


@pytest.fixture(params=["HS256", "RS256", "ES256"])
def signed_api(request: pytest.FixtureRequest, app_database_url: str) -> Iterator[Any]:
    """The HTTP API checking tokens signed as the parameter says: with the secret, or a key from a JWKS it serves."""
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    from tests import http_server
    from usagemeter import api
    from usagemeter.api import auth

    algorithm: str = request.param
    jwks = http_server.Jwks()
    config = api.ServerConfig(
        app_database_url=app_database_url,
        verifier=auth.TokenVerifier(secret=http_server.SECRET, jwks_url=jwks.url),
    )
    try:
        with http_server.running_api(config) as running:
            if algorithm != "HS256":
                key: Any = (
                    rsa.generate_private_key(public_exponent=65537, key_size=2048)
                    if algorithm == "RS256"
                    else ec.generate_private_key(ec.SECP256R1())
                )
                jwks.add(key.public_key(), "test-key", algorithm)
                running.signing_key, running.algorithm, running.kid = key, algorithm, "test-key"
            yield running
    finally:
        jwks.server.shutdown()
