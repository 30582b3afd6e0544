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
        # usagemeter's own record: the whole file, byte for byte (line endings as read)
        (["create table a (x int);\n"], "create table a (x int);\n", True),
        (["create table a (x int);\r\n"], "create table a (x int);\n", True),
        (["create table a (x int);"], "create table a (x int);\n", False),
        # the Supabase CLI's record: cut at each `;`, pieces trimmed of whitespace and `;`
        (
            ["create table a (x int)", "-- why\ncreate index i on a (x)"],
            "create table a (x int);\n\n-- why\ncreate index i on a (x);\n",
            True,
        ),
        (["select 1", "select 2"], "select 1 ;;\n select 2", True),
        # a change inside a statement: a literal's whitespace, a comment, a type
        (["select '[a-z_-]'"], "select '[a-z_ -]';", False),
        (["select 1", "select 2"], "select 1;\n-- note\nselect 2;", False),
        (["create table a (x int)"], "create table a (x bigint);", False),
        # statements merged, added or dropped
        (["select 1", "select 2"], "select 1 select 2;", False),
        (["select 1"], "select 1; select 2;", False),
        (["select 1", "select 2"], "select 1;", False),
        (["select 1"], "select 12;", False),
        # a row written before the CLI kept statements cannot be checked
        (None, "anything", True),
    ],
)
def test_a_record_matches_only_the_exact_file_text(statements: list[str] | None, text: str, same: bool) -> None:
    assert migrate.matches_record(statements, text) is same
