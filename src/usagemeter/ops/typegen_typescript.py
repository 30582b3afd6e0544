"""TypeScript `Database` types, byte for byte as Supabase's generator (postgres-meta) writes them.

So a project can swap `usagemeter gen-types --lang typescript` and `supabase gen types typescript`
freely: the same rules decide every type (a generated column is optional in Insert and Update,
only an identity-always column is `never`), the same helpers (`Tables`, `TablesInsert`,
`TablesUpdate`, `Enums`, `CompositeTypes`) and `Constants` are exported, and the text is laid
out as prettier lays it out (prettier_doc). Database comments are not emitted: Supabase's
generator emits none, and the output would differ.
"""

from __future__ import annotations

from importlib import resources

from usagemeter.ops import prettier_doc as p
from usagemeter.ops import typescript_syntax as ts
from usagemeter.ops.typegen_catalog import (
    Argument,
    Catalog,
    Column,
    Function,
    PgType,
    Relation,
    Relationship,
    locale_key,
)

_STRING_TYPES = {
    "bytea",
    "bpchar",
    "varchar",
    "date",
    "text",
    "citext",
    "time",
    "timetz",
    "timestamp",
    "timestamptz",
    "uuid",
    "vector",
}
_NUMBER_TYPES = {"int2", "int4", "int8", "float4", "float8", "numeric"}
# Types PostgREST accepts as the single unnamed argument of a function: json, jsonb, text.
_UNNAMED_ARGUMENT_TYPE_IDS = {114, 3802, 25}


# -- Type mapping (postgres-meta's pgTypeToTsType) ------------------------------------------------------


