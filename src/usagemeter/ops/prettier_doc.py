"""A small port of prettier's document printer, so generated TypeScript is laid out as prettier lays it out.

Supabase's generator (postgres-meta) pipes its output through prettier (80 columns, no semicolons);
to emit the same bytes, the TypeScript renderer builds the same documents prettier's TypeScript
printer builds (groups, indents, soft lines) and this module fits them to the width with
prettier's algorithm: a group goes on one line when what follows it up to the next line break
fits, and a group that must break (a hard line, or an object written expanded) breaks every
group around it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

WIDTH = 80


@dataclass
class Group:
    contents: Doc
    expanded: bool = False


@dataclass(frozen=True)
class Indent:
    contents: Doc
    by: int = 2


@dataclass(frozen=True)
class Line:
    """A space (or nothing when soft) in a flat group, a new line in a broken one; hard lines always break."""

    soft: bool = False
    hard: bool = False


@dataclass(frozen=True)
class IfBreak:
    broken: Doc
    flat: Doc = ""


@dataclass
class Concat:
    parts: list[Doc] = field(default_factory=list)


Doc = str | Concat | Group | Indent | Line | IfBreak

LINE = Line()
SOFTLINE = Line(soft=True)
HARDLINE = Line(hard=True)

Mode = Literal["flat", "break"]


def concat(*parts: Doc) -> Concat:
    return Concat(list(parts))


def join(separator: Doc, docs: list[Doc]) -> Concat:
    parts: list[Doc] = []
    for index, doc in enumerate(docs):
        if index:
            parts.append(separator)
        parts.append(doc)
    return Concat(parts)


def _children(doc: Doc) -> list[Doc]:
    if isinstance(doc, Concat):
        return doc.parts
    if isinstance(doc, Group | Indent):
        return [doc.contents]
    if isinstance(doc, IfBreak):
        return [doc.broken, doc.flat]
    return []


def propagate_breaks(doc: Doc) -> bool:
    """Mark every group holding a hard line or an expanded group as expanded; True when `doc` must break."""
    if isinstance(doc, Line):
        return doc.hard
    must_break = False
    for child in _children(doc):
        must_break = propagate_breaks(child) or must_break
    if isinstance(doc, Group):
        doc.expanded = doc.expanded or must_break
        return doc.expanded
    return must_break


Command = tuple[int, Mode, Doc]


def _fits(next_command: Command, rest: list[Command], width: int) -> bool:
    """Whether `next_command` printed flat, and what follows it up to the next line break, fits in `width`."""
    rest_index = len(rest)
    commands = [next_command]
    while width >= 0:
        if not commands:
            if rest_index == 0:
                return True
            rest_index -= 1
            commands.append(rest[rest_index])
            continue
        indent, mode, doc = commands.pop()
        if isinstance(doc, str):
            width -= len(doc)
        elif isinstance(doc, Concat):
            commands.extend((indent, mode, part) for part in reversed(doc.parts))
        elif isinstance(doc, Indent):
            commands.append((indent, mode, doc.contents))
        elif isinstance(doc, Group):
            commands.append((indent, "break" if doc.expanded else mode, doc.contents))
        elif isinstance(doc, IfBreak):
            commands.append((indent, mode, doc.broken if mode == "break" else doc.flat))
        elif mode == "break" or doc.hard:
            return True
        elif not doc.soft:
            width -= 1
    return False


def print_doc(doc: Doc, width: int = WIDTH) -> str:
    """Lay `doc` out in `width` columns, trimming trailing spaces as prettier does."""
    propagate_breaks(doc)
    out: list[str] = []
    position = 0
    commands: list[Command] = [(0, "break", doc)]
    while commands:
        indent, mode, current = commands.pop()
        if isinstance(current, str):
            out.append(current)
            position += len(current)
        elif isinstance(current, Concat):
            commands.extend((indent, mode, part) for part in reversed(current.parts))
        elif isinstance(current, Indent):
            commands.append((indent + current.by, mode, current.contents))
        elif isinstance(current, Group):
            flat: Command = (indent, "flat", current.contents)
            if not current.expanded and (mode == "flat" or _fits(flat, commands, width - position)):
                commands.append(flat)
            else:
                commands.append((indent, "break", current.contents))
        elif isinstance(current, IfBreak):
            commands.append((indent, mode, current.broken if mode == "break" else current.flat))
        elif mode == "flat" and not current.hard:
            if not current.soft:
                out.append(" ")
                position += 1
        else:
            while out and out[-1].endswith(" "):
                out[-1] = out[-1].rstrip(" ")
                if not out[-1]:
                    out.pop()
            out.append("\n" + " " * indent)
            position = indent
    return "".join(out)
