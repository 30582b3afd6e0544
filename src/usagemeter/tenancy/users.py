"""Users, where usagemeter's shim owns auth.users (a plain PostgreSQL); never on Supabase.

On Supabase, auth.users belongs to its auth service (GoTrue): a row inserted behind its back
would have no identity, password or audit trail, so users are made there through Supabase Auth.
The shim's table says whose it is in its comment (ops/platform.sql), and only that comment lets
`create_user` write.
"""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
from psycopg import errors as pgerrors

from usagemeter import errors
from usagemeter.db import sql
from usagemeter.recording import event

queries = sql.load_queries("usagemeter.tenancy")

SHIM_COMMENT_PREFIX = "usagemeter shim of Supabase auth.users"
EMAIL_MAX_LENGTH = 255


def shim_owns_users(admin_conn: psycopg.Connection[Any]) -> bool:
    """Whether auth.users is usagemeter's shim (so usagemeter may create users), read from its table comment."""
    row = admin_conn.execute(queries["users_table_comment"]).fetchone()
    assert row is not None
    exists, comment = row
    return bool(exists) and (comment or "").startswith(SHIM_COMMENT_PREFIX)


def check_email(email: str) -> str:
    """The email, if it looks like one (one @, no spaces, at most 255 characters); InvalidUser otherwise."""
    problem = event.storable_text_problem(email)
    if problem is not None:
        raise errors.InvalidUser(f"email: {problem}")
    local, at, domain = email.partition("@")
    if not (at and local and domain) or "@" in domain or any(c.isspace() for c in email):
        raise errors.InvalidUser(f"email: expected an address such as ada@example.com, got {email!r}")
    if len(email) > EMAIL_MAX_LENGTH:
        raise errors.InvalidUser(f"email: must be at most {EMAIL_MAX_LENGTH} characters, got {len(email)}")
    return email


def create_user(admin_conn: psycopg.Connection[Any], *, email: str | None = None,
                user_id: uuid.UUID | None = None) -> uuid.UUID:  # fmt: skip
    """Create a user in the shim's auth.users and return their id, on the admin (owner) connection.

    Request roles cannot write auth.users (on Supabase nobody but its auth service should), so
    this takes the connection that migrates. Idle, the creation is its own transaction; inside
    one, part of it.

    Parameters
    ----------
    email:
        Optional; unique without regard to case, as Supabase Auth keeps it.
    user_id:
        The id to give the user (default: a new random UUID).

    Raises
    ------
    UsersManagedElsewhere (auth.users is not the shim's: create users through Supabase Auth),
    InvalidUser (a bad email), UserExists (the id or email is taken). Nothing is written then.
    """
    if email is not None:
        check_email(email)
    new_id = user_id or uuid.uuid4()
    with admin_conn.transaction():
        if not shim_owns_users(admin_conn):
            raise errors.UsersManagedElsewhere(
                "auth.users here belongs to Supabase Auth, not to usagemeter's shim: create users through"
                " Supabase Auth (the dashboard, auth.admin.createUser, or sign-up), then use their ids"
            )
        if email is not None and admin_conn.execute(queries["user_by_email"], {"email": email}).fetchone():
            raise errors.UserExists(f"email: a user with email {email!r} already exists")
        try:
            with admin_conn.transaction():
                row = admin_conn.execute(queries["insert_user"], {"id": new_id, "email": email}).fetchone()
        except pgerrors.UniqueViolation:
            raise errors.UserExists(f"user: a user with id {new_id} already exists") from None
    assert row is not None
    created: uuid.UUID = row[0]
    return created
