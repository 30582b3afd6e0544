"""`usagemeter report`: scopes, groupings, formats, charts and exit codes, as a user runs it."""

from __future__ import annotations

import csv
import io
import json
import subprocess
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest

from tests import factories
from tests.acceptance.test_cli_database import usagemeter


@pytest.fixture
def usage(owner: psycopg.Connection[Any]) -> dict[str, Any]:
    tenant, other = factories.add_tenant(owner), factories.add_tenant(owner)
    alice, bob = factories.add_user(owner), factories.add_user(owner)
    factories.add_member(owner, tenant, alice)
    factories.add_member(owner, other, bob)
    rows = [
        (tenant, alice, "agency:scope:generate", 100, 10, datetime(2026, 6, 1, 9, tzinfo=UTC)),
        (tenant, alice, "agency:scope:generate", 50, 5, datetime(2026, 6, 2, 9, tzinfo=UTC)),
        (tenant, alice, "chat:message:send", 7, 3, datetime(2026, 6, 2, 23, 30, tzinfo=UTC)),
        (other, bob, "agency:scope:generate", 9999, 1, datetime(2026, 6, 1, 9, tzinfo=UTC)),
        (tenant, alice, "agency:scope:generate", 1, 1, datetime(2026, 7, 1, 0, tzinfo=UTC)),  # outside June
    ]
    for row in rows:
        owner.execute(
            "insert into public.usage_events (tenant_id, user_id, action, tokens_input, tokens_output, created_at)"
            " values (%s, %s, %s, %s, %s, %s)",
            row,
        )
    return {"tenant": tenant, "alice": alice}


JUNE = ("--from", "2026-06-01", "--to", "2026-07-01")


def test_json_by_action_for_a_tenant(database_url: str, usage: dict[str, Any]) -> None:
    result = usagemeter(
        "report", "--database-url", database_url, "--tenant", str(usage["tenant"]), *JUNE, "--by", "action",
        "--format", "json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert sorted(json.loads(result.stdout), key=lambda r: r["action"]) == [
        {
            "action": "agency:scope:generate",
            "events": 2,
            "tokens_input": 150,
            "tokens_output": 15,
            "tokens_total": 165,
            "cost": "0.000000",
            "currency": None,
        },
        {
            "action": "chat:message:send",
            "events": 1,
            "tokens_input": 7,
            "tokens_output": 3,
            "tokens_total": 10,
            "cost": "0.000000",
            "currency": None,
        },
    ]


def test_day_buckets_follow_the_time_zone_and_are_zero_filled(database_url: str, usage: dict[str, Any]) -> None:
    result = usagemeter(
        "report", "--database-url", database_url, "--tenant", str(usage["tenant"]), "--from", "2026-06-01",
        "--to", "2026-06-05", "--bucket", "day", "--tz", "Europe/Paris", "--format", "csv",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    # Dates are midnights in --tz; buckets start at Paris midnight (22:00 UTC in summer).
    assert [r["bucket"] for r in rows] == [f"2026-06-0{d}T00:00:00+02:00" for d in (1, 2, 3, 4)]
    # 23:30 UTC on June 2 is 01:30 on June 3 in Paris.
    assert [int(r["events"]) for r in rows] == [1, 1, 1, 0]


def test_a_member_sees_only_their_tenant_with_all(database_url: str, usage: dict[str, Any]) -> None:
    result = usagemeter(
        "report", "--database-url", database_url, "--all", *JUNE, "--as-user", str(usage["alice"]), "--format", "json"
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [
        {
            "events": 3,
            "tokens_input": 157,
            "tokens_output": 18,
            "tokens_total": 175,
            "cost": "0.000000",
            "currency": None,
        }
    ]


def test_table_with_chart_is_for_people(database_url: str, usage: dict[str, Any]) -> None:
    result = usagemeter(
        "report", "--database-url", database_url, "--all", *JUNE, "--by", "module", "--bucket", "week", "--chart",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "module_id" in result.stdout
    assert "█" in result.stdout
    assert "tokens per bucket (UTC)" in result.stdout


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (("--all", "--by", "tenant"), "--by"),
        (("--all", "--from", "2026-07-01", "--to", "2026-06-01"), "inverted"),
        (("--all", "--tz", "Mars/Olympus"), "unknown time zone"),
        (("--all", "--from", "June"), "--from"),
        ((), "exactly one of"),
        (("--all", "--chart"), "--chart needs --bucket"),
        (("--all", "--bucket", "fortnight"), "bucket"),
    ],
)
def test_bad_input_exits_2_with_a_clear_message(database_url: str, arguments: tuple[str, ...], message: str) -> None:
    result = usagemeter("report", "--database-url", database_url, *arguments)
    assert result.returncode == 2
    assert message in result.stderr


def test_rollup_check_and_rebuild(database_url: str, usage: dict[str, Any], owner: psycopg.Connection[Any]) -> None:
    folded = usagemeter("rollup", "--database-url", database_url, "--fold")
    assert folded.returncode == 0
    assert "folded" in folded.stdout
    assert owner.execute("select count(*) from public.usage_rollup_deltas").fetchone() == (0,)
    owner.execute("update public.usage_rollup_daily set tokens_input = tokens_input + 1")
    broken = usagemeter("rollup", "--database-url", database_url)
    assert broken.returncode == 1
    assert "differ from the raw events" in broken.stderr
    rebuilt = usagemeter("rollup", "--database-url", database_url, "--rebuild")
    assert rebuilt.returncode == 0
    assert "the rollups equal the raw events" in rebuilt.stdout


def assert_one_clean_error(result: subprocess.CompletedProcess[str], flag: str) -> None:
    """Exit 2, one error line naming the flag, no traceback."""
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error:"), lines[0]
    assert flag in lines[0], lines[0]


@pytest.mark.parametrize(
    ("arguments", "flag"),
    [
        (("--to", "9999-12-31T23:00", "--tz", "America/Los_Angeles"), "--to"),
        (("--from", "0001-01-01", "--tz", "Asia/Tokyo"), "--from"),
        (("--tz", "right/UTC", "--bucket", "day"), "--tz"),
        (("--from", "1990-01-01", "--to", "2030-01-01", "--bucket", "hour", "--by", "action,user"), "--bucket"),
        (("--top", "0"), "--top"),
    ],
)
def test_out_of_range_input_is_one_error_line_and_exit_2(
    database_url: str, arguments: tuple[str, ...], flag: str
) -> None:
    assert_one_clean_error(usagemeter("report", "--database-url", database_url, "--all", *arguments), flag)


def test_the_table_prints_actions_and_models_as_they_are(database_url: str, owner: psycopg.Connection[Any]) -> None:
    """`:ticket:` is an emoji code and `[bold]` markup to rich: neither may change what a cell says."""
    tenant, user = factories.add_tenant(owner), factories.add_user(owner)
    factories.add_event(owner, tenant_id=tenant, user_id=user, action="support:ticket:classify",
                        metadata={"model": "[bold]m[/]"})  # fmt: skip
    result = usagemeter("report", "--database-url", database_url, "--tenant", str(tenant), "--by", "action,model")
    assert result.returncode == 0, result.stderr
    assert "support:ticket:classify" in result.stdout
    assert "[bold]m[/]" in result.stdout
