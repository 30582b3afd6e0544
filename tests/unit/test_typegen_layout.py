"""The TypeScript layout rules, without a database: sorting as JavaScript sorts, fitting as prettier fits."""

from __future__ import annotations

from usagemeter.ops import prettier_doc as p
from usagemeter.ops import typegen_views
from usagemeter.ops import typescript_syntax as ts
from usagemeter.ops.typegen_catalog import locale_key

# The order Node 20's `names.sort((a, b) => a.localeCompare(b))` gives (ICU root collation).
NODE_ORDER = [
    "a",
    "A",
    "a_b",
    "a1",
    "ab",
    "b",
    "B",
    "tenant_members",
    "tenants",
    "usage_x",
    "Usage_y",
    "usage-z",
    "usage$",
    "usage1",
    "x y",
    "x.y",
]


def test_locale_key_sorts_as_javascript_localecompare() -> None:
    assert sorted(reversed(NODE_ORDER), key=locale_key) == NODE_ORDER
    assert sorted(NODE_ORDER) != NODE_ORDER  # code-point order would differ


def _member(name: str, doc: p.Doc) -> p.Doc:
    return p.concat(name, ": ", doc)


def test_a_union_that_fits_stays_on_one_line_and_one_that_does_not_breaks_every_member() -> None:
    short = ts.union(['"free"', '"pro"'])
    long = ts.union([f'"value_number_{i}"' for i in range(6)])
    text = p.print_doc(ts.type_literal([_member("short", short), _member("long", long)], expanded=True))
    assert text == (
        '{\n  short: "free" | "pro"\n  long:\n' + "".join(f'    | "value_number_{i}"\n' for i in range(6)) + "}"
    )


def test_an_object_type_goes_flat_with_semicolons_only_when_it_fits_in_80_columns() -> None:
    args = ts.type_literal([_member("a", "string"), _member("b", "number")], expanded=False)
    fits = ts.type_literal([_member("Args", args), _member("Returns", "number")], expanded=False)
    assert p.print_doc(p.concat("f: ", fits)) == "f: { Args: { a: string; b: number }; Returns: number }"
    wide = p.concat(" " * 40, "f: ", fits)
    assert p.print_doc(wide).splitlines() == [
        " " * 40 + "f: {",
        "  Args: { a: string; b: number }",
        "  Returns: number",
        "}",
    ]


def test_an_expanded_object_breaks_the_groups_around_it() -> None:
    inner = ts.type_literal([_member("x", "number")], expanded=True)
    outer = ts.type_literal([_member("Returns", inner)], expanded=False)
    assert p.print_doc(outer) == "{\n  Returns: {\n    x: number\n  }\n}"


def test_keys_are_quoted_only_where_typescript_needs_it() -> None:
    assert ts.key("tenant_id") == "tenant_id"
    assert ts.key("") == '""'
    assert ts.key("Sale Price") == '"Sale Price"'


# A view's stored query as PostgreSQL 15 prints it (abridged): `select id, name from tenants` (oid 31246).
VIEW_QUERY = (
    "({QUERY :commandType 1 :utilityStmt <> :rtable ({RANGETBLENTRY :alias <> :eref {ALIAS :aliasname tenants"
    ' :colnames ("id" "name" "slug")} :relid 31246}) :jointree {FROMEXPR :fromlist ({RANGETBLREF :rtindex 1})'
    " :quals <>} :targetList ({TARGETENTRY :expr {VAR :varno 1 :varattno 1} :resno 1 :resname id"
    " :ressortgroupref 0 :resorigtbl 31246 :resorigcol 1 :resjunk false} {TARGETENTRY :expr {FUNCEXPR"
    " :funcid 870 :args ({VAR :varno 1 :varattno 2})} :resno 2 :resname lower\\ name :ressortgroupref 0"
    " :resorigtbl 0 :resorigcol 0 :resjunk false}) :override 0 :constvalue 4 [ 1 0 0 0 ]})"
)


def test_view_columns_are_traced_to_their_table_columns() -> None:
    assert typegen_views.target_origins(VIEW_QUERY) == [(1, 31246, 1), (2, 0, 0)]
