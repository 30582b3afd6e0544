"""Tenancy functions under RLS, on the app login: the database decides, and every refusal is a clear error."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest

from usagemeter import db, errors
from usagemeter.db import Identity
from usagemeter.tenancy import tenants, users


@pytest.fixture
def app(app_database_url: str) -> Iterator[psycopg.Connection[Any]]:
    """The app login (authenticator), as the API and CLI connect: it can only act as a request role."""
    with db.connect(app_database_url, autocommit=True) as conn:
        yield conn


@dataclass(frozen=True)
class Org:
    tenant: uuid.UUID
    other_tenant: uuid.UUID
    owner_id: uuid.UUID
    admin_id: uuid.UUID
    member_id: uuid.UUID
    outsider_id: uuid.UUID


@pytest.fixture
def org(owner: psycopg.Connection[Any], app: psycopg.Connection[Any]) -> Org:
    """A tenant with an owner, an admin and a member, made through the API; an outsider owns another tenant."""
    owner_id, admin_id, member_id, outsider_id = (users.create_user(owner) for _ in range(4))
    service = Identity.service()
    tenant = tenants.create_tenant(app, service, name="Acme", slug="acme", owner_user_id=owner_id)
    other = tenants.create_tenant(app, service, name="Globex", slug="globex", owner_user_id=outsider_id)
    tenants.add_member(app, service, tenant_id=tenant.id, user_id=admin_id, role="admin")
    tenants.add_member(app, service, tenant_id=tenant.id, user_id=member_id, role="member")
    return Org(tenant.id, other.id, owner_id, admin_id, member_id, outsider_id)


def roles_of(conn: psycopg.Connection[Any], tenant_id: uuid.UUID) -> dict[uuid.UUID, str]:
    """Memberships as the table owner sees them: what is really stored."""
    rows = conn.execute("select user_id, role from public.tenant_members where tenant_id = %s", (tenant_id,))
    return dict(rows.fetchall())


def test_the_service_role_creates_a_tenant_with_its_owner_in_one_go(
    owner: psycopg.Connection[Any], app: psycopg.Connection[Any]
) -> None:
    ada = users.create_user(owner, email="ada@example.test")
    made = tenants.create_tenant(app, Identity.service(), name="Acme Corp", slug="acme", owner_user_id=ada)
    assert (made.name, made.slug, made.role) == ("Acme Corp", "acme", None)
    assert made.as_json()["id"] == str(made.id)
    assert roles_of(owner, made.id) == {ada: "owner"}
    [seen] = tenants.list_tenants(app, Identity.user(ada))
    assert (seen.id, seen.slug, seen.role) == (made.id, "acme", "owner")


def test_a_tenant_without_an_owner_has_no_members(owner: psycopg.Connection[Any], app: psycopg.Connection[Any]) -> None:
    made = tenants.create_tenant(app, Identity.service(), name="Solo", slug="solo")
    assert roles_of(owner, made.id) == {}
    assert [t.slug for t in tenants.list_tenants(app, Identity.service())] == ["solo"]


@pytest.mark.parametrize("who", ["owner", "member", "outsider"])
def test_only_the_service_role_creates_tenants(
    who: str, org: Org, owner: psycopg.Connection[Any], app: psycopg.Connection[Any]
) -> None:
    user = {"owner": org.owner_id, "member": org.member_id, "outsider": org.outsider_id}[who]
    with pytest.raises(errors.PermissionDenied, match="only the service role creates tenants"):
        tenants.create_tenant(app, Identity.user(user), name="Mine", slug="mine", owner_user_id=user)
    assert owner.execute("select count(*) from public.tenants where slug = 'mine'").fetchone() == (0,)


def test_anon_may_neither_create_nor_list(app: psycopg.Connection[Any]) -> None:
    with pytest.raises(errors.PermissionDenied):
        tenants.create_tenant(app, Identity.anon(), name="Mine", slug="mine")
    with pytest.raises(errors.PermissionDenied, match="list tenants"):
        tenants.list_tenants(app, Identity.anon())


def test_a_duplicate_slug_is_a_conflict_and_the_owner_of_the_failed_one_is_not_added(
    org: Org, owner: psycopg.Connection[Any], app: psycopg.Connection[Any]
) -> None:
    newcomer = users.create_user(owner)
    with pytest.raises(errors.TenantConflict, match="slug: a tenant with slug 'acme' already exists") as caught:
        tenants.create_tenant(app, Identity.service(), name="Acme again", slug="acme", owner_user_id=newcomer)
    assert caught.value.field == "slug"
    assert owner.execute("select count(*) from public.tenant_members where user_id = %s", (newcomer,)).fetchone() == (
        0,
    )


@pytest.mark.parametrize(
    ("name", "slug", "field"),
    [
        ("Acme", "Acme", "slug"),
        ("Acme", "-acme", "slug"),
        ("Acme", "acme-", "slug"),
        ("Acme", "acme\n", "slug"),
        ("Acme", "a" * 64, "slug"),
        ("Acme", "", "slug"),
        ("", "acme", "name"),
        ("x" * 201, "acme", "name"),
        ("nul\x00name", "acme", "name"),
    ],
)
def test_a_bad_name_or_slug_names_the_field_and_rule(
    name: str, slug: str, field: str, owner: psycopg.Connection[Any], app: psycopg.Connection[Any]
) -> None:
    with pytest.raises(errors.InvalidTenant, match=f"^{field}: ") as caught:
        tenants.create_tenant(app, Identity.service(), name=name, slug=slug)
    assert caught.value.field == field
    assert isinstance(caught.value, ValueError)
    assert owner.execute("select count(*) from public.tenants").fetchone() == (0,)


def test_the_python_rules_are_the_database_checks(owner: psycopg.Connection[Any]) -> None:
    """Whatever the Python checks accept, the CHECKs accept, and the other way round (so the backstop agrees)."""
    samples = ["a", "a-b", "a--b", "0", "a" * 63, "a" * 64, "A", "a_b", "-a", "a-", "é", "a b", ""]
    for slug in samples:
        python_ok = tenants.SLUG_PATTERN.fullmatch(slug) is not None
        row = owner.execute("select %s ~ '^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$'", (slug,)).fetchone()
        assert row == (python_ok,), slug


def test_the_database_backstop_names_the_field_too(owner: psycopg.Connection[Any]) -> None:
    with pytest.raises(psycopg.errors.CheckViolation) as caught, owner.transaction():
        owner.execute("insert into public.tenants (name, slug) values ('x', 'Bad')")
    refused = tenants._refusal(caught.value, doing="create tenant 'Bad'")
    assert isinstance(refused, errors.InvalidTenant)
    assert refused.field == "slug"


def test_list_tenants_shows_each_caller_what_rls_lets_them_see(org: Org, app: psycopg.Connection[Any]) -> None:
    def seen(identity: Identity) -> list[tuple[str, str | None]]:
        return [(t.slug, t.role) for t in tenants.list_tenants(app, identity)]

    assert seen(Identity.service()) == [("acme", None), ("globex", None)]
    assert seen(Identity.user(org.owner_id)) == [("acme", "owner")]
    assert seen(Identity.user(org.admin_id)) == [("acme", "admin")]
    assert seen(Identity.user(org.member_id)) == [("acme", "member")]
    assert seen(Identity.user(org.outsider_id)) == [("globex", "owner")]
    assert seen(Identity.user(uuid.uuid4())) == []


def test_members_are_listed_to_fellow_members_only(org: Org, app: psycopg.Connection[Any]) -> None:
    expected = [(org.owner_id, "owner"), (org.admin_id, "admin"), (org.member_id, "member")]
    for identity in (Identity.service(), Identity.user(org.member_id), Identity.user(org.owner_id)):
        assert [(m.user_id, m.role) for m in tenants.list_members(app, identity, org.tenant)] == expected
    assert tenants.list_members(app, Identity.user(org.outsider_id), org.tenant) == []
    with pytest.raises(errors.PermissionDenied):
        tenants.list_members(app, Identity.anon(), org.tenant)


# Who may add a member of each role: owners anything, admins all but owners, nobody else.
ADD_MATRIX = [
    ("owner", "member", True),
    ("owner", "admin", True),
    ("owner", "owner", True),
    ("admin", "member", True),
    ("admin", "admin", True),
    ("admin", "owner", False),
    ("member", "member", False),
    ("outsider", "member", False),
]


@pytest.mark.parametrize(("who", "role", "allowed"), ADD_MATRIX)
def test_adding_members_follows_the_policies(
    who: str, role: str, allowed: bool, org: Org, owner: psycopg.Connection[Any], app: psycopg.Connection[Any]
) -> None:
    actor = {"owner": org.owner_id, "admin": org.admin_id, "member": org.member_id, "outsider": org.outsider_id}[who]
    newcomer = users.create_user(owner)
    if allowed:
        added = tenants.add_member(app, Identity.user(actor), tenant_id=org.tenant, user_id=newcomer, role=role)
        assert (added.tenant_id, added.user_id, added.role) == (org.tenant, newcomer, role)
        assert roles_of(owner, org.tenant)[newcomer] == role
        return
    with pytest.raises(errors.PermissionDenied, match="only owners add, change or remove owners"):
        tenants.add_member(app, Identity.user(actor), tenant_id=org.tenant, user_id=newcomer, role=role)
    assert newcomer not in roles_of(owner, org.tenant)


def test_anon_cannot_add_members(org: Org, owner: psycopg.Connection[Any], app: psycopg.Connection[Any]) -> None:
    newcomer = users.create_user(owner)
    with pytest.raises(errors.PermissionDenied):
        tenants.add_member(app, Identity.anon(), tenant_id=org.tenant, user_id=newcomer, role="member")
    assert newcomer not in roles_of(owner, org.tenant)


def test_an_unknown_user_is_named(org: Org, app: psycopg.Connection[Any]) -> None:
    ghost = uuid.uuid4()
    for identity in (Identity.service(), Identity.user(org.owner_id)):
        with pytest.raises(errors.UserNotFound, match=str(ghost)) as caught:
            tenants.add_member(app, identity, tenant_id=org.tenant, user_id=ghost, role="member")
        assert caught.value.user_id == ghost


def test_an_unknown_owner_refuses_the_whole_creation(
    owner: psycopg.Connection[Any], app: psycopg.Connection[Any]
) -> None:
    ghost = uuid.uuid4()
    with pytest.raises(errors.UserNotFound, match=str(ghost)):
        tenants.create_tenant(app, Identity.service(), name="Acme", slug="acme", owner_user_id=ghost)
    assert owner.execute("select count(*) from public.tenants").fetchone() == (0,)


def test_an_unknown_tenant_is_named_to_the_service_role_and_refused_to_a_user(
    org: Org, app: psycopg.Connection[Any]
) -> None:
    nowhere = uuid.uuid4()
    with pytest.raises(errors.TenantNotFound, match=str(nowhere)):
        tenants.add_member(app, Identity.service(), tenant_id=nowhere, user_id=org.member_id, role="member")
    with pytest.raises(errors.PermissionDenied):
        tenants.add_member(app, Identity.user(org.owner_id), tenant_id=nowhere, user_id=org.member_id, role="member")


def test_a_bad_role_is_refused_before_the_database(org: Org, app: psycopg.Connection[Any]) -> None:
    with pytest.raises(errors.InvalidMember, match="role: must be one of owner, admin, member, got 'boss'"):
        tenants.add_member(app, Identity.service(), tenant_id=org.tenant, user_id=org.member_id, role="boss")


def test_adding_an_existing_member_returns_them_or_names_their_role(
    org: Org, owner: psycopg.Connection[Any], app: psycopg.Connection[Any]
) -> None:
    same = tenants.add_member(app, Identity.user(org.owner_id), tenant_id=org.tenant, user_id=org.member_id,
                              role="member")  # fmt: skip
    assert (same.user_id, same.role) == (org.member_id, "member")
    with pytest.raises(errors.MemberExists, match=r"already a member of tenant .* as member") as caught:
        tenants.add_member(app, Identity.user(org.owner_id), tenant_id=org.tenant, user_id=org.member_id,
                           role="admin")  # fmt: skip
    assert caught.value.role == "member"
    assert roles_of(owner, org.tenant)[org.member_id] == "member"


# Who may remove whom: owners anyone, admins all but owners, members and outsiders nobody.
REMOVE_MATRIX = [
    ("owner", "admin", True),
    ("owner", "member", True),
    ("admin", "member", True),
    ("admin", "owner", False),
    ("member", "admin", False),
    ("outsider", "member", False),
]


@pytest.mark.parametrize(("who", "target", "allowed"), REMOVE_MATRIX)
def test_removing_members_follows_the_policies_and_a_refusal_is_never_silent(
    who: str, target: str, allowed: bool, org: Org, owner: psycopg.Connection[Any], app: psycopg.Connection[Any]
) -> None:
    people = {"owner": org.owner_id, "admin": org.admin_id, "member": org.member_id, "outsider": org.outsider_id}
    actor, removed = people[who], people[target]
    if allowed:
        gone = tenants.remove_member(app, Identity.user(actor), tenant_id=org.tenant, user_id=removed)
        assert (gone.user_id, gone.role) == (removed, target)
        assert removed not in roles_of(owner, org.tenant)
        return
    # A member sees the row but may not delete it; an outsider cannot even see it.
    expected = errors.MemberNotFound if who == "outsider" else errors.PermissionDenied
    with pytest.raises(expected):
        tenants.remove_member(app, Identity.user(actor), tenant_id=org.tenant, user_id=removed)
    assert roles_of(owner, org.tenant)[removed] == target


def test_removing_someone_who_is_not_a_member_is_not_found(org: Org, app: psycopg.Connection[Any]) -> None:
    with pytest.raises(errors.MemberNotFound, match="is not a member"):
        tenants.remove_member(app, Identity.service(), tenant_id=org.tenant, user_id=org.outsider_id)
    with pytest.raises(errors.PermissionDenied):
        tenants.remove_member(app, Identity.anon(), tenant_id=org.tenant, user_id=org.member_id)


def test_create_user_with_an_email_and_a_chosen_id(owner: psycopg.Connection[Any]) -> None:
    chosen = uuid.uuid4()
    assert users.create_user(owner, email="grace@example.test", user_id=chosen) == chosen
    assert owner.execute("select email from auth.users where id = %s", (chosen,)).fetchone() == ("grace@example.test",)
    with pytest.raises(errors.UserExists, match="email"):
        users.create_user(owner, email="GRACE@example.test")
    with pytest.raises(errors.UserExists, match=str(chosen)):
        users.create_user(owner, user_id=chosen)
    with pytest.raises(errors.InvalidUser, match=r"^email: "):
        users.create_user(owner, email="not an email")


def test_create_user_is_refused_where_supabase_auth_owns_auth_users(owner: psycopg.Connection[Any]) -> None:
    assert users.shim_owns_users(owner)
    owner.execute("comment on table auth.users is 'Auth: Stores user login data within a secure schema.'")
    assert not users.shim_owns_users(owner)
    before = owner.execute("select count(*) from auth.users").fetchone()
    with pytest.raises(errors.UsersManagedElsewhere, match="through Supabase Auth"):
        users.create_user(owner, email="ada@example.test")
    assert owner.execute("select count(*) from auth.users").fetchone() == before
