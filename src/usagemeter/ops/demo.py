"""The demo data set: two tenants, their members, a Personal user and a month of varied, priced usage.

    demo = load_demo(admin_conn, app_url)      # loads into an empty database; a second call finds it

It loads only where usagemeter's shim owns auth.users (the embedded or a plain PostgreSQL), and
only into a database with no usage and no tenants; a database it was loaded into is left as it is
and its ids are returned. The usage is generated from a fixed seed, so its shape (events per
tenant, actions, models, users) is the same on every load; only its times follow the clock, the
30 days up to now. Events are written by the recorder, as the service role, so the database prices
them and keeps the rollups as for any write; budgets are set afterwards, sized on that usage.
"""

from __future__ import annotations

import math
import random
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg

from usagemeter import errors
from usagemeter.billing import budgets, price_files, prices
from usagemeter.db import Identity, sql
from usagemeter.recording import recorder
from usagemeter.tenancy import tenants, users

queries = sql.load_queries("usagemeter.ops", "demo.sql")

SEED = 20261130
DAYS = 30
DOMAIN = "demo.usagemeter.dev"
OWNER_EMAIL = f"ada@{DOMAIN}"
PERSONAL_EMAIL = f"pat@{DOMAIN}"
CURRENCY = "USD"  # the starter prices' currency


@dataclass(frozen=True)
class DemoTenant:
    """A demo tenant: its members (email -> role) and the mix of its usage."""

    slug: str
    name: str
    members: Mapping[str, tenants.Role]
    events_per_day: int  # on average over the month
    actions: Mapping[str, int]  # action -> weight


# Each action's model and token ranges: (model, input low, input high, output low, output high).
ACTION_PROFILES: dict[str, tuple[tuple[str, int, int, int, int], ...]] = {
    "agency:scope:generate": (("claude-sonnet-4-0", 1500, 4000, 400, 1200), ("gpt-4o", 1500, 3500, 300, 900)),
    "agency:brief:summarize": (("gpt-4o", 2000, 6000, 200, 500),),
    "support:ticket:classify": (("gpt-4o-mini", 300, 900, 5, 30),),
    "chat:message:reply": (("gpt-4o-mini", 200, 1500, 50, 400), ("gpt-4o", 300, 1800, 80, 500)),
}

TENANTS = (
    DemoTenant(
        slug="acme",
        name="Acme",
        members={
            OWNER_EMAIL: "owner",
            f"grace@{DOMAIN}": "admin",
            f"alan@{DOMAIN}": "member",
            f"barbara@{DOMAIN}": "member",
        },
        events_per_day=50,
        actions={"agency:scope:generate": 5, "agency:brief:summarize": 3, "chat:message:reply": 2},
    ),
    DemoTenant(
        slug="globex",
        name="Globex",
        members={OWNER_EMAIL: "owner", f"linus@{DOMAIN}": "admin", f"margaret@{DOMAIN}": "member"},
        events_per_day=30,
        actions={"support:ticket:classify": 6, "chat:message:reply": 4, "agency:brief:summarize": 1},
    ),
)
PERSONAL = DemoTenant(
    slug="",
    name="Personal",
    members={PERSONAL_EMAIL: "owner"},
    events_per_day=5,
    actions={"chat:message:reply": 4, "agency:brief:summarize": 1},
)
# Soft budgets sized on the month's usage: month to date against a limit a little above a month's cost.
BUDGET_HEADROOM = Decimal("1.15")


def demo_user_id(email: str) -> uuid.UUID:
    """The id a demo user gets: derived from the email, so it is the same in every database."""
    return uuid.uuid5(uuid.NAMESPACE_URL, f"https://{DOMAIN}/users/{email}")


def demo_emails() -> list[str]:
    """Every demo user's email, the owner first and the Personal user last."""
    found = [OWNER_EMAIL]
    for tenant in TENANTS:
        found += [email for email in tenant.members if email not in found]
    return [*found, PERSONAL_EMAIL]


