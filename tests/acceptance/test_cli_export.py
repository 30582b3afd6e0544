"""`usagemeter export`: files a spreadsheet or pandas opens as is, under RLS, in constant memory."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pyarrow.parquet as pq
import pytest

from tests import factories
from tests.acceptance.test_cli_database import usagemeter
from tests.acceptance.test_cli_report import assert_one_clean_error

YEAR = ("--from", "2026-01-01", "--to", "2027-01-01")


@pytest.fixture
def two_tenants(owner: psycopg.Connection[Any]) -> dict[str, Any]:
    tenant, other = factories.add_tenant(owner), factories.add_tenant(owner)
    alice, bob = factories.add_user(owner), factories.add_user(owner)
    factories.add_member(owner, tenant, alice)
    factories.add_member(owner, other, bob)
    for i in range(30):
        owner.execute(
            "insert into public.usage_events (tenant_id, user_id, action, tokens_input, metadata, created_at)"
            " values (%s, %s, %s, %s, %s, %s)",
            (
                tenant if i % 3 else other,
                alice if i % 3 else bob,
                "agency:scope:generate" if i % 2 else "chat:message:send",
                i,
                json.dumps({"i": i, "quote": 'say "hi", then\nleave'}),
                datetime(2026, 6, 1 + i % 28, tzinfo=UTC),
            ),
        )
    return {"tenant": tenant, "alice": alice}


def test_csv_opens_as_a_table_with_a_header(database_url: str, two_tenants: dict[str, Any]) -> None:
    result = usagemeter("export", "--database-url", database_url, "--all", *YEAR)
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert len(rows) == 30
    assert sum(int(r["tokens_input"]) for r in rows) == sum(range(30))
    assert json.loads(rows[0]["metadata"])["quote"] == 'say "hi", then\nleave'
    assert [r["created_at"] for r in rows] == sorted(r["created_at"] for r in rows)
    assert rows[0]["created_at"].endswith("+00")


def test_jsonl_and_rls_as_a_member(database_url: str, two_tenants: dict[str, Any]) -> None:
    result = usagemeter(
        "export", "--database-url", database_url, "--all", *YEAR, "--format", "jsonl",
        "--as-user", str(two_tenants["alice"]), "--action-prefix", "agency:",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert events
    assert {e["tenant_id"] for e in events} == {str(two_tenants["tenant"])}
    assert {e["action"] for e in events} == {"agency:scope:generate"}
    assert all(isinstance(e["metadata"], dict) for e in events)


def test_parquet_reads_back_typed(database_url: str, two_tenants: dict[str, Any], tmp_path: Path) -> None:
    target = tmp_path / "usage.parquet"
    result = usagemeter(
        "export", "--database-url", database_url, "--tenant", str(two_tenants["tenant"]), *YEAR,
        "--format", "parquet", "--output", str(target), "--metadata", '{"quote": "say \\"hi\\", then\\nleave"}',
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    table = pq.read_table(target)
    assert table.num_rows == 20
    assert str(table.schema.field("created_at").type) == "timestamp[us, tz=UTC]"
    assert str(table.schema.field("tokens_input").type) == "int32"


def test_bad_export_input_exits_2(database_url: str) -> None:
    assert usagemeter("export", "--database-url", database_url, "--all", "--format", "xml").returncode == 2
    assert usagemeter("export", "--database-url", database_url, "--all", "--format", "parquet").returncode == 2
    assert usagemeter("export", "--database-url", database_url, "--all", "--metadata", "{").returncode == 2
    inverted = usagemeter(
        "export", "--database-url", database_url, "--all", "--from", "2026-02-01", "--to", "2026-01-01"
    )
    assert inverted.returncode == 2
    assert "inverted" in inverted.stderr


PEAK_RSS = """
import resource, subprocess, sys
subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, check=True)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def peak_rss_kib(database_url: str, fmt: str, target: Path) -> int:
    command = [sys.executable, "-m", "usagemeter", "export", "--database-url", database_url, "--all", *YEAR,
               "--format", fmt, "--output", str(target)]  # fmt: skip
    result = subprocess.run([sys.executable, "-c", PEAK_RSS, *command], capture_output=True, text=True, check=True)
    return int(result.stdout.strip())


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_export_memory_does_not_grow_with_the_number_of_events(
    database_url: str, owner: psycopg.Connection[Any], tmp_path: Path, fmt: str
) -> None:
    user = factories.add_user(owner)
    insert = (
        "insert into public.usage_events (tenant_id, user_id, action, metadata, created_at)"
        " select null, %s, 'agency:scope:generate', jsonb_build_object('pad', repeat('x', 200)),"
        " '2026-06-01'::timestamptz + n * interval '1 second' from generate_series(1, %s) as n"
    )
    owner.execute(insert, (user, 20_000))
    small = peak_rss_kib(database_url, fmt, tmp_path / f"small.{fmt}")
    owner.execute(insert, (user, 280_000))
    large = peak_rss_kib(database_url, fmt, tmp_path / f"large.{fmt}")
    assert (tmp_path / f"large.{fmt}").stat().st_size > 10 * (tmp_path / f"small.{fmt}").stat().st_size
    assert large - small < 64 * 1024, f"peak memory grew by {(large - small) // 1024} MiB for 14x the events"


@pytest.mark.parametrize(
    ("arguments", "flag", "message"),
    [
        (("--metadata", '{"a":' * 5000 + "1" + "}" * 5000), "--metadata", "nested too deeply"),
        (("--metadata", '{"a":' * 200 + "1" + "}" * 200), "--metadata", "nested too deeply"),
        (("--metadata", '{"a": 1e999}'), "--metadata", "numbers must be finite"),
        (("--metadata", '{"a": NaN}'), "--metadata", "numbers must be finite"),
        (("--metadata", '{"a": "\\u0000"}'), "--metadata", "NUL"),
        (("--metadata", '{"a": "\\ud800"}'), "--metadata", "valid Unicode"),
        (("--output", "/nonexistent/x.csv"), "--output", "/nonexistent/x.csv"),
        (("--from", "0001-01-01", "--tz", "Asia/Tokyo"), "--from", "earliest"),
    ],
)
def test_bad_input_is_one_error_line_and_exit_2(
    database_url: str, arguments: tuple[str, ...], flag: str, message: str
) -> None:
    result = usagemeter("export", "--database-url", database_url, "--all", *arguments)
    assert_one_clean_error(result, flag)
    assert message in result.stderr
