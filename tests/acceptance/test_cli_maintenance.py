"""`usagemeter maintain` and `usagemeter retention` as a cron job runs them: real processes, a real database."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from tests import factories
from tests.acceptance.test_cli_database import usagemeter
from tests.integration.test_partitions import partition_name


def months_ago(count: int) -> datetime:
    now = datetime.now(UTC)
    index = now.year * 12 + now.month - 1 - count
    return datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)


def test_maintain_moves_old_rows_out_then_retention_archives_and_drops_them(
    owner: psycopg.Connection[Any], database_url: str, tmp_path: Path
) -> None:
    user = factories.add_user(owner)
    for count in (2, 3, 4):
        owner.execute(
            "insert into public.usage_events (user_id, action, tokens_input, created_at)"
            " select %s, 'a:b:c', i, %s::timestamptz + make_interval(hours => i) from generate_series(1, 50) as i",
            (user, months_ago(count)),
        )

    refused = usagemeter("retention", "--keep-months", "1", "--database-url", database_url)
    assert refused.returncode == 1
    assert "usagemeter maintain" in refused.stderr

    maintained = usagemeter("maintain", "--database-url", database_url)
    assert maintained.returncode == 0, maintained.stderr
    for count in (2, 3, 4):
        assert f"moved 50 events into {partition_name(months_ago(count))}" in maintained.stdout
    again = usagemeter("maintain", "--database-url", database_url)
    assert "partitions are up to date" in again.stdout

    dry = usagemeter("retention", "--keep-months", "2", "--archive", str(tmp_path), "--dry-run", "--database-url",
                     database_url)  # fmt: skip
    assert dry.returncode == 0, dry.stderr
    assert f"would drop {partition_name(months_ago(4))} (50 rows)" in dry.stdout
    assert not list(tmp_path.iterdir())

    done = usagemeter("retention", "--keep-months", "2", "--archive", str(tmp_path), "--database-url", database_url)
    assert done.returncode == 0, done.stderr
    archive = tmp_path / f"{partition_name(months_ago(4))}.parquet"
    assert f"dropped {partition_name(months_ago(4))} (50 rows, archived to {archive})" in done.stdout
    assert "archive verified" in done.stderr  # every step is logged
    assert archive.exists()
    assert (tmp_path / f"{partition_name(months_ago(3))}.parquet").exists()
    assert factories.count_events(owner) == 50  # the current month and the two before it are kept
