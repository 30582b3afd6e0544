"""`usagemeter void` and `amend`, as an operator runs them: one JSON object out, one clear line on error."""

from __future__ import annotations

import json
import uuid
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from tests import factories
from tests.acceptance.test_cli_database import usagemeter


@pytest.fixture
def event(owner: psycopg.Connection[Any]) -> uuid.UUID:
    tenant, user = factories.add_tenant(owner), factories.add_user(owner)
    factories.add_member(owner, tenant, user)
    owner.execute(
        "insert into public.usage_prices (model, currency, input_per_million, output_per_million, effective_from)"
        " values ('gpt-test', 'USD', 2, 10, '2026-01-01')"
    )
    return factories.add_event(
        owner, tenant_id=tenant, user_id=user, tokens_input=1000, tokens_output=100, metadata={"model": "gpt-test"}
    )


def test_void_prints_the_entry_and_takes_the_event_back(
    database_url: str, owner: psycopg.Connection[Any], event: uuid.UUID
) -> None:
    result = usagemeter("void", str(event), "--reason", "duplicate", "--database-url", database_url)
    assert result.returncode == 0, result.stderr
    entry = json.loads(result.stdout)
    assert entry == {
        "entry_id": entry["entry_id"], "event_id": str(event), "kind": "void", "tokens_input": -1000,
        "tokens_output": -100, "cost": "-0.003000", "event_count": -1, "reason": "duplicate",
    }  # fmt: skip
    row = owner.execute(
        "select sum(event_count), sum(tokens_input), sum(cost) from public.usage_events"
        " where id = %s or corrects_event_id = %s",
        (event, event),
    ).fetchone()
    assert row == (0, 0, Decimal(0))

    again = usagemeter("void", str(event), "--reason", "duplicate", "--database-url", database_url)
    assert again.returncode == 1
    assert again.stderr.strip() == f"error: event {event} is already void"
    assert again.stdout == ""


def test_amend_prints_the_change(database_url: str, owner: psycopg.Connection[Any], event: uuid.UUID) -> None:
    result = usagemeter(
        "amend", str(event), "--tokens-in", "3000", "--tokens-out", "0", "--reason", "undercount",
        "--database-url", database_url,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    entry = json.loads(result.stdout)
    assert {k: entry[k] for k in ("event_id", "kind", "tokens_input", "tokens_output", "cost", "event_count")} == {
        "event_id": str(event), "kind": "amend", "tokens_input": 2000, "tokens_output": -100, "cost": "0.003000",
        "event_count": 0,
    }  # fmt: skip
    row = owner.execute("select correction_reason from public.usage_events where id = %s", (entry["entry_id"],))
    assert row.fetchone() == ("undercount",)


@pytest.mark.parametrize("command", [["void"], ["amend", "--tokens-in", "1", "--tokens-out", "1"]])
def test_an_unknown_event_is_one_clear_line_and_exit_1(
    database_url: str, owner: psycopg.Connection[Any], event: uuid.UUID, command: list[str]
) -> None:
    unknown = uuid.uuid4()
    result = usagemeter(*command, str(unknown), "--reason", "r", "--database-url", database_url)
    assert result.returncode == 1
    assert result.stderr.strip() == f"error: no usage event has id {unknown}"
    assert "Traceback" not in result.stderr
    assert factories.count_events(owner) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["void", "not-a-uuid", "--reason", "r"], "Invalid value for 'EVENT_ID'"),
        (["void", "EVENT", "--reason", " "], "error: --reason: a correction needs a reason"),
        (["amend", "EVENT", "--tokens-in", "-1", "--tokens-out", "0", "--reason", "r"], "error: --tokens-in: must be"),
        (["amend", "EVENT", "--tokens-in", "1", "--tokens-out", str(2**31), "--reason", "r"], "error: --tokens-out:"),
        (["amend", "EVENT", "--tokens-in", "1", "--reason", "r"], "--tokens-out"),
    ],
)
def test_bad_input_is_a_usage_error_and_changes_nothing(
    database_url: str, owner: psycopg.Connection[Any], event: uuid.UUID, args: list[str], message: str
) -> None:
    args = [str(event) if a == "EVENT" else a for a in args]
    result = usagemeter(*args, "--database-url", database_url)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert factories.count_events(owner) == 1
