"""Relationships through views, found as PostgREST finds them (and so as Supabase's types list them).

A view column that passes a table's key column through unchanged carries the table's foreign
keys: PostgREST can embed across it, and postgres-meta lists the relationship on the view (view to
table), on the referencing table (table to view) and between views. Which table column a view
column comes from is `resorigtbl`/`resorigcol` of the view query's target list, read here from
the stored rule (pg_rewrite.ev_action, a pg_node_tree); views over views are followed through.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import class_row

from usagemeter.db import sql
from usagemeter.ops.typegen_catalog import Relationship

queries = sql.load_queries("usagemeter.ops")

Node = dict[str, list[Any]]


# -- Reading a pg_node_tree -------------------------------------------------------------------------


def _tokens(text: str) -> list[str]:
    """Split node-tree text as PostgreSQL's pg_strtok does: brackets alone, backslash escapes, quoted strings."""
    tokens: list[str] = []
    index = 0
    while index < len(text):
        char = text[index]
        if char.isspace():
            index += 1
        elif char in "(){}":
            tokens.append(char)
            index += 1
        else:
            start = index
            quoted = char == '"'
            index += 1
            while index < len(text):
                char = text[index]
                if char == "\\":
                    index += 2
                    continue
                if quoted:
                    index += 1
                    if char == '"':
                        break
                elif char.isspace() or char in "(){}":
                    break
                else:
                    index += 1
            tokens.append(text[start:index])
    return tokens


def _parse(tokens: list[str], position: int) -> tuple[Any, int]:
    """One value at `position`: a node `{NAME :field value ...}` as a dict, a list `(...)`, or a token."""
    opening = tokens[position]
    if opening == "(":
        items: list[Any] = []
        position += 1
        while tokens[position] != ")":
            item, position = _parse(tokens, position)
            items.append(item)
        return items, position + 1
    if opening == "{":
        node: Node = {"": [tokens[position + 1]]}
        position += 2
        while tokens[position] != "}":
            field = tokens[position][1:]
            position += 1
            values: list[Any] = []
            while tokens[position] != "}" and not (tokens[position].startswith(":") and len(tokens[position]) > 1):
                value, position = _parse(tokens, position)
                values.append(value)
            node[field] = values
        return node, position + 1
    return opening, position + 1


def target_origins(definition: str) -> list[tuple[int, int, int]]:
    """(view column number, origin relation oid, origin column number) for each column of a view's query."""
    queries_list, _ = _parse(_tokens(definition), 0)
    query: Node = queries_list[0]
    origins: list[tuple[int, int, int]] = []
    for entry in (query.get("targetList") or [[]])[0]:
        if isinstance(entry, dict):
            origins.append((int(entry["resno"][0]), int(entry["resorigtbl"][0]), int(entry["resorigcol"][0])))
    return origins


# -- Key dependencies ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ViewDefinition:
    id: int
    schema: str
    name: str
    definition: str
    column_names: dict[str, str]


@dataclass(frozen=True)
class KeyColumn:
    """One column of a primary or foreign key (`f`), or of the columns a foreign key references (`f_ref`)."""

    constraint_type: str
    constraint_name: str
    column_count: int
    relation_id: int
    column_number: int
    ordinality: int
    table_schema: str
    table_name: str


@dataclass(frozen=True)
class KeyDependency:
    table_schema: str
    table_name: str
    view_schema: str
    view_name: str
    constraint_name: str
    constraint_type: str
    view_columns: list[list[str]]
    """For each key column in key order, the view columns that pass it through."""


def key_dependencies(views: list[ViewDefinition], keys: list[KeyColumn]) -> list[KeyDependency]:
    """Keys every column of which some view passes through, directly or through other views."""
    results = {view.id: target_origins(view.definition) for view in views}
    origin_of = {(view_id, column): (rel, col) for view_id, rows in results.items() for column, rel, col in rows}
    names = {view.id: view for view in views}
    passed: dict[tuple[int, int, int], list[str]] = defaultdict(list)
    for view_id, rows in results.items():
        for view_column, relation, column in rows:
            seen = [relation]
            while True:
                name = names[view_id].column_names.get(str(view_column))
                if name is not None:
                    passed[(view_id, relation, column)].append(name)
                deeper = origin_of.get((relation, column))
                if deeper is None or deeper[0] in seen:
                    break
                relation, column = deeper
                seen.append(relation)
    grouped: dict[tuple[str, str, int, str, str, int], list[tuple[int, list[str]]]] = defaultdict(list)
    for key in keys:
        for (view_id, relation, column), view_columns in passed.items():
            if relation == key.relation_id and column == key.column_number:
                group = (
                    key.table_schema,
                    key.table_name,
                    view_id,
                    key.constraint_name,
                    key.constraint_type,
                    key.column_count,
                )
                grouped[group].append((key.ordinality, view_columns))
    found: list[KeyDependency] = []
    for (table_schema, table_name, view_id, name, kind, count), columns in grouped.items():
        if len(columns) == count:
            view = names[view_id]
            ordered = [view_columns for _, view_columns in sorted(columns, key=lambda c: c[0])]
            found.append(KeyDependency(table_schema, table_name, view.schema, view.name, name, kind, ordered))
    return found


def _combinations(dependency: KeyDependency) -> list[list[str]]:
    return [list(combination) for combination in itertools.product(*dependency.view_columns)]


def view_relationships(tables: list[Relationship], dependencies: list[KeyDependency]) -> list[Relationship]:
    """The relationships views inherit from their tables' foreign keys, in postgres-meta's order."""
    found: list[Relationship] = []
    for r in tables:
        from_views = [
            d
            for d in dependencies
            if (d.table_schema, d.table_name, d.constraint_name, d.constraint_type)
            == (r.schema, r.relation, r.foreign_key_name, "f")
        ]
        to_views = [
            d
            for d in dependencies
            if (d.table_schema, d.table_name, d.constraint_name, d.constraint_type)
            == (r.referenced_schema, r.referenced_relation, r.foreign_key_name, "f_ref")
        ]
        for d in from_views:
            for columns in _combinations(d):
                found.append(
                    Relationship(
                        r.foreign_key_name, d.view_schema, d.view_name, columns,
                        r.referenced_schema, r.referenced_relation, r.referenced_columns, r.is_one_to_one,
                    )
                )  # fmt: skip
        for d in to_views:
            for referenced in _combinations(d):
                found.append(
                    Relationship(
                        r.foreign_key_name, r.schema, r.relation, r.columns,
                        d.view_schema, d.view_name, referenced, r.is_one_to_one,
                    )
                )  # fmt: skip
        for source in from_views:
            for columns in _combinations(source):
                for target in to_views:
                    for referenced in _combinations(target):
                        found.append(
                            Relationship(
                                r.foreign_key_name, source.view_schema, source.view_name, columns,
                                target.view_schema, target.view_name, referenced, r.is_one_to_one,
                            )
                        )  # fmt: skip
    return found


def read(conn: psycopg.Connection[Any], tables: list[Relationship]) -> list[Relationship]:
    """The view relationships of the database, from its views' stored queries and its keys."""
    with conn.cursor(row_factory=class_row(ViewDefinition)) as cur:
        views = cur.execute(queries["typegen_view_definitions"]).fetchall()
    if not views:
        return []
    with conn.cursor(row_factory=class_row(KeyColumn)) as cur:
        keys = cur.execute(queries["typegen_key_columns"]).fetchall()
    return view_relationships(tables, key_dependencies(views, keys))
