"""Every query usagemeter sends, parsed once from queries.sql (one `-- name --` marker per query)."""

from __future__ import annotations

import re
from importlib import resources
from typing import LiteralString, cast

_MARKER = re.compile(r"^-- ([a-z][a-z0-9_]*) --$", re.MULTILINE)


def parse_queries(text: str) -> dict[str, LiteralString]:
    """Split a queries file at its `-- name --` markers; a name given twice is a bug, not an override."""
    parts = _MARKER.split(text)
    found: dict[str, LiteralString] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in found:
            raise ValueError(f"query {name!r} is defined twice in queries.sql")
        found[name] = cast(LiteralString, body.strip())
    return found


def read_sql_file(name: str) -> LiteralString:
    """Text of a packaged .sql file; it ships with the code, so it is trusted SQL, not user input."""
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


queries: dict[str, LiteralString] = parse_queries(read_sql_file("queries.sql"))
