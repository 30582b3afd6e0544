"""What types are generated from: relations, columns, relationships, functions and types, as postgres-meta has them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

RelationKind = Literal["table", "foreign_table", "view", "materialized_view"]
ArgMode = Literal["in", "out", "inout", "variadic", "table"]


# ICU's root collation orders these before digits, in this order; letters come after digits.
_PUNCTUATION_ORDER = " _-,;:!?.'\"()[]{}@*/\\&#%`^+<=>|~$"


def _collation_weight(char: str) -> tuple[int, str]:
    if char.isalpha():
        return (3, char.lower())
    if char.isdigit():
        return (2, char)
    position = _PUNCTUATION_ORDER.find(char)
    return (0, f"{position:03d}") if position >= 0 else (1, char)


def locale_key(name: str) -> tuple[tuple[tuple[int, str], ...], tuple[bool, ...]]:
    """Sort key ordering identifiers as JavaScript's localeCompare (ICU root collation) does, as Supabase sorts.

    Punctuation before digits before letters, letters case-insensitively, lowercase first on a tie;
    plain code-point order differs (`a1` < `a_b` there, `a_b` < `a1` here).
    """
    return tuple(_collation_weight(char) for char in name), tuple(char.isupper() for char in name)


@dataclass(frozen=True)
class Column:
    relation_id: int
    name: str
    position: int
    format: str
    """Type name: the base type of a domain, "_<element>" for an array."""
    is_nullable: bool
    has_default: bool
    """A default or a generation expression (postgres-meta counts both)."""
    is_identity: bool
    is_identity_always: bool
    is_generated: bool
    is_updatable: bool
    comment: str | None

    @property
    def is_array(self) -> bool:
        return self.format.startswith("_")

    @property
    def element_format(self) -> str:
        return self.format[1:] if self.is_array else self.format


@dataclass(frozen=True)
class Relationship:
    foreign_key_name: str
    schema: str
    relation: str
    columns: list[str]
    referenced_schema: str
    referenced_relation: str
    referenced_columns: list[str]
    is_one_to_one: bool


@dataclass
class Relation:
    """A table, foreign table, view or materialized view, with its columns sorted as Supabase sorts them."""

    id: int
    schema: str
    name: str
    kind: RelationKind
    is_updatable: bool
    comment: str | None
    columns: list[Column] = field(default_factory=list)
    relationships: list[Relationship] = field(default_factory=list)

    @property
    def is_table(self) -> bool:
        return self.kind in ("table", "foreign_table")


@dataclass(frozen=True)
class Argument:
    mode: ArgMode
    name: str
    type_id: int
    has_default: bool


@dataclass(frozen=True)
class Function:
    id: int
    schema: str
    name: str
    argument_types: str
    return_type: str
    return_type_id: int
    return_type_relation_id: int | None
    is_set_returning: bool
    prorows: float | None
    args: list[Argument]

    @property
    def in_args(self) -> list[Argument]:
        return [arg for arg in self.args if arg.mode in ("in", "inout", "variadic")]


@dataclass(frozen=True)
class Attribute:
    name: str
    type_id: int


@dataclass(frozen=True)
class PgType:
    id: int
    name: str
    schema: str
    format: str
    enums: list[str]
    attributes: list[Attribute]
    type_relation_id: int | None


@dataclass
class Catalog:
    """What types are generated from: the relations, functions and types of `schemas`, and every type."""

    schemas: list[str]
    relations: list[Relation]
    functions: list[Function]
    types: list[PgType]

    def relations_of(self, schema: str, *, tables: bool) -> list[Relation]:
        return [r for r in self.relations if r.schema == schema and r.is_table == tables]

    @property
    def tables(self) -> list[Relation]:
        """Plain and partitioned tables of every schema, as the Python models cover them."""
        return [r for r in self.relations if r.kind == "table"]
