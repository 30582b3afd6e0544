"""`usagemeter budget`, as an operator runs it: one JSON object per line out, one clear line on error."""

from __future__ import annotations

import json
import uuid
from typing import Any

import psycopg
import pytest

from tests import factories
from tests.acceptance.test_cli_database import usagemeter


@pytest.fixture
def tenant(owner: psycopg.Connection[Any]) -> dict[str, uuid.UUID]:
    tenant, user = factories.add_tenant(owner), factories.add_user(owner)
    factories.add_member(owner, tenant, user)
    return {"tenant": tenant, "user": user}


def test_set_list_check_and_delete_a_budget(
    database_url: str, owner: psycopg.Connection[Any], tenant: dict[str, uuid.UUID]
) -> None:
    tenant_id = str(tenant["tenant"])
    made = usagemeter(
        "budget", "set", "--tenant", tenant_id, "--metric", "events", "--limit", "3", "--window", "month",
        "--mode", "hard", "--database-url", database_url,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    [line] = made.stdout.splitlines()
    budget = json.loads(line)
    budget_id = str(uuid.UUID(budget["id"]))
    assert (budget["metric"], budget["limit"], budget["used"], budget["mode"]) == ("events", "3", "0", "hard")

    listed = usagemeter("budget", "list", "--tenant", tenant_id, "--format", "json", "--database-url", database_url)
    assert listed.returncode == 0, listed.stderr
    [status] = [json.loads(line) for line in listed.stdout.splitlines()]
    assert {k: status[k] for k in ("id", "metric", "limit", "used", "mode", "window")} == {
        "id": budget_id, "metric": "events", "limit": "3", "used": "0", "mode": "hard", "window": "month",
    }  # fmt: skip
    assert status["window_start"] < status["window_end"]

    check = ("budget", "check", "--tenant", tenant_id, "--action", "agency:scope:generate", "--events", "3")
    allowed = usagemeter(*check, "--database-url", database_url)
    assert allowed.returncode == 0, allowed.stderr
    answer = json.loads(allowed.stdout)
    assert answer["allowed"] is True
    assert [(b["budget_id"], b["remaining"]) for b in answer["budgets"]] == [(budget_id, "3")]

    factories.add_event(owner, tenant_id=tenant["tenant"], user_id=tenant["user"])
    refused = usagemeter(*check, "--database-url", database_url)
    assert refused.returncode == 1
    answer = json.loads(refused.stdout)
    assert answer["allowed"] is False
    assert [(b["used"], b["requested"], b["allowed"]) for b in answer["budgets"]] == [("1", "3", False)]

    deleted = usagemeter("budget", "delete", budget_id, "--database-url", database_url)
    assert deleted.returncode == 0, deleted.stderr
    assert json.loads(deleted.stdout) == {"deleted": budget_id}
    assert owner.execute("select count(*) from public.usage_budgets").fetchone() == (0,)
    again = usagemeter("budget", "list", "--tenant", tenant_id, "--database-url", database_url)
    assert (again.returncode, again.stdout) == (0, "")

    gone = usagemeter("budget", "delete", budget_id, "--database-url", database_url)
    assert gone.returncode == 1
    assert budget_id in gone.stderr
    assert "Traceback" not in gone.stderr


def test_set_on_an_unknown_tenant_exits_1_with_a_clear_message(
    database_url: str, owner: psycopg.Connection[Any]
) -> None:
    unknown = str(uuid.uuid4())
    result = usagemeter(
        "budget", "set", "--tenant", unknown, "--metric", "events", "--limit", "3", "--window", "month",
        "--mode", "hard", "--database-url", database_url,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.strip() == f"error: tenant: no tenant has id {unknown}; a budget's scope must exist"
    assert owner.execute("select count(*) from public.usage_budgets").fetchone() == (0,)


def test_a_cost_budget_without_a_currency_is_a_usage_error(
    database_url: str, owner: psycopg.Connection[Any], tenant: dict[str, uuid.UUID]
) -> None:
    result = usagemeter(
        "budget", "set", "--tenant", str(tenant["tenant"]), "--metric", "cost", "--limit", "10", "--window", "month",
        "--mode", "hard", "--database-url", database_url,
    )  # fmt: skip
    assert result.returncode == 2
    assert "currency" in result.stderr
    assert "Traceback" not in result.stderr
    assert owner.execute("select count(*) from public.usage_budgets").fetchone() == (0,)


def test_set_a_total_budget_prints_it(database_url: str, tenant: dict[str, uuid.UUID]) -> None:
    result = usagemeter(
        "budget", "set", "--tenant", str(tenant["tenant"]), "--metric", "events", "--limit", "3", "--window", "total",
        "--mode", "hard", "--database-url", database_url,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["window_end"] is None
