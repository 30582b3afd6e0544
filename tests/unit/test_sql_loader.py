"""The SQL loader, and that every query the code names exists in the queries file its module loads."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from usagemeter.db import sql

PACKAGE = Path(sql.__file__).resolve().parents[1]


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


def file_loaded(tree: ast.AST) -> str | None:
    """The queries file a module loads: `load_queries(package, name)`'s name, `queries.sql` by default."""
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        called = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None
        if called != "load_queries":
            continue
        given = node.args[1:] + [k.value for k in node.keywords if k.arg == "name"]
        if not given:
            return "queries.sql"
        named = given[0]
        assert isinstance(named, ast.Constant), "name the queries file literally"
        assert isinstance(named.value, str)
        return named.value
    return None


def test_the_scan_sees_which_file_a_module_loads() -> None:
    assert file_loaded(ast.parse('queries = sql.load_queries("usagemeter.db")')) == "queries.sql"
    assert file_loaded(ast.parse('queries = sql.load_queries("usagemeter.billing", "corrections.sql")')) == (
        "corrections.sql"
    )
    assert file_loaded(ast.parse('q = load_queries("usagemeter.x", name="other.sql")')) == "other.sql"
    assert file_loaded(ast.parse("x = 1")) is None


def names_used_per_file() -> dict[Path, set[str]]:
    """Query names used in code, by the queries file their module loads (its package's queries.sql if none)."""
    used: dict[Path, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text())
        names = names_used(tree)
        if names:
            used.setdefault(path.parent / (file_loaded(tree) or "queries.sql"), set()).update(names)
    return used


USED = names_used_per_file()
QUERY_FILES = sorted(set(PACKAGE.rglob("queries.sql")) | set(USED))


@pytest.mark.parametrize("queries_file", QUERY_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_query_named_in_code_exists_and_every_query_is_used(queries_file: Path) -> None:
    where = f"{queries_file.parent.name}/{queries_file.name}"
    assert queries_file.exists(), f"{where} is loaded but does not exist"
    defined = set(sql.parse_queries(queries_file.read_text()))
    used = USED.get(queries_file, set())
    assert used, f"no query names found for {where}: the scan is wrong"
    assert used - defined == set(), f"missing from {where}"
    assert defined - used == set(), f"unused in {where}"


def test_every_package_loads_its_queries() -> None:
    assert [f"{p.parent.name}/{p.name}" for p in QUERY_FILES] == [
        "routes/queries.sql",  # api/routes
        "billing/corrections.sql",
        "billing/queries.sql",
        "db/queries.sql",
        "ops/demo.sql",
        "ops/queries.sql",
        "recording/queries.sql",
        "reporting/queries.sql",
        "tenancy/queries.sql",
    ]
    for queries_file in QUERY_FILES:
        package = ".".join(queries_file.parent.relative_to(PACKAGE.parent).parts)
        assert sql.load_queries(package, queries_file.name)
