"""A model named on the command line is priced and reported: `record --model`, then `report --by model`."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import psycopg

from tests import factories
from tests.acceptance.test_cli_database import usagemeter


def test_a_recorded_model_is_priced_and_reported_by_model(database_url: str, owner: psycopg.Connection[Any]) -> None:
    tenant, user = factories.add_tenant(owner), factories.add_user(owner)
    factories.add_member(owner, tenant, user)
    owner.execute(
        "insert into public.usage_prices (model, currency, input_per_million, output_per_million, effective_from)"
        " values ('gpt-4o', 'USD', 2.5, 10, '2020-01-01')"
    )
    for model, tokens_in in (("gpt-4o", "1000"), ("gpt-4o", "3000"), ("other-model", "5")):
        recorded = usagemeter(
            "record", "--tenant", str(tenant), "--user", str(user), "--action", "ai:chat:completion",
            "--model", model, "--tokens-in", tokens_in, "--tokens-out", "100", "--database-url", database_url,
        )  # fmt: skip
        assert recorded.returncode == 0, recorded.stderr
    today = datetime.now(UTC).date()
    report = usagemeter(
        "report", "--tenant", str(tenant), "--by", "model", "--format", "json", "--from", today.isoformat(),
        "--to", datetime.fromordinal(today.toordinal() + 1).date().isoformat(), "--database-url", database_url,
    )  # fmt: skip
    assert report.returncode == 0, report.stderr
    rows = sorted(json.loads(report.stdout), key=lambda r: r["model"])
    assert [(r["model"], r["events"], r["cost"], r["currency"]) for r in rows] == [
        ("gpt-4o", 2, "0.012000", "USD"),  # 4,000 x 2.5 + 200 x 10, per million
        ("other-model", 1, "0.000000", "USD"),  # no price: costs nothing
    ]


def test_model_given_twice_differently_is_refused(database_url: str, owner: psycopg.Connection[Any]) -> None:
    tenant, user = factories.add_tenant(owner), factories.add_user(owner)
    result = usagemeter(
        "record", "--tenant", str(tenant), "--user", str(user), "--action", "ai:chat:completion",
        "--model", "gpt-4o", "--metadata", '{"model": "claude"}', "--database-url", database_url,
    )  # fmt: skip
    assert result.returncode == 1
    assert "differs from metadata.model" in result.stdout + result.stderr
    assert factories.count_events(owner) == 0
