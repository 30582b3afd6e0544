"""Who a transaction runs as, and running it as a Supabase API request would: as a role, with JWT claims."""

from __future__ import annotations

import functools
import json
import uuid
import weakref
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, LiteralString, NewType

import psycopg
from psycopg import pq

from usagemeter.db import sql

UserId = NewType("UserId", uuid.UUID)
TenantId = NewType("TenantId", uuid.UUID)

queries = sql.load_queries("usagemeter.db")

RequestRole = Literal["anon", "authenticated", "service_role"]


@dataclass(frozen=True)
class Identity:
    """Who a request runs as: the database role and the JWT claims RLS policies read."""

    role: RequestRole
    claims: Mapping[str, Any] = field(default_factory=dict)

    @functools.cached_property
    def key(self) -> tuple[str, str]:
        """A hashable form, to group one identity's events into one write (cached: batches ask per event)."""
        return self.role, json.dumps(dict(self.claims), sort_keys=True, default=str)

    @functools.cached_property
    def user_id(self) -> uuid.UUID | None:
        """The `sub` claim: the user this identity acts as, if any (parsed once)."""
        sub = self.claims.get("sub")
        return uuid.UUID(str(sub)) if sub else None

    @classmethod
    def from_claims(cls, claims: Mapping[str, Any]) -> Identity:
        """An identity from verified JWT claims, as PostgREST reads them: their `role` picks the database role.

        Only for claims whose signature was verified (a service-role token is a service key). To act
        as a user whatever the claims say, use `user_from_claims`.
        """
        role = claims.get("role", "authenticated")
        if role not in ("anon", "authenticated", "service_role"):
            raise ValueError(f"claims role must be anon, authenticated or service_role, got {role!r}")
        return cls(role=role, claims=dict(claims))

    @classmethod
    def user_from_claims(cls, claims: Mapping[str, Any]) -> Identity:
        """A signed-in user from their claims: always role `authenticated`, whatever `role` the claims name.

        Claims cannot promote themselves: `role: service_role` in them is overwritten, and acting as
        the service role takes an explicit `Identity.service()`.
        """
        sub = claims.get("sub")
        try:
            uuid.UUID(str(sub))
        except ValueError:
            raise ValueError(f"a user's claims need `sub`, their user id as a UUID, got {sub!r}") from None
        return cls(role="authenticated", claims={**claims, "role": "authenticated"})

    @classmethod
    def user(cls, user_id: uuid.UUID, *, email: str | None = None) -> Identity:
        """A signed-in user, with the claims a Supabase access token carries."""
        claims: dict[str, Any] = {"sub": str(user_id), "role": "authenticated", "aud": "authenticated"}
        if email is not None:
            claims["email"] = email
        return cls(role="authenticated", claims=claims)

    @classmethod
    def anon(cls) -> Identity:
        """A request without a user token."""
        return cls(role="anon", claims={"role": "anon"})

    @classmethod
    def service(cls) -> Identity:
        """The backend's service key: bypasses RLS."""
        return cls(role="service_role", claims={"role": "service_role"})


# Statement timeouts per role, as Supabase sets them on the roles (ALTER ROLE ... SET does not apply
# under SET ROLE, so they are set with the role). None keeps the session's own.
STATEMENT_TIMEOUTS: dict[RequestRole, str | None] = {"anon": "3s", "authenticated": "8s", "service_role": None}


# Per connection: whether claims go by SET LOCAL (a database distributed on Citus, docs/distributed.md).
_distributed: weakref.WeakKeyDictionary[psycopg.Connection[Any], bool] = weakref.WeakKeyDictionary()


def is_distributed(conn: psycopg.Connection[Any]) -> bool:
    """Whether the database is laid out on Citus by `db distribute` (claims by SET LOCAL, owner_id written).

    Asked once per connection: the layout of a database does not change under an open connection.
    """
    known = _distributed.get(conn)
    if known is None:
        row = conn.execute(queries["claims_propagate"]).fetchone()
        known = _distributed[conn] = bool(row and row[0])
    return known


def _set_identity(
    conn: psycopg.Connection[Any], query: LiteralString, propagated: LiteralString, params: dict[str, Any]
) -> psycopg.Cursor[Any]:
    """Run `query`, or on a Citus coordinator its `propagated` form (claims by SET LOCAL, docs/distributed.md)."""
    if not is_distributed(conn):
        return conn.execute(query, params)
    conn.execute(queries["reset_request_role"])  # the login role names the claims function; a request role may not
    return conn.execute(propagated, params)


def become(conn: psycopg.Connection[Any], identity: Identity) -> psycopg.Cursor[Any]:
    """Take on `identity` for the rest of the current transaction; the cursor's row holds the transaction's now()."""
    return _set_identity(
        conn,
        queries["become_request_identity"],
        queries["become_request_identity_propagated"],
        {
            "role": identity.role,
            "claims": json.dumps(dict(identity.claims), default=str),
            "statement_timeout": STATEMENT_TIMEOUTS[identity.role],
        },
    )


@contextmanager
def acting_as(conn: psycopg.Connection[Any], identity: Identity) -> Iterator[psycopg.Connection[Any]]:
    """Run the block in a transaction (or savepoint) as `identity`, exactly as PostgREST sets it up.

    The role, claims and statement timeout are transaction-local: on error the (sub)transaction
    rolls back and takes them with it. Nested inside another transaction, the enclosing role,
    claims and timeout are restored when the block ends, so an outer `acting_as` goes on as its
    own identity, never as the connection's login role.
    """
    outermost = conn.info.transaction_status == pq.TransactionStatus.IDLE
    with conn.transaction():
        if outermost:  # the commit drops the identity with the transaction
            become(conn, identity)
            yield conn
            return
        previous = conn.execute(queries["current_request_identity"]).fetchone()
        assert previous is not None
        become(conn, identity)
        yield conn
        role, claims, timeout = previous
        restored = {"role": role, "claims": claims, "timeout": timeout}
        _set_identity(
            conn, queries["restore_request_identity"], queries["restore_request_identity_propagated"], restored
        )