@dataclass(frozen=True)
class Demo:
    """The demo's ids, and whether this call loaded it (False: it was there already)."""

    owner_id: uuid.UUID
    personal_user_id: uuid.UUID
    tenant_ids: Mapping[str, uuid.UUID]  # slug -> id
    user_ids: Mapping[str, uuid.UUID]  # email -> id
    loaded: bool = False
    events: int = field(default=0)  # events written by this call

    def as_json(self) -> dict[str, Any]:
        return {
            "owner_id": str(self.owner_id),
            "personal_user_id": str(self.personal_user_id),
            "tenant_ids": {slug: str(i) for slug, i in self.tenant_ids.items()},
            "user_ids": {email: str(i) for email, i in self.user_ids.items()},
            "loaded": self.loaded,
            "events": self.events,
        }


def _pick(rng: random.Random, weights: Mapping[str, int]) -> str:
    return rng.choices(list(weights), weights=list(weights.values()))[0]


def day_weights(start: datetime) -> list[float]:
    """How busy each day of the month is: quieter at weekends, a gentle growth, and a fixed day-to-day jitter."""
    jitter = random.Random(SEED + 1)
    return [
        (0.35 if (start + timedelta(days=day)).weekday() >= 5 else 1.0)
        * (0.8 + 0.4 * day / DAYS)
        * jitter.uniform(0.75, 1.25)
        for day in range(DAYS)
    ]


def demo_events(
    *, now: datetime, tenant_ids: Mapping[str, uuid.UUID], personal_user_id: uuid.UUID
) -> list[dict[str, Any]]:
    """The month of usage, from the fixed seed.

    Everything but the times is the same on every call (how many events each tenant has, their
    actions, models, users and tokens); the times spread them over the 30 days up to `now`, with
    fewer on that month's real weekends.
    """
    rng = random.Random(SEED)
    start = now - timedelta(days=DAYS)
    latest = now - timedelta(minutes=1)
    weights = day_weights(start)
    days = range(DAYS)
    events: list[dict[str, Any]] = []
    for scope, tenant_id in [(t, tenant_ids[t.slug]) for t in TENANTS] + [(PERSONAL, None)]:
        people = [demo_user_id(email) for email in scope.members]
        for _ in range(scope.events_per_day * DAYS):
            action = _pick(rng, scope.actions)
            model, in_low, in_high, out_low, out_high = rng.choice(ACTION_PROFILES[action])
            [day] = rng.choices(days, weights=weights)  # one random() draw whatever the weights
            moment = start + timedelta(days=day, seconds=rng.uniform(0, 86_400))
            events.append({
                "action": action,
                "tenant_id": tenant_id,
                "user_id": personal_user_id if tenant_id is None else rng.choice(people),
                "model": model,
                "tokens_input": rng.randint(in_low, in_high),
                "tokens_output": rng.randint(out_low, out_high),
                "created_at": min(moment, latest),
            })  # fmt: skip
    return events


def _found(admin_conn: psycopg.Connection[Any]) -> Demo | None:
    """The demo as loaded earlier, looked up by its slugs and emails; None if it is not (all) there."""
    slugs = [t.slug for t in TENANTS]
    found_tenants = dict(admin_conn.execute(queries["demo_tenants"], {"slugs": slugs}).fetchall())
    found_users = dict(admin_conn.execute(queries["demo_users"], {"emails": demo_emails()}).fetchall())
    if set(found_tenants) != set(slugs) or set(found_users) != set(demo_emails()):
        return None
    return Demo(
        owner_id=found_users[OWNER_EMAIL],
        personal_user_id=found_users[PERSONAL_EMAIL],
        tenant_ids={slug: found_tenants[slug] for slug in slugs},
        user_ids={email: found_users[email] for email in demo_emails()},
    )


def _create_people_and_tenants(admin_conn: psycopg.Connection[Any], *, load_prices: bool) -> Demo:
    """Users, tenants, memberships and (if there are none) the starter prices, in one transaction."""
    service = Identity.service()
    with admin_conn.transaction():
        user_ids = {email: users.create_user(admin_conn, email=email, user_id=demo_user_id(email))
                    for email in demo_emails()}  # fmt: skip
        tenant_ids: dict[str, uuid.UUID] = {}
        for spec in TENANTS:
            made = tenants.create_tenant(admin_conn, service, name=spec.name, slug=spec.slug)
            tenant_ids[spec.slug] = made.id
            for email, role in spec.members.items():
                tenants.add_member(admin_conn, service, tenant_id=made.id, user_id=user_ids[email], role=role)
        if load_prices:
            prices.load_prices(admin_conn, price_files.starter_prices())
    return Demo(owner_id=user_ids[OWNER_EMAIL], personal_user_id=user_ids[PERSONAL_EMAIL], tenant_ids=tenant_ids,
                user_ids=user_ids)  # fmt: skip


