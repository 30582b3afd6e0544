"""Billing's rules as the API roles meet them, through role switches only (so it runs on the Supabase platform too).

A Supabase client inserting straight into usage_events as `authenticated` never calls Python:
the hard budget, the price list's visibility and the service-only corrections must hold for it
exactly as for the recorder. These tests use the owner's connection and `acting_as` alone, which
the platform tier has, and no app login.
"""

from __future__ import annotations

import json
import uuid
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from psycopg import errors as pgerrors
from psycopg import sql as pgsql

from tests import factories
from usagemeter.db import Identity, acting_as

INSERT_AS_MEMBER = (
    "insert into public.usage_events (tenant_id, user_id, action, tokens_input, tokens_output, metadata)"
    " values (%s, %s, 'agency:scope:generate', 100, 10, '{\"model\": \"gpt-4o\"}')"
)


@pytest.fixture
def member_of_a_tenant(owner: psycopg.Connection[Any]) -> tuple[uuid.UUID, uuid.UUID]:
    tenant, user = factories.add_tenant(owner), factories.add_user(owner)
    factories.add_member(owner, tenant, user)
    owner.execute(
        "insert into public.usage_prices (model, currency, input_per_million, output_per_million, effective_from)"
        " values ('gpt-4o', 'USD', 2.5, 10, '2020-01-01')"
    )
    return tenant, user


def test_a_direct_insert_as_authenticated_is_priced_and_held_to_a_hard_budget(
    owner: psycopg.Connection[Any], member_of_a_tenant: tuple[uuid.UUID, uuid.UUID]
) -> None:
    tenant, user = member_of_a_tenant
    owner.execute(
        "insert into public.usage_budgets (tenant_id, metric, usage_limit, period, mode)"
        " values (%s, 'events', 2, 'month', 'hard')",
        [tenant],
    )
    for _ in range(2):
        with acting_as(owner, Identity.user(user)):
            owner.execute(INSERT_AS_MEMBER, [tenant, user])
    with pytest.raises(psycopg.Error) as refused, acting_as(owner, Identity.user(user)):
        owner.execute(INSERT_AS_MEMBER, [tenant, user])
    assert refused.value.sqlstate == "UMQ01"
    budget = json.loads(refused.value.diag.message_detail or "{}")
    assert (budget["metric"], budget["limit"], budget["used"], budget["requested"]) == ("events", 2, 2, 1)
    rows = owner.execute(
        "select count(*), sum(cost) from public.usage_events where tenant_id = %s", [tenant]
    ).fetchone()
    assert rows == (2, Decimal("0.000700"))  # 100 x 2.5/1M + 10 x 10/1M = 0.00035 each


def test_a_user_sees_the_prices_that_apply_to_them_and_cannot_write_any(
    owner: psycopg.Connection[Any], member_of_a_tenant: tuple[uuid.UUID, uuid.UUID]
) -> None:
    tenant, user = member_of_a_tenant
    other = factories.add_tenant(owner)
    owner.execute(
        "insert into public.usage_prices (model, tenant_id, currency, input_per_million, output_per_million,"
        " effective_from) values ('gpt-4o', %s, 'USD', 1, 1, '2020-01-01'), ('gpt-4o', %s, 'USD', 2, 2, '2020-01-01')",
        [tenant, other],
    )
    with acting_as(owner, Identity.user(user)):
        seen = owner.execute("select tenant_id from public.usage_prices order by tenant_id nulls first").fetchall()
    assert seen == [(None,), (tenant,)]
    with pytest.raises(pgerrors.InsufficientPrivilege), acting_as(owner, Identity.user(user)):
        owner.execute(
            "insert into public.usage_prices (model, currency, input_per_million, output_per_million, effective_from)"
            " values ('x', 'USD', 0, 0, now())"
        )


