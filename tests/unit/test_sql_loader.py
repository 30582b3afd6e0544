"""The queries.sql loader, and that every query the code names exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from usagemeter import sql


def test_parse_splits_at_markers_and_strips() -> None:
    text = "-- header comment\n\n-- first --\n-- what it does\nselect 1\n\n-- second_q --\nselect %(x)s\n"
    assert sql.parse_queries(text) == {"first": "-- what it does\nselect 1", "second_q": "select %(x)s"}


def test_a_name_defined_twice_is_an_error() -> None:
    with pytest.raises(ValueError, match="'dup' is defined twice"):
        sql.parse_queries("-- dup --\nselect 1\n-- dup --\nselect 2\n")


def test_every_query_named_in_code_exists() -> None:
    package = Path(sql.__file__).resolve().parents[1]
    used = set()
    for path in package.rglob("*.py"):
        used |= set(re.findall(r"queries\[\"([a-z0-9_]+)\"\]", path.read_text()))
    assert used, "the scan found no query names: the pattern is wrong"
    assert used <= set(sql.queries), f"missing from queries.sql: {sorted(used - set(sql.queries))}"


def test_every_query_in_the_file_is_used() -> None:
    package = Path(sql.__file__).resolve().parents[1]
    code = "\n".join(p.read_text() for p in package.rglob("*.py"))
    unused = [name for name in sql.queries if f'"{name}"' not in code]
    assert unused == []


def test_no_query_is_empty() -> None:
    assert all(text.strip() for text in sql.queries.values())
