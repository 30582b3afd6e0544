"""Documents for the bits of TypeScript syntax the generated types use, built as prettier builds them.

Objects written expanded stay expanded (prettier keeps an object broken when its source has a
line break after `{`, and postgres-meta's template has one wherever these say `expanded`);
everything else goes on one line when it fits.
"""

from __future__ import annotations

import json
import re

from usagemeter.ops import prettier_doc as p

_IDENTIFIER = re.compile(r"^[A-Za-z_$][A-Za-z0-9_$]*$")


def string(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)


def key(name: str) -> str:
    """A property name unquoted where TypeScript allows it (prettier's quoteProps "as-needed")."""
    return name if _IDENTIFIER.match(name) else string(name)


def union(members: list[p.Doc], *, hug: bool = False) -> p.Doc:
    """`A | B` on one line, or `| A` a line each, indented; a lone object type hugs its `| null` instead."""
    if len(members) == 1:
        return members[0]
    if hug:
        return p.join(" | ", members)
    aligned: list[p.Doc] = [p.Indent(member) for member in members]
    return p.Group(p.Indent(p.concat(p.IfBreak(p.concat(p.LINE, "| ")), p.join(p.concat(p.LINE, "| "), aligned))))


def type_literal(members: list[p.Doc], *, expanded: bool) -> p.Doc:
    """`{ a: T; b: U }`, or one member a line when it does not fit or was written expanded."""
    if not members:
        return "{}"
    separator = p.concat(p.IfBreak("", ";"), p.LINE)
    body = p.Indent(p.concat(p.LINE, p.join(separator, members)))
    return p.Group(p.concat("{", body, p.LINE, "}"), expanded=expanded)


def never_object() -> p.Doc:
    return p.Group(p.concat("{", p.Indent(p.concat(p.LINE, "[_ in never]: never")), p.LINE, "}"), expanded=True)


def member(name: str, type_doc: p.Doc, *, optional: bool = False) -> p.Doc:
    return p.concat(key(name), "?" if optional else "", ": ", type_doc)


def tuple_type(elements: list[p.Doc]) -> p.Doc:
    if not elements:
        return "[]"
    return p.Group(
        p.concat(
            "[",
            p.Indent(p.concat(p.SOFTLINE, p.join(p.concat(",", p.LINE), elements))),
            p.IfBreak(","),
            p.SOFTLINE,
            "]",
        )
    )


def object_literal(properties: list[p.Doc], *, expanded: bool) -> p.Doc:
    if not properties:
        return "{}"
    body = p.join(p.concat(",", p.LINE), properties)
    return p.Group(p.concat("{", p.Indent(p.concat(p.LINE, body)), p.IfBreak(","), p.LINE, "}"), expanded=expanded)


def nullable(type_doc: p.Doc, type_text: str, *, nullable: bool, object_type: bool = False) -> p.Doc:
    """`T | null`, except for unknown (which holds null already); an object type hugs its `| null`."""
    if not nullable or type_text in ("unknown", "any"):
        return type_doc
    return union([type_doc, "null"], hug=object_type)
