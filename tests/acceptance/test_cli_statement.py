"""`usagemeter statement` and `statement close`, as an operator runs them: json, csv, table, final, clear errors."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import uuid
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest

from tests import factories
from tests.acceptance.test_cli_database import usagemeter


@pytest.fixture
def tenant(owner: psycopg.Connection[Any]) -> uuid.UUID:
    """A tenant with three September 2026 events (two models) and one in October, priced in USD."""
    tenant, other = factories.add_tenant(owner), factories.add_tenant(owner)
    alice, bob = factories.add_user(owner), factories.add_user(owner)
    factories.add_member(owner, tenant, alice)
    factories.add_member(owner, other, bob)
    owner.execute(
        "insert into public.usage_prices (model, currency, input_per_million, output_per_million, effective_from)"
        " values ('gpt-test', 'USD', 2, 10, '2026-01-01'), ('mini-test', 'USD', 0.1, 0.4, '2026-01-01')"
    )
    rows = [
        (tenant, alice, "gpt-test", 1_000_000, 100_000, datetime(2026, 9, 1, 9, tzinfo=UTC)),
        (tenant, alice, "gpt-test", 500_000, 0, datetime(2026, 9, 30, 23, 59, tzinfo=UTC)),
        (tenant, alice, "mini-test", 1_000_000, 1_000_000, datetime(2026, 9, 15, tzinfo=UTC)),
        (other, bob, "gpt-test", 9_999_999, 1, datetime(2026, 9, 2, tzinfo=UTC)),  # another tenant's
        (tenant, alice, "gpt-test", 1, 1, datetime(2026, 10, 1, tzinfo=UTC)),  # October
    ]
    for row in rows:
        owner.execute(
            "insert into public.usage_events (tenant_id, user_id, action, metadata, tokens_input, tokens_output,"
            " created_at) values (%s, %s, 'agency:scope:generate', jsonb_build_object('model', %s::text), %s, %s, %s)",
            row,
        )
    return tenant


def statement(database_url: str, *arguments: str) -> subprocess.CompletedProcess[str]:
    return usagemeter("statement", *arguments, "--database-url", database_url)


SEPTEMBER = ("--month", "2026-09")


def test_json_for_a_tenant(database_url: str, tenant: uuid.UUID) -> None:
    result = statement(database_url, "--tenant", str(tenant), *SEPTEMBER, "--format", "json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "tenant_id": str(tenant),
        "user_id": None,
        "period": {"from": "2026-09-01T00:00:00+00:00", "to": "2026-10-01T00:00:00+00:00"},
        "time_zone": "UTC",
        "currency": "USD",
        "lines": [
            {
                "action": "agency:scope:generate",
                "model": "gpt-test",
                "events": 2,
                "tokens_input": 1_500_000,
                "tokens_output": 100_000,
                "amount": "4.000000",
            },
            {
                "action": "agency:scope:generate",
                "model": "mini-test",
                "events": 1,
                "tokens_input": 1_000_000,
                "tokens_output": 1_000_000,
                "amount": "0.500000",
            },
        ],
        "total": "4.500000",
        "adjustments": [],
        "final": False,
        "raw_events_archived": False,
    }


def test_csv_for_a_tenant(database_url: str, tenant: uuid.UUID) -> None:
    result = statement(database_url, "--tenant", str(tenant), *SEPTEMBER, "--format", "csv")
    assert result.returncode == 0, result.stderr
    assert list(csv.reader(io.StringIO(result.stdout))) == [
        ["action", "model", "events", "tokens_input", "tokens_output", "amount", "currency"],
        ["agency:scope:generate", "gpt-test", "2", "1500000", "100000", "4.000000", "USD"],
        ["agency:scope:generate", "mini-test", "1", "1000000", "1000000", "0.500000", "USD"],
        ["total", "", "", "", "", "4.500000", "USD"],
    ]


def test_table_for_people(database_url: str, tenant: uuid.UUID) -> None:
    result = statement(database_url, "--tenant", str(tenant), *SEPTEMBER)
    assert result.returncode == 0, result.stderr
    assert f"tenant {tenant}, 2026-09 (UTC), open" in result.stdout
    assert "amount (USD)" in result.stdout
    assert "1,500,000" in result.stdout
    assert "4.500000" in result.stdout
    assert "total" in result.stdout


def test_a_zone_moves_the_month_bounds(database_url: str, tenant: uuid.UUID) -> None:
    """23:59Z on 30 September is October in Paris; 00:00Z on 1 October is still October there."""
    result = statement(database_url, "--tenant", str(tenant), *SEPTEMBER, "--tz", "Europe/Paris", "--format", "json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["period"] == {"from": "2026-09-01T00:00:00+02:00", "to": "2026-10-01T00:00:00+02:00"}
    assert [(line["model"], line["events"]) for line in data["lines"]] == [("gpt-test", 1), ("mini-test", 1)]


def test_close_then_the_statement_is_final(
    database_url: str, tenant: uuid.UUID, owner: psycopg.Connection[Any]
) -> None:
    before = statement(database_url, "--tenant", str(tenant), *SEPTEMBER, "--format", "json")
    closed = statement(database_url, "close", "--tenant", str(tenant), *SEPTEMBER)
    assert closed.returncode == 0, closed.stderr
    assert json.loads(closed.stdout) == {**json.loads(before.stdout), "final": True}

    shown = statement(database_url, "--tenant", str(tenant), *SEPTEMBER, "--format", "json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["final"] is True
    assert shown.stdout == closed.stdout
    table = statement(database_url, "--tenant", str(tenant), *SEPTEMBER)
    assert f"tenant {tenant}, 2026-09 (UTC), final" in table.stdout
    assert owner.execute("select count(*) from public.usage_closed_periods").fetchone() == (1,)

    again = statement(database_url, "close", "--tenant", str(tenant), *SEPTEMBER)
    assert again.returncode == 1
    assert_one_error_line(again, "already closed")
    assert owner.execute("select count(*) from public.usage_closed_periods").fetchone() == (1,)


def test_closing_a_month_not_ended_is_refused(database_url: str, tenant: uuid.UUID) -> None:
    result = statement(database_url, "close", "--tenant", str(tenant), "--month", "2099-01")
    assert result.returncode == 1
    assert_one_error_line(result, "or has not ended")
    assert result.stdout == ""


def test_a_personal_statement(database_url: str, owner: psycopg.Connection[Any]) -> None:
    user = factories.add_user(owner)
    owner.execute(
        "insert into public.usage_events (tenant_id, user_id, action, tokens_input, tokens_output, created_at)"
        " values (null, %s, 'chat:message:send', 3, 4, '2026-09-03T00:00Z')",
        (user,),
    )
    result = statement(database_url, "--personal-user", str(user), *SEPTEMBER, "--format", "json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert (data["tenant_id"], data["user_id"], data["currency"]) == (None, str(user), None)
    assert data["lines"] == [{"action": "chat:message:send", "model": None, "events": 1, "tokens_input": 3,
                              "tokens_output": 4, "amount": "0.000000"}]  # fmt: skip


def assert_one_error_line(result: subprocess.CompletedProcess[str], words: str) -> None:
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error:"), lines[0]
    assert words in lines[0], lines[0]


@pytest.mark.parametrize(
    ("arguments", "words"),
    [
        (("--month", "2026-13"), "YYYY-MM"),
        (("--month", "September"), "YYYY-MM"),
        (("--month", "2026-09", "--tz", "Mars/Olympus"), "Mars/Olympus"),
    ],
)
@pytest.mark.parametrize("command", [(), ("close",)])
def test_a_bad_month_or_zone_is_one_clear_error(
    database_url: str, tenant: uuid.UUID, command: tuple[str, ...], arguments: tuple[str, ...], words: str
) -> None:
    result = statement(database_url, *command, "--tenant", str(tenant), *arguments)
    assert result.returncode in (1, 2)
    assert_one_error_line(result, words)
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("arguments", "words"),
    [
        (("--month", "2026-09"), "--tenant"),
        (("--tenant", str(uuid.UUID(int=1)), "--personal-user", str(uuid.UUID(int=2)), "--month", "2026-09"), "or"),
        (("--tenant", str(uuid.UUID(int=1))), "--month"),
    ],
)
def test_a_missing_or_double_scope_exits_2(database_url: str, arguments: tuple[str, ...], words: str) -> None:
    result = statement(database_url, *arguments)
    assert result.returncode == 2
    assert_one_error_line(result, words)
