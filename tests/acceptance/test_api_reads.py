"""Reading over HTTP: summaries equal to `usagemeter report`, listings, exports, quotas, statements; RLS decides."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests import factories
from tests.acceptance.test_cli_database import usagemeter
from tests.http_server import RunningApi
from usagemeter import db
from usagemeter.billing import budgets
from usagemeter.ops import partitions, retention

JUNE = {"from": "2026-06-01", "to": "2026-07-01"}


@pytest.fixture
def world(owner: psycopg.Connection[Any]) -> dict[str, Any]:
    """Two tenants, a member of each, an outsider, a Personal user, and June usage for each."""
    acme, globex = factories.add_tenant(owner), factories.add_tenant(owner)
    alice, bob, carol, pat = (factories.add_user(owner) for _ in range(4))
    factories.add_member(owner, acme, alice, "owner")
    factories.add_member(owner, globex, bob)
    rows = [
        (acme, alice, "agency:scope:generate", 100, 10, datetime(2026, 6, 1, 9, tzinfo=UTC)),
        (acme, alice, "agency:brief:summarize", 50, 5, datetime(2026, 6, 2, 9, tzinfo=UTC)),
        (acme, alice, "chat:message:reply", 7, 3, datetime(2026, 6, 2, 23, 30, tzinfo=UTC)),
        (globex, bob, "agency:scope:generate", 9999, 1, datetime(2026, 6, 1, 9, tzinfo=UTC)),
        (None, pat, "chat:message:reply", 42, 2, datetime(2026, 6, 3, 9, tzinfo=UTC)),
        (None, alice, "chat:message:reply", 5, 5, datetime(2026, 6, 4, 9, tzinfo=UTC)),
    ]
    for row in rows:
        owner.execute(
            "insert into public.usage_events (tenant_id, user_id, action, tokens_input, tokens_output, created_at)"
            " values (%s, %s, %s, %s, %s, %s)",
            row,
        )
    return {"acme": acme, "globex": globex, "alice": alice, "bob": bob, "carol": carol, "pat": pat}


def total_input(rows: list[dict[str, Any]]) -> int:
    return sum(r["tokens_input"] for r in rows)


def test_usage_is_the_json_report_prints(api_server: RunningApi, database_url: str, world: dict[str, Any]) -> None:
    params = {"tenant": str(world["acme"]), **JUNE, "by": "action,module", "bucket": "day", "tz": "Europe/Paris"}
    answer = api_server.as_user(world["alice"]).get("/v1/usage", params=params)
    assert answer.status_code == 200, answer.text
    printed = usagemeter(
        "report",
        "--database-url",
        database_url,
        "--as-user",
        str(world["alice"]),
        "--tenant",
        str(world["acme"]),
        "--from",
        "2026-06-01",
        "--to",
        "2026-07-01",
        "--by",
        "action,module",
        "--bucket",
        "day",
        "--tz",
        "Europe/Paris",
        "--format",
        "json",
    )
    assert printed.returncode == 0, printed.stderr
    assert answer.json() == json.loads(printed.stdout)
    assert total_input(answer.json()) == 157


@pytest.mark.parametrize(
    ("actor", "scope", "expected_input"),
    [
        ("alice", {"tenant": "acme"}, 157),
        ("alice", {"tenant": "globex"}, 0),
        ("alice", {"all": "true"}, 162),  # acme plus her personal row
        ("alice", {"user": "alice"}, 5),
        ("alice", {"user": "pat"}, 0),
        ("bob", {"all": "true"}, 9999),
        ("bob", {"tenant": "acme"}, 0),
        ("carol", {"all": "true"}, 0),
        ("carol", {"tenant": "acme"}, 0),
        ("pat", {"all": "true"}, 42),
        ("pat", {"user": "pat"}, 42),
        ("service", {"all": "true"}, 10203),
    ],
)  # each with tokens signed by the secret (HS256) and by keys of a JWKS (RS256, ES256)
def test_each_caller_sees_what_the_policies_allow(
    signed_api: RunningApi, world: dict[str, Any], actor: str, scope: dict[str, str], expected_input: int
) -> None:
    client = signed_api.as_service() if actor == "service" else signed_api.as_user(world[actor])
    params = {key: (value if value == "true" else str(world[value])) for key, value in scope.items()}
    usage = client.get("/v1/usage", params={**params, **JUNE})
    assert usage.status_code == 200, usage.text
    assert total_input(usage.json()) == expected_input
    listed = client.get("/v1/events", params={**params, **JUNE, "limit": 100})
    assert listed.status_code == 200
    assert total_input(listed.json()["events"]) == expected_input
    exported = client.get("/v1/export", params={**params, **JUNE, "format": "jsonl"})
    assert exported.status_code == 200
    lines = [json.loads(line) for line in exported.text.splitlines()]
    assert total_input(lines) == expected_input


def test_listing_pages_with_a_cursor(
    api_server: RunningApi, owner: psycopg.Connection[Any], world: dict[str, Any]
) -> None:
    start = datetime(2026, 5, 1, tzinfo=UTC)
    for n in range(230):
        owner.execute(
            "insert into public.usage_events (tenant_id, user_id, action, tokens_input, created_at)"
            " values (%s, %s, 'support:ticket:classify', %s, %s)",
            (world["globex"], world["bob"], n, start + timedelta(minutes=n)),
        )
    client = api_server.as_user(world["bob"])
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {
            "tenant": str(world["globex"]),
            "from": "2026-05-01",
            "to": "2026-06-01",
            "limit": 100,
        }
        if cursor:
            params["cursor"] = cursor
        page = client.get("/v1/events", params=params).json()
        seen += [e["id"] for e in page["events"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == 230
    bad = client.get("/v1/events", params={"tenant": str(world["globex"]), "cursor": "garbage!"})
    assert bad.status_code == 422
    assert bad.json()["field"] == "cursor"


def test_export_streams_csv_with_a_header(api_server: RunningApi, world: dict[str, Any]) -> None:
    answer = api_server.as_user(world["alice"]).get("/v1/export", params={"tenant": str(world["acme"]), **JUNE})
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/csv")
    assert "attachment" in answer.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(answer.text)))
    assert sorted(int(r["tokens_input"]) for r in rows) == [7, 50, 100]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({}, "tenant"),
        ({"tenant": "acme", "user": "alice"}, "tenant"),
        ({"all": "true", "tz": "Mars/Olympus"}, "tz"),
        ({"all": "true", "from": "June"}, "start"),
        ({"all": "true", "by": "colour"}, "group_by"),
        ({"all": "true", "from": "2026-07-01", "to": "2026-06-01"}, None),
        ({"all": "true", "bucket": "fortnight"}, "query.bucket"),
        ({"tenant": "not-a-uuid"}, "query.tenant"),
    ],
)
def test_bad_parameters_are_named(
    api_server: RunningApi, world: dict[str, Any], params: dict[str, str], field: str | None
) -> None:
    resolved = {k: str(world[v]) if v in world else v for k, v in params.items()}
    answer = api_server.as_user(world["alice"]).get("/v1/usage", params=resolved)
    assert answer.status_code == 422, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    if field is not None:
        problem = answer.json()
        named = problem.get("field") or problem["errors"][0]["field"]
        assert named.startswith(field)


def test_quotas_show_what_the_caller_may_read(
    api_server: RunningApi, app_database_url: str, world: dict[str, Any]
) -> None:
    with db.connect_app(app_database_url, autocommit=True) as conn:
        budgets.set_budget(
            conn,
            budgets.BudgetSpec(
                tenant_id=world["acme"], metric="tokens", limit=Decimal(1000), period="total", mode="soft"
            ),
        )
    alice = api_server.as_user(world["alice"])
    posted = alice.post(
        "/v1/events",
        json={
            "action": "agency:scope:generate",
            "tenant_id": str(world["acme"]),
            "tokens_input": 30,
            "tokens_output": 4,
        },
    )
    assert posted.status_code == 201
    mine = alice.get("/v1/quotas")
    assert mine.status_code == 200
    # prepaid credit (`total`) counts from when it was set: June's usage is before it
    assert [(b["tenant_id"], b["limit"], b["used"]) for b in mine.json()] == [(str(world["acme"]), "1000", "34")]
    assert api_server.as_user(world["bob"]).get("/v1/quotas").json() == []


def test_statements_of_a_month(api_server: RunningApi, world: dict[str, Any]) -> None:
    answer = api_server.as_user(world["alice"]).get(f"/v1/statements/{world['acme']}/2026-06")
    assert answer.status_code == 200, answer.text
    statement = answer.json()
    assert sum(line["events"] for line in statement["lines"]) == 3
    assert statement["tenant_id"] == str(world["acme"])
    outsider = api_server.as_user(world["bob"]).get(f"/v1/statements/{world['acme']}/2026-06").json()
    assert outsider["lines"] == []
    as_csv = api_server.as_user(world["alice"]).get(f"/v1/statements/{world['acme']}/2026-06", params={"format": "csv"})
    assert as_csv.text.splitlines()[0].startswith("action,model,events")
    bad = api_server.as_user(world["alice"]).get(f"/v1/statements/{world['acme']}/June")
    assert bad.status_code == 422


def test_months_retention_took_out_still_summarize_and_are_named_in_a_header(
    api_server: RunningApi, database_url: str, owner: psycopg.Connection[Any], world: dict[str, Any], tmp_path: Path
) -> None:
    params = {"tenant": str(world["acme"]), **JUNE, "by": "action"}
    before = api_server.as_user(world["alice"]).get("/v1/usage", params=params)
    assert "usagemeter-archived-months" not in before.headers
    partitions.move_out_of_default(owner)
    retention.Retention(owner, keep_months=1, archive_dir=tmp_path).run()

    after = api_server.as_user(world["alice"]).get("/v1/usage", params=params)
    assert after.status_code == 200, after.text
    assert after.json() == before.json()  # from the rollups
    assert after.headers["usagemeter-archived-months"] == "2026-06"
    listed = api_server.as_user(world["alice"]).get("/v1/events", params={"tenant": str(world["acme"]), **JUNE})
    assert listed.json()["events"] == []
    assert listed.headers["usagemeter-archived-months"] == "2026-06"
    statement = api_server.as_user(world["alice"]).get(f"/v1/statements/{world['acme']}/2026-06")
    assert statement.json()["raw_events_archived"] is True
    assert sum(line["tokens_input"] for line in statement.json()["lines"]) == 157
    edge = api_server.as_user(world["alice"]).get("/v1/usage", params={**params, "from": "2026-06-01T00:30:00Z"})
    assert edge.status_code == 422  # half an hour of raw events it no longer has
    assert "taken out by retention" in edge.json()["detail"]

    printed = usagemeter("report", "--database-url", database_url, "--tenant", str(world["acme"]),
                         "--from", "2026-06-01", "--to", "2026-07-01", "--format", "json")  # fmt: skip
    assert printed.returncode == 0, printed.stderr
    assert "raw events of 2026-06 (UTC) were taken out by retention" in printed.stderr
