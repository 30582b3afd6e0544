"""Opening connections: the admin login for migrations and maintenance, the app login for everything else.

Recording and reporting connect as a login role that owns nothing and can only switch to the request
roles (Supabase's `authenticator`). A query that forgets to take on a request identity then runs
with no rights at all and fails closed, instead of running as the table owner and bypassing RLS.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import conninfo
from psycopg_pool import ConnectionPool

from usagemeter import errors
from usagemeter.db import sql

APP_LOGIN_ROLE = "authenticator"
APPLICATION_NAME = "usagemeter"

queries = sql.load_queries("usagemeter.db")


def connect(url: str, *, autocommit: bool = False) -> psycopg.Connection[tuple[Any, ...]]:
    """Open a connection; the application name shows usagemeter in pg_stat_activity."""
    return psycopg.connect(url, autocommit=autocommit, application_name=APPLICATION_NAME)


def with_database(url: str, dbname: str) -> str:
    """The same server and credentials as `url`, another database."""
    return conninfo.make_conninfo(url, dbname=dbname)


def with_login(url: str, *, user: str, password: str | None) -> str:
    """The same server and database as `url`, logging in as `user` (never with the old login's password)."""
    params = conninfo.conninfo_to_dict(url)
    params.pop("password", None)
    params["user"] = user
    if password:
        params["password"] = password
    return conninfo.make_conninfo("", **params)


def login_user(url: str) -> str | None:
    """The user a URL logs in as, if it names one."""
    user = conninfo.conninfo_to_dict(url).get("user")
    return str(user) if user is not None else None


def app_url(admin_url: str, *, password: str | None) -> str:
    """The app login (`authenticator`) on the server and database of `admin_url`.

    A URL that already logs in as `authenticator` keeps its own password unless another is given.
    """
    if login_user(admin_url) == APP_LOGIN_ROLE and not password:
        return admin_url
    return with_login(admin_url, user=APP_LOGIN_ROLE, password=password)


def refuse_privileged_login(conn: psycopg.Connection[Any]) -> None:
    """Raise ConfigurationError unless the session's login role is harmless without a request identity.

    Refused: a superuser (or a member of one), a role with BYPASSRLS, and a member of the owner of
    any relation in schema public (owners bypass RLS). Leaves a non-autocommit connection idle.
    """
    row = conn.execute(queries["login_role_reach"]).fetchone()
    if not conn.autocommit:
        conn.rollback()
    assert row is not None
    login, superuser, bypasses_rls, owners = row
    reason = (
        "is a superuser or can become one"
        if superuser
        else "bypasses row-level security"
        if bypasses_rls
        else f"can act as {owners}, the owner of tables in schema public"
        if owners
        else None
    )
    if reason is not None:
        raise errors.ConfigurationError(
            f"the database URL logs in as {login!r}, which {reason}: recording and reports must connect as "
            f"{APP_LOGIN_ROLE!r}, a login role that owns nothing and only switches to anon, authenticated "
            "or service_role. Set USAGEMETER_APP_DATABASE_URL to an authenticator URL (or "
            "USAGEMETER_AUTHENTICATOR_PASSWORD with USAGEMETER_DATABASE_URL); see docs/supabase.md"
        )


def connect_app(url: str, *, autocommit: bool = False) -> psycopg.Connection[tuple[Any, ...]]:
    """A connection as the app login, refused (ConfigurationError) if the URL's role could bypass RLS."""
    conn = connect(url, autocommit=autocommit)
    try:
        refuse_privileged_login(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def app_pool(
    url: str,
    *,
    max_size: int,
    timeout: float,
    name: str = APPLICATION_NAME,
    check: bool = False,
) -> ConnectionPool[Any]:
    """An open pool of autocommit connections as the app login.

    The login is checked once now, if the server answers, so a privileged URL fails at once with
    ConfigurationError; and again on every new connection, which the pool discards if refused, so
    a privileged connection is never used even when the server was down at start. With `check`, a connection is
    tried before it is handed out (one round trip), so one left dead by a server restart is
    replaced instead of failing its request: for callers that do not retry (the API's reads).
    """
    try:
        with connect(url, autocommit=True) as probe:
            refuse_privileged_login(probe)
    except psycopg.OperationalError:
        pass  # unreachable now: writes spool or retry, and each connection is checked when made
    return ConnectionPool(
        url,
        min_size=1,
        max_size=max_size,
        kwargs={"autocommit": True, "application_name": APPLICATION_NAME},
        configure=refuse_privileged_login,
        check=ConnectionPool.check_connection if check else None,
        timeout=timeout,
        name=name,
        open=True,
    )
