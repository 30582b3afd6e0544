"""The committed generated types equal what the migrated database produces: a migration without regenerating fails."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest

from usagemeter.ops import typegen

COMMITTED = {
    "typescript": "packages/database/src/types/database.ts",
    "python": "src/usagemeter/database_types.py",
}
REGENERATE = "usagemeter gen-types --lang {lang} -o {path}"


@pytest.mark.parametrize("lang", ["typescript", "python"])
def test_committed_types_match_the_database(owner: psycopg.Connection[Any], repo_root: Path, lang: str) -> None:
    path = COMMITTED[lang]
    generated = typegen.render(typegen.introspect(owner), lang)  # type: ignore[arg-type]
    committed = (repo_root / path).read_text(encoding="utf-8")
    assert generated == committed, f"types drifted from the migrations: run `{REGENERATE.format(lang=lang, path=path)}`"


def test_typescript_follows_supabase_insert_rules(owner: psycopg.Connection[Any]) -> None:
    text = typegen.render_typescript(typegen.introspect(owner))
    usage = text[text.index("      usage_events: {") :]
    row = usage[usage.index("Row: {") : usage.index("Insert: {")]
    insert = usage[usage.index("Insert: {") : usage.index("Update: {")]
    update = usage[usage.index("Update: {") : usage.index("Relationships: [")]
    assert "tokens_total: number" in row
    assert "tenant_id: string | null" in row
    assert "tokens_total?: never" in insert
    assert "action: string" in insert  # required: not null, no default
    assert "id?: string" in insert  # defaulted
    assert "tenant_id?: string | null" in insert  # nullable
    assert "action?: string" in update
    assert 'referencedRelation: "tenants"' in usage


def test_python_types_validate_a_real_row(owner: psycopg.Connection[Any]) -> None:
    from psycopg.rows import dict_row

    from usagemeter import database_types

    user = owner.execute("insert into auth.users (id) values (gen_random_uuid()) returning id").fetchone()
    assert user is not None
    owner.execute("insert into public.usage_events (user_id, action) values (%s, 'a:b:c')", (user[0],))
    with owner.cursor(row_factory=dict_row) as cur:
        row = cur.execute("select * from public.usage_events").fetchone()
    assert row is not None
    parsed = database_types.UsageEventsRow.model_validate(row)
    assert parsed.tokens_total == 0
    assert parsed.tenant_id is None