def test_only_the_service_role_voids_and_a_void_frees_the_budget(
    owner: psycopg.Connection[Any], member_of_a_tenant: tuple[uuid.UUID, uuid.UUID]
) -> None:
    tenant, user = member_of_a_tenant
    owner.execute(
        "insert into public.usage_budgets (tenant_id, metric, usage_limit, period, mode)"
        " values (%s, 'events', 1, 'total', 'hard')",
        [tenant],
    )
    with acting_as(owner, Identity.user(user)):
        owner.execute(INSERT_AS_MEMBER, [tenant, user])
    event = owner.execute("select id from public.usage_events where tenant_id = %s", [tenant]).fetchone()
    assert event is not None
    with pytest.raises(pgerrors.InsufficientPrivilege), acting_as(owner, Identity.user(user)):
        owner.execute("select public.void_usage_event_v1(%s, 'mine')", [event[0]])
    with acting_as(owner, Identity.service()):
        owner.execute("select public.void_usage_event_v1(%s, 'duplicate')", [event[0]])
    with acting_as(owner, Identity.user(user)):
        owner.execute(INSERT_AS_MEMBER, [tenant, user])  # the void gave the one event back
        kinds = owner.execute(
            "select correction_kind from public.usage_events where tenant_id = %s order by recorded_at, id", [tenant]
        ).fetchall()
    assert sorted(kinds, key=str) == sorted([(None,), ("void",), (None,)], key=str)


def test_rates_remembered_within_a_statement_never_leak_to_other_rows_or_prices(
    owner: psycopg.Connection[Any], member_of_a_tenant: tuple[uuid.UUID, uuid.UUID]
) -> None:
    """The rating trigger reuses rates for rows of one statement that share tenant, model, action and time only."""
    tenant, user = member_of_a_tenant
    owner.execute(
        "insert into public.usage_prices (model, currency, input_per_million, output_per_million, effective_from)"
        " values ('m2', 'USD', 1000000, 0, '2020-01-01'), ('gpt-4o', 'USD', 5, 20, '2026-03-01')"
    )
    with acting_as(owner, Identity.service()):
        # One statement: rows alternating two models and two times (before and after the gpt-4o change).
        owner.execute(
            "insert into public.usage_events (tenant_id, user_id, action, tokens_input, tokens_output, metadata,"
            " created_at) select %s, %s, 'agency:scope:generate', 100, 10, jsonb_build_object('model', m), at"
            " from unnest(array['gpt-4o', 'm2', 'gpt-4o', 'm2']) with ordinality as models(m, n),"
            " unnest(array[timestamptz '2026-02-01', '2026-04-01']) as times(at)",
            [tenant, user],
        )
        # One client message (one statement_timestamp): an event, a price for the tenant, the same event
        # again. The price applies to the second: loading it forgot the rates remembered for the first.
        owner.execute(
            pgsql.SQL(
                "insert into public.usage_events (tenant_id, user_id, action, tokens_input, tokens_output, metadata,"
                " created_at) values ({tenant}, {user}, 'agency:scope:generate', 100, 10, '{{\"model\": \"m2\"}}',"
                " '2026-04-01');"
                " insert into public.usage_prices (model, tenant_id, currency, input_per_million, output_per_million,"
                " effective_from) values ('m2', {tenant}, 'USD', 1, 1, '2020-01-01');"
                " insert into public.usage_events (tenant_id, user_id, action, tokens_input, tokens_output, metadata,"
                " created_at) values ({tenant}, {user}, 'agency:scope:generate', 100, 10, '{{\"model\": \"m2\"}}',"
                " '2026-04-01')"
            ).format(tenant=pgsql.Literal(str(tenant)), user=pgsql.Literal(str(user)))
        )
    costs = owner.execute(
        "select model, created_at::date::text, cost from public.usage_events where tenant_id = %s"
        " group by 1, 2, 3 order by 1, 2, 3",
        [tenant],
    ).fetchall()
    assert costs == [
        ("gpt-4o", "2026-02-01", Decimal("0.000350")),  # 100 x 2.5 + 10 x 10, per million
        ("gpt-4o", "2026-04-01", Decimal("0.000700")),  # 100 x 5 + 10 x 20
        ("m2", "2026-02-01", Decimal("100.000000")),  # 100 x 1,000,000 per million
        ("m2", "2026-04-01", Decimal("0.000110")),  # the tenant's own m2 price, loaded a statement earlier
        ("m2", "2026-04-01", Decimal("100.000000")),
    ]
