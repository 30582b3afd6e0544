"""`usagemeter prices load` and `prices list`, as a user runs them: files in, JSON out, exit codes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests import factories
from tests.acceptance.test_cli_database import usagemeter
from usagemeter.billing import price_files

CSV = """model,action,tenant_id,currency,input_per_million,output_per_million,per_event,effective_from,cached_input_per_million,cache_write_per_million
gpt-4o,,,USD,2.50,10.00,,2026-03-01,1.25,
gpt-4o,,,USD,5,20,,2026-03-15T00:00:00+01:00,,
"""  # noqa: E501 - a price file's header is one line


def one_line(stream: str) -> str:
    """Output with rich's line wrapping undone, so a long message is found whatever the terminal width."""
    return " ".join(stream.split())


def price_count(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("select count(*) from public.usage_prices").fetchone()
    assert row is not None
    return int(row[0])


def listed(database_url: str, *arguments: str) -> list[dict[str, Any]]:
    result = usagemeter("prices", "list", "--database-url", database_url, "--format", "json", *arguments)
    assert result.returncode == 0, result.stderr
    records: list[dict[str, Any]] = json.loads(result.stdout)
    return records


def test_load_a_csv_and_a_json_file_then_list_them(
    database_url: str, owner: psycopg.Connection[Any], tmp_path: Path
) -> None:
    tenant = factories.add_tenant(owner)
    (tmp_path / "tokens.csv").write_text(CSV, encoding="utf-8")
    general = {
        "action": "agency:scope:generate",
        "currency": "USD",
        "per_event": "0.50",
        "effective_from": "2026-03-01",
    }
    actions = [general, {**general, "tenant_id": str(tenant), "per_event": 0.4}]  # a JSON number: read exactly
    (tmp_path / "actions.json").write_text(json.dumps(actions), encoding="utf-8")

    for name, count in (("tokens.csv", 2), ("actions.json", 2)):
        result = usagemeter("prices", "load", str(tmp_path / name), "--database-url", database_url)
        assert result.returncode == 0, result.stderr
        assert f"loaded {count} prices from {tmp_path / name}" in result.stdout

    general_action = {"model": None, "action": "agency:scope:generate", "tenant_id": None, "currency": "USD",
                      "input_per_million": None, "output_per_million": None, "per_event": "0.5",
                      "effective_from": "2026-03-01T00:00:00+00:00", "cached_input_per_million": None,
                      "cache_write_per_million": None}  # fmt: skip
    tenant_action = {**general_action, "tenant_id": str(tenant), "per_event": "0.4"}
    first = {"model": "gpt-4o", "action": None, "tenant_id": None, "currency": "USD", "input_per_million": "2.5",
             "output_per_million": "10", "per_event": None, "effective_from": "2026-03-01T00:00:00+00:00",
             "cached_input_per_million": "1.25", "cache_write_per_million": None}  # fmt: skip
    second = {**first, "input_per_million": "5", "output_per_million": "20", "cached_input_per_million": None,
              "effective_from": "2026-03-14T23:00:00+00:00"}  # fmt: skip
    assert listed(database_url) == [general_action, tenant_action, first, second]
    assert listed(database_url, "--at", "2026-03-10") == [general_action, tenant_action, first]
    assert listed(database_url, "--at", "2026-03-15T00:00:00+01:00") == [general_action, tenant_action, second]
    assert listed(database_url, "--at", "2026-02-28T23:59:59Z") == []

    # What list prints is a price file that load takes, as it is.
    (tmp_path / "listed.json").write_text(json.dumps(listed(database_url, "--tenant", str(tenant))))
    assert [p.tenant_id for p in price_files.read_price_file(tmp_path / "listed.json")] == [None, tenant, None, None]


def test_list_as_a_user_follows_rls_and_the_table_is_for_people(
    database_url: str, owner: psycopg.Connection[Any], tmp_path: Path
) -> None:
    world = factories.two_tenants_with_an_event_each(owner)
    price = {"model": "gpt-4o", "currency": "USD", "input_per_million": "1", "output_per_million": "2",
             "effective_from": "2026-03-01"}  # fmt: skip
    rows = [{**price, "tenant_id": str(tenant)} for tenant in (world["mine"], world["foreign"])]
    (tmp_path / "tenants.json").write_text(json.dumps(rows))
    assert usagemeter("prices", "load", str(tmp_path / "tenants.json"), "--database-url", database_url).returncode == 0
    as_alice = listed(database_url, "--as-user", str(world["alice"]))
    assert [r["tenant_id"] for r in as_alice] == [str(world["mine"])]

    table = usagemeter("prices", "list", "--database-url", database_url, "--at", "now")
    assert table.returncode == 0, table.stderr
    assert "Prices in effect at" in table.stdout
    assert table.stdout.count("gpt-4o") == 2


def test_the_starter_prices_load_once(database_url: str, owner: psycopg.Connection[Any]) -> None:
    result = usagemeter("prices", "load", "--starter", "--database-url", database_url)
    assert result.returncode == 0, result.stderr
    shipped = len(price_files.starter_prices())
    assert f"loaded {shipped} prices from starter_prices.csv" in result.stdout
    assert price_count(owner) == shipped
    o3 = [r for r in listed(database_url, "--at", "2025-07-01") if r["model"] == "o3"]
    assert [(r["input_per_million"], r["output_per_million"]) for r in o3] == [("2", "8")]

    again = usagemeter("prices", "load", "--starter", "--database-url", database_url)
    assert again.returncode == 1
    assert "starter_prices.csv: row 1: effective_from: two prices for the same model" in one_line(again.stderr)
    assert "nothing was loaded" in one_line(again.stderr)
    assert price_count(owner) == shipped


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (CSV + "gpt-4.1,,,USD,-2,8,,2026-03-01,,\n", "row 3 (line 4): input_per_million: must be 0 or more"),
        (
            CSV + "gpt-4.1,,,USD,2,8,,2026-03-01,,\ngpt-4.1,,,USD,3,9,,2026-03-01,,\n",
            "row 4: effective_from: two prices",
        ),
        (CSV.replace(",2026-03-01,", ",1st of March,"), "row 1 (line 2): effective_from: expected an ISO 8601 date"),
        ("model,price\n", "header: unknown column 'price'"),
    ],
)
def test_a_bad_file_exits_1_naming_the_row_and_loads_nothing(
    database_url: str, owner: psycopg.Connection[Any], tmp_path: Path, content: str, message: str
) -> None:
    (tmp_path / "bad.csv").write_text(content, encoding="utf-8")
    result = usagemeter("prices", "load", str(tmp_path / "bad.csv"), "--database-url", database_url)
    assert result.returncode == 1
    assert one_line(result.stderr).startswith(f"error: {tmp_path / 'bad.csv'}: ")
    assert message in one_line(result.stderr)
    assert "nothing was loaded" in one_line(result.stderr)
    assert "Traceback" not in result.stderr
    assert price_count(owner) == 0


def test_a_file_the_database_refuses_loads_nothing(
    database_url: str, owner: psycopg.Connection[Any], tmp_path: Path
) -> None:
    (tmp_path / "tenant.csv").write_text(CSV + "o3,,00000000-0000-4000-8000-000000000000,USD,2,8,,2026-03-01,,\n")
    result = usagemeter("prices", "load", str(tmp_path / "tenant.csv"), "--database-url", database_url)
    assert result.returncode == 1
    assert "row 3: tenant_id: unknown tenant 00000000-0000-4000-8000-000000000000" in one_line(result.stderr)
    assert price_count(owner) == 0


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (("load",), "give a price FILE or --starter"),
        (("load", "prices.csv", "--starter"), "give a price FILE or --starter"),
        (("list", "--at", "yesterday"), "--at: expected an ISO 8601 date"),
        (("list", "--at", "2026-03-01T10:00:00"), "--at: needs a time zone"),
        (("list", "--format", "csv"), "--format: expected table or json"),
    ],
)
def test_bad_arguments_exit_2(database_url: str, arguments: tuple[str, ...], message: str) -> None:
    result = usagemeter("prices", *arguments, "--database-url", database_url)
    assert result.returncode == 2
    assert message in one_line(result.stderr)
