"""Migration file discovery, naming and change detection, without a database."""

from __future__ import annotations

from pathlib import Path

import pytest

from usagemeter import errors
from usagemeter.ops import migrate


def test_shipped_migrations_follow_supabase_naming_and_order() -> None:
    found = migrate.discover_migrations()
    assert [m.name for m in found][:2] == ["create_tenants", "create_usage_events"]
    assert [m.version for m in found] == sorted(m.version for m in found)
    assert all(len(m.version) == 14 for m in found)


def test_misnamed_file_is_an_error_naming_it(tmp_path: Path) -> None:
    (tmp_path / "20261126090000_ok.sql").write_text("select 1;")
    (tmp_path / "2026_bad.sql").write_text("select 1;")
    with pytest.raises(errors.MigrationFileError, match=r"2026_bad\.sql: expected <14-digit UTC timestamp>"):
        migrate.discover_migrations(tmp_path)


def test_duplicate_versions_are_an_error(tmp_path: Path) -> None:
    (tmp_path / "20261126090000_a.sql").write_text("select 1;")
    (tmp_path / "20261126090000_b.sql").write_text("select 2;")
    with pytest.raises(errors.MigrationFileError, match="share version 20261126090000"):
        migrate.discover_migrations(tmp_path)


@pytest.mark.parametrize(
    ("statements", "text", "same"),
    [
        (["create table a (x int);"], "create table a (x int);", True),
        (
            ["create table a (x int)", "create index i on a (x)"],
            "create table a (x int);\n\ncreate index i on a (x);\n",
            True,
        ),
        (["create table a (x int);"], "create table a (x bigint);", False),
        (["create table a (x int);"], "create table a (x int); drop table b;", False),
    ],
)
def test_same_sql_ignores_whitespace_and_splitting_only(statements: list[str], text: str, same: bool) -> None:
    assert migrate.same_sql(statements, text) is same
