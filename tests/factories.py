"""Arrange rows as the table owner: users, tenants, memberships, events. Never used to assert policies."""

from __future__ import annotations

import json
import uuid
from typing import Any

import psycopg


def add_user(conn: psycopg.Connection[Any], user_id: uuid.UUID | None = None) -> uuid.UUID:
    user_id = user_id or uuid.uuid4()
    conn.execute("insert into auth.users (id, email) values (%s, %s)", (user_id, f"{user_id.hex[:8]}@example.test"))
    return user_id


def add_tenant(conn: psycopg.Connection[Any], slug: str | None = None) -> uuid.UUID:
    slug = slug or f"t-{uuid.uuid4().hex[:12]}"
    row = conn.execute("insert into public.tenants (name, slug) values (%s, %s) returning id", (slug, slug)).fetchone()
    assert row is not None
    tenant_id: uuid.UUID = row[0]
    return tenant_id


def add_member(conn: psycopg.Connection[Any], tenant_id: uuid.UUID, user_id: uuid.UUID, role: str = "member") -> None:
    conn.execute(
        "insert into public.tenant_members (tenant_id, user_id, role) values (%s, %s, %s)", (tenant_id, user_id, role)
    )


def add_event(
    conn: psycopg.Connection[Any],
    *,
    tenant_id: uuid.UUID | None,
    user_id: uuid.UUID | None,
    action: str = "agency:scope:generate",
    tokens_input: int = 10,
    tokens_output: int = 5,
    metadata: dict[str, Any] | None = None,
) -> uuid.UUID:
    row = conn.execute(
        "insert into public.usage_events (tenant_id, user_id, action, tokens_input, tokens_output, metadata)"
        " values (%s, %s, %s, %s, %s, %s) returning id",
        (tenant_id, user_id, action, tokens_input, tokens_output, json.dumps(metadata or {})),
    ).fetchone()
    assert row is not None
    event_id: uuid.UUID = row[0]
    return event_id


def count_events(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("select count(*) from public.usage_events").fetchone()
    assert row is not None
    return int(row[0])


def two_tenants_with_an_event_each(conn: psycopg.Connection[Any]) -> dict[str, uuid.UUID]:
    """Alice in tenant `mine`, Bob in tenant `foreign`, one event in each (`foreign_event` is Bob's)."""
    mine, foreign = add_tenant(conn), add_tenant(conn)
    alice, bob = add_user(conn), add_user(conn)
    add_member(conn, mine, alice)
    add_member(conn, foreign, bob)
    add_event(conn, tenant_id=mine, user_id=alice, tokens_input=1)
    foreign_event = add_event(conn, tenant_id=foreign, user_id=bob, tokens_input=1000)
    return {"mine": mine, "foreign": foreign, "alice": alice, "bob": bob, "foreign_event": foreign_event}