def _whole_units(amount: Decimal) -> Decimal:
    """A budget limit: the amount with headroom, rounded up to a whole currency unit (at least 1)."""
    return Decimal(max(1, math.ceil(amount * BUDGET_HEADROOM)))


def _set_budgets(admin_conn: psycopg.Connection[Any], demo: Demo) -> None:
    """A soft monthly cost budget per tenant and for the Personal user, a little above their month's cost."""
    tenant_ids = list(demo.tenant_ids.values())
    costs = dict(admin_conn.execute(queries["tenant_costs"], {"tenant_ids": tenant_ids}).fetchall())
    row = admin_conn.execute(queries["personal_cost"], {"user_id": demo.personal_user_id}).fetchone()
    assert row is not None
    scopes: list[tuple[uuid.UUID | None, uuid.UUID | None, Decimal]] = [
        (tenant_id, None, costs.get(tenant_id, Decimal(0))) for tenant_id in tenant_ids
    ]
    scopes.append((None, demo.personal_user_id, row[0]))
    for tenant_id, user_id, cost in scopes:
        spec = budgets.BudgetSpec(tenant_id=tenant_id, user_id=user_id, metric="cost", limit=_whole_units(cost),
                                  currency=CURRENCY, period="month", mode="soft")  # fmt: skip
        budgets.set_budget(admin_conn, spec)


def load_demo(admin_conn: psycopg.Connection[Any], app_url: str, *, now: datetime | None = None) -> Demo:
    """Load the demo data set into an empty database, or find the one loaded before; return its ids.

    Parameters
    ----------
    admin_conn:
        The admin (owner) login, in autocommit mode: users go into the shim's auth.users through
        it, and what it creates must be committed before the events are written on the app login.
    app_url:
        The app login's URL (authenticator): the recorder writes the events through it.
    now:
        The end of the month of usage (default: the current time).

    Raises
    ------
    DemoRefused
        The database holds usage or tenants that are not the demo's.
    UsersManagedElsewhere
        auth.users belongs to Supabase Auth (a real Supabase database): the demo makes its own users.
    """
    if not admin_conn.autocommit:
        raise ValueError("load_demo needs an autocommit admin connection: its users and tenants commit first")
    admin_conn.execute(queries["lock_demo"])
    try:
        return _load_locked(admin_conn, app_url, now=now or datetime.now(UTC))
    finally:
        admin_conn.execute(queries["unlock_demo"])


def _load_locked(admin_conn: psycopg.Connection[Any], app_url: str, *, now: datetime) -> Demo:
    row = admin_conn.execute(queries["database_state"]).fetchone()
    assert row is not None
    has_events, has_tenants, has_prices = row
    demo = _found(admin_conn)
    if demo is None:
        if has_events or has_tenants:
            raise errors.DemoRefused(
                "the database already holds usage or tenants that are not the demo's: the demo loads only"
                " into an empty database (use another database, or the embedded one with USAGEMETER_DATA_DIR)"
            )
        if not users.shim_owns_users(admin_conn):
            raise errors.UsersManagedElsewhere(
                "auth.users here belongs to Supabase Auth: the demo creates its own users, so it loads only"
                " where usagemeter's shim owns auth.users (the embedded PostgreSQL or a plain one)"
            )
        demo = _create_people_and_tenants(admin_conn, load_prices=not has_prices)
    elif has_events:
        return demo  # loaded before: leave it as it is
    events = demo_events(now=now, tenant_ids=demo.tenant_ids, personal_user_id=demo.personal_user_id)
    with recorder.Recorder(app_url, pool_size=1) as writer:
        writer.record_many(events)
    _set_budgets(admin_conn, demo)
    return Demo(owner_id=demo.owner_id, personal_user_id=demo.personal_user_id, tenant_ids=demo.tenant_ids,
                user_ids=demo.user_ids, loaded=True, events=len(events))  # fmt: skip
