"""The SQL loader: each flow keeps its queries in a `queries.sql` beside its code, one per `-- name --` marker.

A package may keep a module's queries in a file of their own beside it (`load_queries(package, name)`).

As procrastinate does it: the file is parsed once into `{name: text}`, and code calls
`queries["name"]` with `%(name)s` parameters. Comment lines are stripped from the text sent, so
a `%` or a quote in a comment can never change what the server runs.
"""

from __future__ import annotations

import re
from importlib import resources
from typing import LiteralString

_MARKER = re.compile(r"^-- ([a-z][a-z0-9_]*) --$", re.MULTILINE)
_COMMENT_LINE = re.compile(r"^[ \t]*--.*(?:\n|$)", re.MULTILINE)


def strip_comments(text: str) -> str:
    """The query without its whole-line `--` comments (comments after code stay: they may sit in a literal)."""
    return _COMMENT_LINE.sub("", text).strip()


def parse_queries(text: str, *, source: str = "queries.sql") -> dict[str, LiteralString]:
    """Split a queries file at its `-- name --` markers; a name given twice is a bug, not an override."""
    parts = _MARKER.split(text)
    found: dict[str, LiteralString] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in found:
            raise ValueError(f"query {name!r} is defined twice in {source}")
        query = strip_comments(body)
        if not query:
            raise ValueError(f"query {name!r} in {source} is empty")
        found[name] = query
    return found


def read_sql_file(package: str, name: str) -> LiteralString:
    """Text of a packaged .sql file; it ships with the code, so it is trusted SQL, not user input."""
    return resources.files(package).joinpath(name).read_text(encoding="utf-8")


def load_queries(package: str, name: str = "queries.sql") -> dict[str, LiteralString]:
    """The queries of one package's `queries.sql`, or of another queries file of it (`name`).

    A second file lets a module that shares its package with others keep its queries apart
    (billing's corrections in `corrections.sql`), so the package's files stay one per job.
    """
    return parse_queries(read_sql_file(package, name), source=f"{package}/{name}")
