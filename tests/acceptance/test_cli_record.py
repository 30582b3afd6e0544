"""`usagemeter record` as scripts use it: flags, JSON Lines files and stdin, output lines and exit codes."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import psycopg

from tests import factories
from tests.acceptance.test_cli_database import usagemeter


def outputs(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def test_one_event_from_flags_and_its_idempotent_retry(database_url: str, owner: psycopg.Connection[Any]) -> None:
    tenant, user = factories.add_tenant(owner), factories.add_user(owner)
    flags = [
        "record", "--database-url", database_url, "--tenant", str(tenant), "--user", str(user),
        "--action", "agency:scope:generate", "--tokens-in", "120", "--tokens-out", "30",
        "--metadata", '{"model": "gpt"}', "--idempotency-key", "job-7",
    ]  # fmt: skip
    first = usagemeter(*flags)
    assert first.returncode == 0, first.stderr
    (line,) = outputs(first.stdout)
    assert line["line"] == 1
    assert line["duplicate"] is False
    again = usagemeter(*flags)
    assert outputs(again.stdout) == [{"line": 1, "id": line["id"], "duplicate": True}]
    row = owner.execute("select id, tokens_total, metadata, module_id from public.usage_events").fetchone()
    assert row == (uuid.UUID(line["id"]), 150, {"model": "gpt"}, "agency")


def test_a_file_with_bad_lines_stores_the_good_ones_and_exits_1(
    database_url: str, owner: psycopg.Connection[Any], tmp_path: Path
) -> None:
    user = factories.add_user(owner)
    lines = [
        json.dumps({"action": "a:b:c", "user_id": str(user), "tokens_input": 1}),
        "not json",
        json.dumps({"action": "Bad", "user_id": str(user)}),
        "",
        json.dumps({"action": "a:b:c", "user_id": str(user), "tenant_id": str(uuid.uuid4())}),
        json.dumps({"action": "a:b:c", "user_id": str(user), "tokens_input": 2}),
    ]
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(lines) + "\n")
    result = usagemeter("record", "--database-url", database_url, "--file", str(path))
    assert result.returncode == 1
    by_line = {o["line"]: o for o in outputs(result.stdout)}
    assert set(by_line) == {1, 2, 3, 5, 6}
    assert "id" in by_line[1]
    assert "id" in by_line[6]
    assert by_line[2]["error"].startswith("not JSON")
    assert by_line[3]["error"].startswith("action:")
    assert by_line[5]["error"] == "unknown tenant_id (no such tenant)"
    assert factories.count_events(owner) == 2


def test_strict_mode_stores_nothing_when_a_line_is_invalid(database_url: str, owner: psycopg.Connection[Any]) -> None:
    user = factories.add_user(owner)
    good = json.dumps({"action": "a:b:c", "user_id": str(user)})
    bad = json.dumps({"action": "a:b:c", "user_id": str(user), "tokens_input": -1})
    result = usagemeter("record", "--database-url", database_url, "--file", "-", "--strict", stdin=f"{good}\n{bad}\n")
    assert result.returncode == 1
    assert outputs(result.stdout) == [{"line": 2, "error": "tokens_input: Input should be greater than or equal to 0"}]
    assert factories.count_events(owner) == 0
    ok = usagemeter("record", "--database-url", database_url, "--file", "-", "--strict", stdin=f"{good}\n{good}\n")
    assert ok.returncode == 0
    assert factories.count_events(owner) == 2


def test_as_user_is_bound_by_rls(database_url: str, owner: psycopg.Connection[Any]) -> None:
    tenant, alice, bob = factories.add_tenant(owner), factories.add_user(owner), factories.add_user(owner)
    result = usagemeter(
        "record", "--database-url", database_url, "--as-user", str(alice), "--user", str(bob),
        "--tenant", str(tenant), "--action", "a:b:c",
    )  # fmt: skip
    assert result.returncode == 1
    assert "row-level security" in outputs(result.stdout)[0]["error"]
    assert factories.count_events(owner) == 0


def test_usage_errors_exit_2(database_url: str, tmp_path: Path) -> None:
    assert usagemeter("record", "--database-url", database_url).returncode == 2
    assert usagemeter("record", "--database-url", database_url, "--action", "a:b:c", "--file", "-").returncode == 2
    assert usagemeter("record", "--database-url", database_url, "--action", "a:b:c", "--user", "nope").returncode == 2
    bad_json = usagemeter("record", "--database-url", database_url, "--action", "a:b:c", "--metadata", "{")
    assert bad_json.returncode == 2
    missing = usagemeter("record", "--database-url", database_url, "--file", str(tmp_path / "missing.jsonl"))
    assert missing.returncode == 2


def test_each_bad_line_gets_its_own_error_and_the_rest_are_stored(
    database_url: str, owner: psycopg.Connection[Any], tmp_path: Path
) -> None:
    alice = factories.add_user(owner)
    good = json.dumps({"action": "a:b:c", "tokens_input": 1}).encode()  # no user_id: --as-user fills it
    lines = [
        good,
        json.dumps({"action": "a:b:c", "created_at": "2026-01-01T00:00:00Z"}).encode(),  # users cannot backdate
        b'{"action": "a:b:c", "idempotency_key": "req-\\udc80"}',  # a lone surrogate
        b'{"action": "a:b:c", "module_id": "caf\xe9"}',  # Latin-1, not UTF-8
        b"[" * 5000 + b"]" * 5000,  # nested deeper than the parser goes
        good,
    ]
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    result = usagemeter("record", "--database-url", database_url, "--as-user", str(alice), "--file", str(path))
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    by_line = {o["line"]: o for o in outputs(result.stdout)}
    assert set(by_line) == {1, 2, 3, 4, 5, 6}
    assert "id" in by_line[1]
    assert "id" in by_line[6]
    assert "created_at may only be set by the service role" in by_line[2]["error"]
    assert "surrogate" in by_line[3]["error"]
    assert by_line[4]["error"] == "not UTF-8: byte 0xe9 at column 38"
    assert "nested too deeply" in by_line[5]["error"]
    rows = owner.execute("select user_id from public.usage_events").fetchall()
    assert rows == [(alice,), (alice,)]
