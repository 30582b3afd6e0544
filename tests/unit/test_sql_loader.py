"""The SQL loader, and that every query the code names exists in its package's queries.sql."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from usagemeter.db import sql

PACKAGE = Path(sql.__file__).resolve().parents[1]
QUERY_PACKAGES = sorted(p.parent for p in PACKAGE.rglob("queries.sql"))


def test_parse_splits_at_markers_and_strips_comments() -> None:
    text = "-- header comment\n\n-- first --\n-- what it does\nselect 1\n\n-- second_q --\nselect %(x)s\n"
    assert sql.parse_queries(text) == {"first": "select 1", "second_q": "select %(x)s"}


def test_a_percent_or_quote_in_a_comment_never_reaches_the_server() -> None:
    text = "-- q --\n-- 100% of it, don't worry\nselect 1\n  -- indented: 5% more\nfrom t\n"
    assert sql.parse_queries(text) == {"q": "select 1\nfrom t"}


def test_a_comment_after_code_stays_since_it_may_be_inside_a_literal() -> None:
    assert sql.parse_queries("-- q --\nselect '-- not a comment'\n") == {"q": "select '-- not a comment'"}


def test_a_name_defined_twice_is_an_error() -> None:
    with pytest.raises(ValueError, match="'dup' is defined twice"):
        sql.parse_queries("-- dup --\nselect 1\n-- dup --\nselect 2\n")


def test_a_query_with_only_comments_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"'hollow' in queries\.sql is empty"):
        sql.parse_queries("-- hollow --\n-- nothing here\n")


def names_used(tree: ast.AST) -> set[str]:
    """Every string that can be the key of a `queries[...]` subscript, conditional expressions included."""
    used: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id == "queries":
            used |= {c.value for c in ast.walk(node.slice) if isinstance(c, ast.Constant) and isinstance(c.value, str)}
    return used


def test_the_scan_sees_names_chosen_by_a_conditional() -> None:
    tree = ast.parse('queries["plain_name"]\nqueries["a_one" if timed else "b_two"]')
    assert names_used(tree) == {"plain_name", "a_one", "b_two"}


@pytest.mark.parametrize("package", QUERY_PACKAGES, ids=lambda p: p.name)
def test_every_query_named_in_code_exists_and_every_query_is_used(package: Path) -> None:
    defined = set(sql.parse_queries((package / "queries.sql").read_text()))
    used: set[str] = set()
    for path in package.glob("*.py"):
        used |= names_used(ast.parse(path.read_text()))
    assert used, f"no query names found in {package.name}: the scan is wrong"
    assert used - defined == set(), f"missing from {package.name}/queries.sql"
    assert defined - used == set(), f"unused in {package.name}/queries.sql"


def test_every_package_loads_its_queries() -> None:
    assert [p.name for p in QUERY_PACKAGES] == ["billing", "db", "ops", "recording", "reporting"]
    for package in QUERY_PACKAGES:
        assert sql.load_queries(f"usagemeter.{package.name}")
