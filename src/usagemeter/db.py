"""Connections, and running a transaction as a Supabase API request would: as a role, with JWT claims."""

from __future__ import annotations

import functools
import json
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, NewType

import psycopg
from psycopg import conninfo, pq

from usagemeter import sql

UserId = NewType("UserId", uuid.UUID)
TenantId = NewType("TenantId", uuid.UUID)

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
        """An identity from verified JWT claims; their `role` decides the database role (default authenticated)."""
        role = claims.get("role", "authenticated")
        if role not in ("anon", "authenticated", "service_role"):
            raise ValueError(f"claims role must be anon, authenticated or service_role, got {role!r}")
        return cls(role=role, claims=dict(claims))

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


def connect(url: str, *, autocommit: bool = False) -> psycopg.Connection[tuple[Any, ...]]:
    """Open a connection; the application name shows usagemeter in pg_stat_activity."""
    return psycopg.connect(url, autocommit=autocommit, application_name="usagemeter")


def with_database(url: str, dbname: str) -> str:
    """The same server and credentials as `url`, another database."""
    return conninfo.make_conninfo(url, dbname=dbname)


@contextmanager
def acting_as(conn: psycopg.Connection[Any], identity: Identity) -> Iterator[psycopg.Connection[Any]]:
    """Run the block in a transaction (or savepoint) as `identity`, exactly as PostgREST sets it up.

    The role and claims are transaction-local: on error the (sub)transaction rolls back and takes
    them with it; on success they are dropped before the block's transaction is released, so an
    enclosing transaction continues as the connection's own role.
    """
    outermost = conn.info.transaction_status == pq.TransactionStatus.IDLE
    with conn.transaction():
        conn.execute(
            sql.queries["become_request_identity"],
            {"role": identity.role, "claims": json.dumps(dict(identity.claims))},
        )
        yield conn
        if not outermost:  # the commit of an outermost transaction drops them anyway
            conn.execute(sql.queries["drop_request_identity"])
