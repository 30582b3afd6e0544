"""Generate types from the live, migrated database: Supabase-format TypeScript and Python models.

Read from the catalog, not from the migration text, so the types are what the database really has
(typegen_catalog). The TypeScript is what `supabase gen types typescript` writes for the same
schema (typegen_typescript); the Python models are our own.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from typing import Any, Literal

import psycopg
from psycopg.rows import class_row, dict_row

from usagemeter.db import sql
from usagemeter.ops import typegen_typescript, typegen_views
from usagemeter.ops.typegen_catalog import (
    Argument,
    Attribute,
    Catalog,
    Column,
    Function,
    PgType,
    Relation,
    Relationship,
    locale_key,
)

__all__ = ["Catalog", "Language", "introspect", "render", "render_python"]

queries = sql.load_queries("usagemeter.ops")

Language = Literal["typescript", "python"]

PY_TYPES = {
    "bool": "bool",
    "int2": "int",
    "int4": "int",
    "int8": "int",
    "float4": "float",
    "float8": "float",
    "numeric": "Decimal",
    "json": "Json",
    "jsonb": "Json",
    "uuid": "UUID",
    "timestamptz": "datetime",
    "timestamp": "datetime",
    "date": "date",
}


def introspect(conn: psycopg.Connection[Any], schemas: Sequence[str] = ("public",)) -> Catalog:
    """The catalog of `schemas`, every list sorted as postgres-meta sorts it, so output is deterministic."""
    params = {"schemas": list(schemas)}
    with conn.cursor(row_factory=class_row(Relation)) as cur:
        relations = cur.execute(queries["typegen_relations"], params).fetchall()
    with conn.cursor(row_factory=class_row(Column)) as cur:
        columns = cur.execute(queries["typegen_columns"], params).fetchall()
    with conn.cursor(row_factory=class_row(Relationship)) as cur:
        relationships = cur.execute(queries["typegen_relationships"], params).fetchall()
    with conn.cursor(row_factory=dict_row) as cur:
        function_rows = cur.execute(queries["typegen_functions"], params).fetchall()
        type_rows = cur.execute(queries["typegen_types"]).fetchall()
    relationships += typegen_views.read(conn, relationships)
    by_id = {relation.id: relation for relation in relations}
    for column in sorted(columns, key=lambda c: locale_key(c.name)):
        if column.relation_id in by_id:
            by_id[column.relation_id].columns.append(column)
    relationships.sort(
        key=lambda r: (
            locale_key(r.foreign_key_name),
            locale_key(r.referenced_relation),
            locale_key(json.dumps(r.referenced_columns, separators=(",", ":"))),
        )
    )
    for relation in relations:
        relation.relationships = [
            r
            for r in relationships
            if r.schema == relation.schema and r.referenced_schema == relation.schema and r.relation == relation.name
        ]
    functions = [Function(**{**row, "args": [Argument(**arg) for arg in row["args"]]}) for row in function_rows]
    types = [PgType(**{**row, "attributes": [Attribute(**a) for a in row["attributes"]]}) for row in type_rows]
    return Catalog(
        schemas=sorted(schemas, key=locale_key),
        relations=sorted(relations, key=lambda r: locale_key(r.name)),
        functions=sorted(functions, key=lambda f: locale_key(f.name)),
        types=types,
    )


def render(catalog: Catalog, language: Language) -> str:
    if language == "typescript":
        return typegen_typescript.render(catalog)
    return render_python(catalog)


# -- Python ----------------------------------------------------------------------------------------


def _class_name(table: str) -> str:
    return "".join(part.capitalize() for part in table.split("_"))


def _py_type(column: Column) -> str:
    base = PY_TYPES.get(column.element_format, "str")
    return f"list[{base}]" if column.is_array else base


_PY_TYPE_MODULES = {"date": "datetime", "datetime": "datetime", "Decimal": "decimal", "UUID": "uuid"}


def _python_imports(used: set[str]) -> list[str]:
    """Standard-library imports for the types used, one line per module, sorted as isort would."""
    names_of: dict[str, list[str]] = defaultdict(list)
    for type_name in sorted(used & _PY_TYPE_MODULES.keys()):
        names_of[_PY_TYPE_MODULES[type_name]].append(type_name)
    modules = sorted([*names_of, "typing"])
    names_of["typing"] = ["Any", "NotRequired", "TypedDict"]
    return [f"from {module} import {', '.join(names_of[module])}" for module in modules]


def _optional_on_insert(column: Column) -> bool:
    return column.is_nullable or column.is_identity or (column.has_default and not column.is_generated)


def render_python(catalog: Catalog) -> str:
    """Pydantic rows and TypedDict inserts for the tables; generated columns are absent from inserts."""
    body: list[str] = []
    used: set[str] = set()
    for table in catalog.tables:
        name = _class_name(table.name)
        body += ["", "", f"class {name}Row(BaseModel):", f'    """A row of {table.name}: {table.comment or ""}"""', ""]
        body += ["    model_config = ConfigDict(frozen=True)", ""]
        for column in table.columns:
            used.add(PY_TYPES.get(column.element_format, "str"))
            null = " | None" if column.is_nullable else ""
            body.append(f"    {column.name}: {_py_type(column)}{null}")
            if column.comment:
                body.append(f'    """{column.comment}"""')
        body += ["", "", f"class {name}Insert(TypedDict):"]
        body += [f'    """Columns to insert into {table.name}; generated ones are absent."""', ""]
        for column in table.columns:
            if column.is_generated:
                continue
            null = " | None" if column.is_nullable else ""
            annotation = f"{_py_type(column)}{null}"
            if _optional_on_insert(column):
                annotation = f"NotRequired[{annotation}]"
            body.append(f"    {column.name}: {annotation}")
    header = [
        '"""Database types generated by `usagemeter gen-types --lang python` from the migrated database."""',
        "",
        "# Do not edit: regenerate, and the drift test compares this file with the database.",
        "",
        "from __future__ import annotations",
        "",
        *_python_imports(used),
        "",
        "from pydantic import BaseModel, ConfigDict",
        "",
        "Json = Any",
    ]
    return "\n".join(header + body).rstrip() + "\n"