class _Types:
    """Maps PostgreSQL type names to TypeScript for one schema, looking user types up in the catalog."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.by_id = {t.id: t for t in catalog.types}

    def _prefer(self, candidates: list[PgType], schema: str) -> PgType:
        return next((t for t in candidates if t.schema == schema), candidates[0])

    def of(self, name: str, schema: str) -> str:
        if name == "bool":
            return "boolean"
        if name in _NUMBER_TYPES:
            return "number"
        if name in _STRING_TYPES:
            return "string"
        if name in ("json", "jsonb"):
            return "Json"
        if name == "void":
            return "undefined"
        if name == "record":
            return "Record<string, unknown>"
        if name.startswith("_"):
            element = self.of(name[1:], schema)
            return f"({element})[]" if " | " in element else f"{element}[]"
        enums = [t for t in self.catalog.types if t.name == name and t.enums]
        if enums:
            enum = self._prefer(enums, schema)
            if enum.schema in self.catalog.schemas:
                return f'Database[{ts.string(enum.schema)}]["Enums"][{ts.string(enum.name)}]'
            return " | ".join(ts.string(label) for label in enum.enums)
        composites = [t for t in self.catalog.types if t.name == name and t.attributes]
        if composites:
            composite = self._prefer(composites, schema)
            if composite.schema in self.catalog.schemas:
                return f'Database[{ts.string(composite.schema)}]["CompositeTypes"][{ts.string(composite.name)}]'
            return "unknown"
        for kind, section in (("table", "Tables"), ("view", "Views")):
            rows = [r for r in self.catalog.relations if r.kind == kind and r.name == name]
            if rows:
                row = next((r for r in rows if r.schema == schema), rows[0])
                return f'Database[{ts.string(row.schema)}][{ts.string(section)}][{ts.string(row.name)}]["Row"]'
        return "unknown"

    def of_id(self, type_id: int, schema: str) -> str:
        found = self.by_id.get(type_id)
        return self.of(found.name, schema) if found else "unknown"


def _type_doc(text: str) -> p.Doc:
    """A mapped type as a document: an inlined enum (`"a" | "b"`) is a union that may break."""
    if " | " in text and not text.startswith("("):
        return ts.union(list(text.split(" | ")))
    return text


# -- The Database type --------------------------------------------------------------------------------


class _Renderer:
    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.types = _Types(catalog)
        self.relation_names = {r.id: r.name for r in catalog.relations}
        self.relation_types = {t.id: t for t in catalog.types if t.type_relation_id}

    def column(self, column: Column, schema: str, *, optional: bool, nullable: bool) -> p.Doc:
        text = self.types.of(column.format, schema)
        return ts.member(column.name, ts.nullable(_type_doc(text), text, nullable=nullable), optional=optional)

    def relationship(self, relationship: Relationship) -> p.Doc:
        def names(values: list[str]) -> p.Doc:
            return ts.tuple_type([ts.string(v) for v in values])

        members: list[p.Doc] = [
            ts.member("foreignKeyName", ts.string(relationship.foreign_key_name)),
            ts.member("columns", names(relationship.columns)),
            ts.member("isOneToOne", "true" if relationship.is_one_to_one else "false"),
            ts.member("referencedRelation", ts.string(relationship.referenced_relation)),
            ts.member("referencedColumns", names(relationship.referenced_columns)),
        ]
        return ts.type_literal(members, expanded=True)

    def relationships(self, relation: Relation) -> p.Doc:
        return ts.member("Relationships", ts.tuple_type([self.relationship(r) for r in relation.relationships]))

    def computed_fields(self, relation: Relation, functions: list[Function], schema: str) -> list[p.Doc]:
        """Functions taking a row of `relation` are columns of its Row, as PostgREST lets you select them."""
        fields: list[p.Doc] = []
        for function in functions:
            if function.argument_types == relation.name:
                returned, text = self.function_result(function, schema)
                nullable = ts.nullable(returned, text, nullable=True, object_type=not text)
                fields.append(ts.member(function.name, nullable))
        return fields

    def table(self, table: Relation, functions: list[Function], schema: str) -> p.Doc:
        row = [self.column(c, schema, optional=False, nullable=c.is_nullable) for c in table.columns]
        row += self.computed_fields(table, functions, schema)
        insert: list[p.Doc] = []
        update: list[p.Doc] = []
        for column in table.columns:
            if column.is_identity_always:
                insert.append(ts.member(column.name, "never", optional=True))
                update.append(ts.member(column.name, "never", optional=True))
                continue
            on_insert = column.is_nullable or column.is_identity or column.has_default
            insert.append(self.column(column, schema, optional=on_insert, nullable=column.is_nullable))
            update.append(self.column(column, schema, optional=True, nullable=column.is_nullable))
        members = [
            ts.member("Row", ts.type_literal(row, expanded=True)),
            ts.member("Insert", ts.type_literal(insert, expanded=True)),
            ts.member("Update", ts.type_literal(update, expanded=True)),
            self.relationships(table),
        ]
        return ts.member(table.name, ts.type_literal(members, expanded=True))

    def view(self, view: Relation, functions: list[Function], schema: str) -> p.Doc:
        row = [self.column(c, schema, optional=False, nullable=c.is_nullable) for c in view.columns]
        row += self.computed_fields(view, functions, schema)
        members = [ts.member("Row", ts.type_literal(row, expanded=True))]
        if view.is_updatable:
            for section in ("Insert", "Update"):
                columns = [
                    self.column(c, schema, optional=True, nullable=True)
                    if c.is_updatable
                    else ts.member(c.name, "never", optional=True)
                    for c in view.columns
                ]
                members.append(ts.member(section, ts.type_literal(columns, expanded=True)))
        members.append(self.relationships(view))
        return ts.member(view.name, ts.type_literal(members, expanded=True))

    # -- functions

    def is_callable(self, function: Function) -> bool:
        """Whether PostgREST can call it: named arguments, or a single unnamed json/jsonb/text or row one."""
        in_args = sorted(function.in_args, key=lambda a: locale_key(a.name))
        if not in_args or all(arg.name for arg in in_args):
            return True
        if all(arg.name or (arg.has_default and arg.type_id in _UNNAMED_ARGUMENT_TYPE_IDS) for arg in in_args):
            return True
        return len(in_args) == 1 and (
            in_args[0].type_id in _UNNAMED_ARGUMENT_TYPE_IDS or in_args[0].type_id in self.relation_types
        )

    def returned_relation_name(self, function: Function) -> str | None:
        if not function.return_type_relation_id:
            return None
        if function.return_type_relation_id in self.relation_names:
            return self.relation_names[function.return_type_relation_id]
        returned = self.relation_types.get(function.return_type_id)
        return returned.name if returned else None

    def function_result(self, function: Function, schema: str) -> tuple[p.Doc, str]:
        """The Returns type, and its text when it is not an object type ("" for one, which hugs a `| null`)."""
        table_args = [a for a in self._sorted_args(function) if a.mode == "table"]
        if table_args:
            fields = [ts.member(a.name, _type_doc(self.types.of_id(a.type_id, schema))) for a in table_args]
            return ts.type_literal(fields, expanded=True), ""
        relation = next(
            (r for r in self.catalog.relations if r.schema == schema and r.id == function.return_type_relation_id),
            None,
        )
        if relation is not None:
            columns = [self.column(c, schema, optional=False, nullable=c.is_nullable) for c in relation.columns]
            return ts.type_literal(columns, expanded=True), ""
        text = self.types.of_id(function.return_type_id, schema)
        return _type_doc(text), text

    @staticmethod
    def _sorted_args(function: Function) -> list[Argument]:
        return sorted(function.args, key=lambda a: locale_key(a.name))

    def setof_options(self, function: Function) -> p.Doc | None:
        returned = self.returned_relation_name(function)
        many = function.prorows is not None and function.prorows > 1
        options: tuple[str, str, bool, bool] | None = None
        if returned:
            options = ("*", returned, not many, function.is_set_returning)
        if len(function.args) == 1 and function.args[0].type_id in self.relation_types:
            source = self.relation_types[function.args[0].type_id].format
            if function.is_set_returning and function.return_type_relation_id is not None and returned:
                options = (source, returned, not many, True)
            elif returned:
                options = (source, returned, True, False)
        if options is None:
            return None
        source, target, one_to_one, setof = options
        members: list[p.Doc] = [
            ts.member("from", ts.string(source)),
            ts.member("to", ts.string(target)),
            ts.member("isOneToOne", "true" if one_to_one else "false"),
            ts.member("isSetofReturn", "true" if setof else "false"),
        ]
        return ts.member("SetofOptions", ts.type_literal(members, expanded=True))

    def type_name(self, type_id: int) -> str:
        found = self.types.by_id.get(type_id)
        return found.name if found else "unknown"

    def row_argument_error(self, function: Function) -> str | None:
        """PostgREST's refusal of a function whose only, unnamed argument is a row but that returns no row."""
        in_args = function.in_args
        if (
            len(in_args) == 1
            and not in_args[0].name
            and in_args[0].type_id in self.relation_types
            and not self.returned_relation_name(function)
        ):
            return (
                f"the function {function.schema}.{function.name} with parameter or with a single unnamed "
                "json/jsonb parameter, but no matches were found in the schema cache"
            )
        return None

    def overload_error(self, function: Function, overloads: list[Function]) -> str | None:
        """PostgREST's refusal of a call it cannot resolve between overloads, as postgres-meta types it."""
        if len(overloads) <= 1:
            return None
        in_args = function.in_args
        qualified = f"{function.schema}.{function.name}"
        lead = "Could not choose the best candidate function between: "
        suffix = (
            ". Try renaming the parameters or the function itself in the database"
            " so function overloading can be resolved"
        )
        if not in_args:
            for other in overloads:
                others = other.in_args
                if other is not function and len(others) == 1 and not others[0].name and others[0].has_default:
                    returned = self.type_name(other.return_type_id)
                    return f"{lead}{qualified}(), {qualified}( => {returned}){suffix}"
        if len(in_args) == 1 and in_args[0].name:
            clashing = [
                other
                for other in overloads
                if other is not function
                and len(other.in_args) == 1
                and other.in_args[0].name == in_args[0].name
                and other.in_args[0].type_id != in_args[0].type_id
            ]
            if clashing:
                candidates = sorted([function, *clashing], key=lambda f: f.in_args[0].type_id)
                listed = ", ".join(
                    f"{qualified}("
                    + ", ".join(f"{a.name} => {self.type_name(a.type_id)}" for a in candidate.in_args)
                    + ")"
                    for candidate in candidates
                )
                return f"{lead}{listed}{suffix}"
        return None

    def signature(self, function: Function, overloads: list[Function], schema: str) -> p.Doc:
        in_args = [a for a in self._sorted_args(function) if a.mode in ("in", "inout", "variadic")]
        args: p.Doc = "never"
        if in_args:
            members = [
                ts.member(a.name, _type_doc(self.types.of_id(a.type_id, schema)), optional=a.has_default)
                for a in in_args
            ]
            args = ts.type_literal(members, expanded=False)
        returned, _ = self.function_result(function, schema)
        error = self.overload_error(function, overloads) or self.row_argument_error(function)
        if error is not None:
            error_object = ts.type_literal([ts.member("error", "true")], expanded=False)
            returned = p.Group(p.concat(error_object, " & ", ts.string(error)))
        many = function.prorows is not None and function.prorows > 1
        if function.is_set_returning and many:
            returned = p.concat(returned, "[]")
        members = [ts.member("Args", args), ts.member("Returns", returned)]
        setof = self.setof_options(function)
        if setof is not None:
            members.append(setof)
        return ts.type_literal(members, expanded=False)

    def functions(self, functions: list[Function], schema: str) -> list[p.Doc]:
        by_name: dict[str, list[Function]] = {}
        for function in functions:
            by_name.setdefault(function.name, []).append(function)
        entries: list[p.Doc] = []
        for name, overloads in by_name.items():
            overloads.sort(key=lambda f: (locale_key(f.argument_types), locale_key(f.return_type)))
            signatures = [self.signature(f, overloads, schema) for f in overloads]
            entries.append(ts.member(name, ts.union(signatures)))
        return entries

    # -- schemas

    def schema(self, schema: str) -> p.Doc:
        functions = [f for f in self.catalog.functions if f.schema == schema and self.is_callable(f)]
        tables = [self.table(t, functions, schema) for t in self.catalog.relations_of(schema, tables=True)]
        views = [self.view(v, functions, schema) for v in self.catalog.relations_of(schema, tables=False)]
        enums = [ts.member(t.name, ts.union([ts.string(label) for label in t.enums])) for t in self.enums_of(schema)]
        composites = [
            ts.member(
                t.name,
                ts.type_literal(
                    [ts.member(a.name, self._attribute_type(a.type_id, schema)) for a in t.attributes], expanded=True
                ),
            )
            for t in sorted(
                (t for t in self.catalog.types if t.schema == schema and t.attributes), key=lambda t: locale_key(t.name)
            )
        ]

        def section(name: str, members: list[p.Doc]) -> p.Doc:
            return ts.member(name, ts.type_literal(members, expanded=True) if members else ts.never_object())

        return ts.member(
            schema,
            ts.type_literal(
                [
                    section("Tables", tables),
                    section("Views", views),
                    section("Functions", self.functions(functions, schema)),
                    section("Enums", enums),
                    section("CompositeTypes", composites),
                ],
                expanded=True,
            ),
        )

    def _attribute_type(self, type_id: int, schema: str) -> p.Doc:
        text = self.types.of_id(type_id, schema)
        return ts.nullable(_type_doc(text), text, nullable=True)

    def enums_of(self, schema: str) -> list[PgType]:
        enums = (t for t in self.catalog.types if t.schema == schema and t.enums)
        return sorted(enums, key=lambda t: locale_key(t.name))

    def database(self) -> p.Doc:
        schemas = [self.schema(s) for s in self.catalog.schemas]
        return p.concat("export type Database = ", ts.type_literal(schemas, expanded=True))

    def constants(self) -> p.Doc:
        schemas: list[p.Doc] = []
        for schema in self.catalog.schemas:
            enums: list[p.Doc] = [
                p.concat(ts.key(t.name), ": ", ts.tuple_type([ts.string(label) for label in t.enums]))
                for t in self.enums_of(schema)
            ]
            enums_doc = ts.object_literal(enums, expanded=True)
            schemas.append(
                p.concat(ts.key(schema), ": ", ts.object_literal([p.concat("Enums: ", enums_doc)], expanded=True))
            )
        return p.concat("export const Constants = ", ts.object_literal(schemas, expanded=True), " as const")


JSON_TYPE = """export type Json =
  | string
  | number
  | boolean
  | null
  | { [key: string]: Json | undefined }
  | Json[]"""


def _helpers() -> str:
    """The helper types, as prettier prints postgres-meta's template (they depend only on the default schema)."""
    return resources.files("usagemeter.ops").joinpath("supabase_types_tail.ts").read_text(encoding="utf-8").rstrip()


def render(catalog: Catalog, *, width: int = p.WIDTH) -> str:
    """The `supabase gen types typescript` text for `catalog`; a huge `width` puts every group that may go flat flat."""
    renderer = _Renderer(catalog)
    database = p.print_doc(renderer.database(), width)
    constants = p.print_doc(renderer.constants(), width)
    return "\n\n".join([JSON_TYPE, database, _helpers(), constants]) + "\n"
