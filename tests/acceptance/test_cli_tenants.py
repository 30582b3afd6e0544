"""`usagemeter tenant` and `usagemeter user`, as a new user drives them: no SQL, clear errors, RLS deciding."""

from __future__ import annotations

import json
import uuid
from typing import Any

import psycopg

from tests.acceptance.test_cli_database import usagemeter


def run_json(*args: str) -> Any:
    result = usagemeter(*args, "--format", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def new_user(database_url: str, email: str | None = None) -> str:
    result = usagemeter("user", "create", *(("--email", email) if email else ()), "--database-url", database_url)
    assert result.returncode == 0, result.stderr
    return str(uuid.UUID(result.stdout.strip()))


def test_a_new_user_makes_a_tenant_and_its_members_without_sql(
    database_url: str, owner: psycopg.Connection[Any]
) -> None:
    db = ("--database-url", database_url)
    ada = new_user(database_url, "ada@example.test")
    grace, alan = new_user(database_url), new_user(database_url)
    assert owner.execute("select email from auth.users where id = %s", (ada,)).fetchone() == ("ada@example.test",)

    made = usagemeter("tenant", "create", "--name", "Acme Corp", "--slug", "acme", "--owner", ada, *db)
    assert made.returncode == 0, made.stderr
    acme = str(uuid.UUID(made.stdout.strip()))

    # Ada, the owner, adds an admin; the admin adds a member.
    added = run_json("tenant", "add-member", acme, grace, "--role", "admin", "--as-user", ada, *db)
    assert (added["tenant_id"], added["user_id"], added["role"]) == (acme, grace, "admin")
    run_json("tenant", "add-member", acme, alan, "--role", "member", "--as-user", grace, *db)

    listed = run_json("tenant", "list", "--as-user", alan, *db)
    assert [(t["id"], t["slug"], t["name"], t["role"]) for t in listed] == [(acme, "acme", "Acme Corp", "member")]
    members = run_json("tenant", "members", acme, "--as-user", alan, *db)
    assert [(m["user_id"], m["role"]) for m in members] == [(ada, "owner"), (grace, "admin"), (alan, "member")]

    table = usagemeter("tenant", "list", *db)
    assert table.returncode == 0, table.stderr
    assert acme in table.stdout
    assert "Acme Corp" in table.stdout

    # A member may not remove anyone; the admin may not remove the owner; the owner removes the admin.
    refused = usagemeter("tenant", "remove-member", acme, grace, "--as-user", alan, *db)
    assert refused.returncode == 1
    assert "not allowed" in refused.stderr
    assert "Traceback" not in refused.stderr
    refused = usagemeter("tenant", "remove-member", acme, ada, "--as-user", grace, *db)
    assert refused.returncode == 1
    assert "only owners" in refused.stderr
    removed = run_json("tenant", "remove-member", acme, grace, "--as-user", ada, *db)
    assert (removed["user_id"], removed["removed"]) == (grace, True)
    remaining = owner.execute("select user_id::text from public.tenant_members where tenant_id = %s order by role desc",
                              (acme,)).fetchall()  # fmt: skip
    assert sorted(r[0] for r in remaining) == sorted([ada, alan])

    # A stranger sees no tenant and no members.
    stranger = new_user(database_url)
    assert run_json("tenant", "list", "--as-user", stranger, *db) == []
    assert run_json("tenant", "members", acme, "--as-user", stranger, *db) == []


def test_user_create_prints_json_with_format_json(database_url: str) -> None:
    made = run_json("user", "create", "--email", "grace@example.test", "--database-url", database_url)
    assert made["email"] == "grace@example.test"
    uuid.UUID(made["id"])
    again = usagemeter("user", "create", "--email", "grace@example.test", "--database-url", database_url)
    assert again.returncode == 1
    assert "already exists" in again.stderr


def test_bad_input_exits_2_and_refusals_exit_1_naming_the_rule(
    database_url: str, owner: psycopg.Connection[Any]
) -> None:
    db = ("--database-url", database_url)
    bad_slug = usagemeter("tenant", "create", "--name", "Acme", "--slug", "Acme Corp", *db)
    assert bad_slug.returncode == 2
    assert "--slug: must be 1 to 63 lowercase letters" in bad_slug.stderr
    bad_role = usagemeter("tenant", "add-member", str(uuid.uuid4()), str(uuid.uuid4()), "--role", "boss", *db)
    assert bad_role.returncode == 2
    assert "--role: must be one of owner, admin, member" in bad_role.stderr

    assert usagemeter("tenant", "create", "--name", "Acme", "--slug", "acme", *db).returncode == 0
    taken = usagemeter("tenant", "create", "--name", "Acme 2", "--slug", "acme", *db)
    assert taken.returncode == 1
    assert "slug: a tenant with slug 'acme' already exists" in taken.stderr

    user = new_user(database_url)
    as_user = usagemeter("tenant", "create", "--name", "Mine", "--slug", "mine", "--as-user", user, *db)
    assert as_user.returncode == 2  # tenant create has no --as-user: only the service role creates tenants
    acme = owner.execute("select id::text from public.tenants where slug = 'acme'").fetchone()
    assert acme is not None
    ghost = str(uuid.uuid4())
    unknown = usagemeter("tenant", "add-member", acme[0], ghost, "--role", "member", *db)
    assert unknown.returncode == 1
    assert f"no user has id {ghost}" in unknown.stderr
    not_allowed = usagemeter("tenant", "add-member", acme[0], user, "--role", "member", "--as-user", user, *db)
    assert not_allowed.returncode == 1
    assert "not allowed" in not_allowed.stderr
    assert owner.execute("select count(*) from public.tenant_members").fetchone() == (0,)


def test_user_create_is_refused_where_supabase_auth_owns_auth_users(
    database_url: str, owner: psycopg.Connection[Any]
) -> None:
    owner.execute("comment on table auth.users is 'Auth: Stores user login data within a secure schema.'")
    refused = usagemeter("user", "create", "--email", "ada@example.test", "--database-url", database_url)
    assert refused.returncode == 1
    assert "create users through Supabase Auth" in " ".join(refused.stderr.split())
    assert owner.execute("select count(*) from auth.users").fetchone() == (0,)


def test_names_and_errors_print_as_they_are_never_as_markup(database_url: str) -> None:
    db = ("--database-url", database_url)
    assert usagemeter("tenant", "create", "--name", "[bold]Acme :ticket:", "--slug", "acme", *db).returncode == 0
    listed = usagemeter("tenant", "list", *db)
    assert listed.returncode == 0, listed.stderr
    assert "[bold]Acme :ticket:" in listed.stdout
    refused = usagemeter("tenant", "create", "--name", "x", "--slug", "[/]", *db)
    assert refused.returncode == 2
    assert "got '[/]'" in refused.stderr
    assert "Traceback" not in refused.stderr
