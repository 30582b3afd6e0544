"""`usagemeter db distribute`: the migrated schema laid out on a Citus cluster (docs/distributed.md).

Runs on the coordinator, as a superuser, after `db migrate`, in one transaction: distribute.sql
adds the owner key, distributes usage_events and its key guard by it, makes tenants, members,
users, prices, budgets and closed periods reference tables, and remakes the policies in a form
Citus accepts; distribute_functions.sql, distribute_rollups.sql and distribute_budgets.sql carry
the ledger's functions, the rollups and the budgets over. Then, what needs
values of this installation: the request roles `anon`, `authenticated` and `service_role` get a
login with a random password that only Citus knows
(pg_dist_authinfo), since Citus opens the worker connections of a request as its role; and the
database propagates `SET LOCAL` to the workers, which is how acting_as sends the request's claims.
"""

from __future__ import annotations

import secrets
from typing import Any, LiteralString

import psycopg
from psycopg import sql as pgsql

from usagemeter import errors
from usagemeter.db import sql

queries = sql.load_queries("usagemeter.ops")
DISTRIBUTE_SQL = sql.read_sql_file("usagemeter.ops", "distribute.sql")
FUNCTIONS_SQL = sql.read_sql_file("usagemeter.ops", "distribute_functions.sql")
ROLLUPS_SQL = sql.read_sql_file("usagemeter.ops", "distribute_rollups.sql")
BUDGETS_SQL = sql.read_sql_file("usagemeter.ops", "distribute_budgets.sql")
REQUEST_ROLES = ("anon", "authenticated", "service_role")
# The settings of db distribute's transaction, each a statement of its own (Citus forwards a propagated SET
# as the text of the whole statement string it came in): writes to the shards at once, the triggers kept
# on usage_events distributed with it, and replica mode on the coordinator and the workers, so that
# Citus's copy of the existing rows into the shards fires none of the ledger's triggers (they would book
# rows on closed statements again, re-rate them, refuse correction entries).
TRANSACTION_SETTINGS: tuple[LiteralString, ...] = (
    "set local citus.multi_shard_modify_mode = 'sequential'",
    "set local citus.enable_unsafe_triggers = on",
    "set local citus.propagate_set_commands = 'local'",
    "set local session_replication_role = replica",
)


def check_ready(conn: psycopg.Connection[Any]) -> None:
    """Refuse, changing nothing, unless this is a migrated, not yet distributed database on a Citus coordinator."""
    if not conn.execute(queries["citus_extension_available"]).fetchone() == (True,):
        raise errors.DistributeError("the citus extension is not installed in this database: `create extension citus`")
    row = conn.execute(queries["citus_readiness"]).fetchone()
    assert row is not None
    _, workers, migrated, distributed = row
    if not migrated:
        raise errors.DistributeError("usage_events does not exist: run `usagemeter db migrate` first")
    if distributed:
        raise errors.DistributeError("usage_events is distributed already")
    if workers == 0:
        raise errors.DistributeError("the coordinator has no active worker: add them with citus_add_node(host, port)")


def distribute(conn: psycopg.Connection[Any]) -> None:
    """Lay the migrated schema out on the cluster (autocommit connection as a superuser on the coordinator)."""
    check_ready(conn)
    with conn.transaction():
        for setting in TRANSACTION_SETTINGS:
            conn.execute(setting)
        conn.execute(DISTRIBUTE_SQL)
        conn.execute(FUNCTIONS_SQL)
        conn.execute(ROLLUPS_SQL)
        conn.execute(BUDGETS_SQL)
        for role in REQUEST_ROLES:
            password = _password_in_use(conn, role) or secrets.token_urlsafe(24)
            conn.execute(
                pgsql.SQL("alter role {} with login password {}").format(
                    pgsql.Identifier(role), pgsql.Literal(password)
                )
            )
            conn.execute(queries["store_node_password"], {"role": role, "password": password})
    grant_event_shards(conn)
    database = conn.execute("select current_database()").fetchone()
    assert database is not None
    conn.execute(
        pgsql.SQL("alter database {} set citus.propagate_set_commands = 'local'").format(pgsql.Identifier(database[0]))
    )
    for role in REQUEST_ROLES:
        # A write to a reference table with foreign keys to others (a closed period, a tenant's member, a
        # budget) makes Citus lock the referenced tables' shards as the writer, which it allows only to roles
        # that may write those tables (auth.users, tenants): skip that check for the request roles here.
        conn.execute(
            pgsql.SQL("alter role {} in database {} set citus.skip_advisory_lock_permission_checks = on").format(
                pgsql.Identifier(role), pgsql.Identifier(database[0])
            )
        )


def _password_in_use(conn: psycopg.Connection[Any], role: str) -> str | None:
    """The node password `role` already logs in with, from another distributed database of this server.

    Roles are the server's, pg_dist_authinfo is each database's: a second database distributed on the
    same cluster must give Citus the password the first one stored, not set a new one (which would
    lock the first database's requests out of the workers).
    """
    can_login = conn.execute(queries["role_can_login"], {"role": role}).fetchone()
    if not (can_login and can_login[0]):
        return None
    here = conn.execute("select current_database()").fetchone()
    for (database,) in conn.execute(queries["other_databases"]).fetchall():
        if here and database == here[0]:
            continue
        try:
            with psycopg.connect(conn.info.dsn, password=conn.info.password, dbname=database, autocommit=True) as other:
                row = other.execute(queries["node_password"], {"role": role}).fetchone()
        except psycopg.Error:
            continue  # no Citus there, or not reachable: not where the password is
        if row is not None:
            return str(row[0])
    return None


def grant_event_shards(conn: psycopg.Connection[Any]) -> None:
    """Grant `authenticated` INSERT on every shard of usage_events (idempotent; `maintain` runs it for new shards).

    The coordinator checks the column grants on the statement as written; the statement it sends to
    a shard names every column, so the shards need the whole-table grant. Shards made after
    `db distribute` (a rebalance, a split) get it from the next run.
    """
    failed = conn.execute(queries["grant_insert_on_event_shards"]).fetchall()
    if failed:
        raise errors.DistributeError(f"granting INSERT on the shards of usage_events failed: {failed}")
