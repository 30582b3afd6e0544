"""The dashboard in headless Chromium (Debian's, driven by Playwright): it shows the numbers the API returns.

Asserted on numbers the page writes into data attributes, never on a canvas existing. Nothing
downloads a browser: Debian's `chromium` runs, which .ci/run installs.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from tests import factories
from tests.http_server import RunningApi
from usagemeter import db
from usagemeter.ops import demo

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "img" / "dashboard.png"
DAYS = 12


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (.ci/run installs it)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"], headless=True)
        yield launched
        launched.close()


@pytest.fixture
def world(owner: psycopg.Connection[Any]) -> dict[str, Any]:
    """Two tenants with different usage over the last days; Ada in both, Bob in Globex only, Pat personal."""
    acme, globex = factories.add_tenant(owner, "acme"), factories.add_tenant(owner, "globex")
    ada, bob, pat = factories.add_user(owner), factories.add_user(owner), factories.add_user(owner)
    factories.add_member(owner, acme, ada, "owner")
    factories.add_member(owner, globex, ada, "member")
    factories.add_member(owner, globex, bob, "member")
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    rows = []
    for day in range(DAYS):
        when = now - timedelta(days=day, hours=3)
        rows += [
            (acme, ada, "agency:scope:generate", 1000 + day, 100, when),
            (acme, ada, "support:ticket:classify", 300, 30 + day, when),
            (globex, bob, "chat:message:reply", 7000 + day, 700, when),
            (globex, ada, "chat:message:reply", 50, 5, when),
            (None, pat, "chat:message:reply", 42, 4, when),
            (None, ada, "chat:message:reply", 11, 1, when),
        ]
    with owner.cursor() as cur:
        cur.executemany(
            "insert into public.usage_events (tenant_id, user_id, action, tokens_input, tokens_output, created_at)"
            " values (%s, %s, %s, %s, %s, %s)",
            rows,
        )
    return {"acme": acme, "globex": globex, "ada": ada, "bob": bob, "pat": pat}


def open_dashboard(browser: Browser, api: RunningApi, token: str, query: str = "", **context: Any) -> Page:
    page = browser.new_context(**context).new_page()
    page.goto(f"{api.base_url}/{query}#token={token}")
    page.wait_for_function("document.body.dataset.loaded && document.body.dataset.loaded !== 'error'")
    return page


def shown(page: Page, test_id: str) -> str:
    value = page.get_attribute(f'[data-testid="{test_id}"]', "data-value")
    assert value is not None
    return value


def api_totals(api: RunningApi, user: uuid.UUID, **scope: str) -> dict[str, Any]:
    range_ = {"from": (datetime.now(UTC) - timedelta(days=29)).date().isoformat(),
              "to": (datetime.now(UTC) + timedelta(days=1)).date().isoformat(), "tz": "UTC"}  # fmt: skip
    rows = api.as_user(user).get("/v1/usage", params={**scope, **range_}).json()
    return rows[0] if rows else {"events": 0, "tokens_total": 0}


def wait_for_scope(page: Page, scope: str) -> None:
    page.wait_for_function(f"(document.body.dataset.loaded || '').startsWith({scope!r} + '|')")


def test_the_dashboard_shows_the_numbers_the_api_returns_and_switches_tenants(
    browser: Browser, api_server: RunningApi, world: dict[str, Any]
) -> None:
    token = api_server.token(world["ada"])
    page = open_dashboard(browser, api_server, token, "?tz=UTC")
    picker = page.locator('[data-testid="scope-picker"] option')
    assert sorted(picker.all_inner_texts()) == ["Personal", "acme", "globex"]

    for scope in ("acme", "globex"):
        page.select_option('[data-testid="scope-picker"]', str(world[scope]))
        wait_for_scope(page, str(world[scope]))
        expected = api_totals(api_server, world["ada"], tenant=str(world[scope]))
        assert int(shown(page, "total-events")) == expected["events"] == DAYS * 2
        assert int(shown(page, "total-tokens")) == expected["tokens_total"]
        assert page.locator('[data-testid="chart"]').get_attribute("data-days") == "30"  # every day of the range

    # Globex: both members' usage, per user; the actions table adds up to the total.
    users = page.locator('[data-testid="user-row"]')
    assert sorted(users.evaluate_all("rows => rows.map(r => r.dataset.key)")) == sorted(
        [str(world["ada"]), str(world["bob"])]
    )
    actions = page.locator('[data-testid="action-row"]').evaluate_all("rows => rows.map(r => Number(r.dataset.tokens))")
    assert sum(actions) == int(shown(page, "total-tokens"))

    page.select_option('[data-testid="scope-picker"]', "personal")
    wait_for_scope(page, "personal")
    assert int(shown(page, "total-events")) == DAYS  # Ada's own personal rows, not Pat's
    assert int(shown(page, "total-tokens")) == DAYS * 12


def test_the_view_is_in_the_url_and_restores(browser: Browser, api_server: RunningApi, world: dict[str, Any]) -> None:
    token = api_server.token(world["ada"])
    page = open_dashboard(browser, api_server, token, f"?scope={world['acme']}&tz=UTC")
    page.select_option('[data-testid="group"]', "module")
    page.wait_for_function("(document.body.dataset.loaded || '').endsWith('|module')")
    shared = page.url
    assert "group=module" in shared
    assert f"scope={world['acme']}" in shared
    assert "#token" not in shared  # the token never stays in the address bar
    again = open_dashboard(browser, api_server, token, "?" + shared.split("?", 1)[1])
    assert again.input_value('[data-testid="group"]') == "module"
    assert again.input_value('[data-testid="scope-picker"]') == str(world["acme"])
    assert again.locator('[data-testid="chart"]').get_attribute("data-series") == "2"  # agency and support modules


def test_a_tenant_one_does_not_belong_to_shows_nothing_of_it(
    browser: Browser, api_server: RunningApi, world: dict[str, Any]
) -> None:
    token = api_server.token(world["bob"])
    page = open_dashboard(browser, api_server, token, "?tz=UTC")
    options = page.locator('[data-testid="scope-picker"] option').all_inner_texts()
    assert "acme" not in options
    forced = open_dashboard(browser, api_server, token, f"?scope={world['acme']}&tz=UTC")
    assert int(shown(forced, "total-events")) == 0
    assert int(shown(forced, "total-tokens")) == 0
    assert forced.locator('[data-testid="action-row"]').count() == 0
    assert forced.locator('[data-testid="user-row"]').count() == 0


def test_the_demo_data_with_costs_and_budgets_on_a_laptop_and_a_phone(
    browser: Browser, api_server: RunningApi, database_url: str, app_database_url: str
) -> None:
    with db.connect(database_url, autocommit=True) as admin:
        loaded = demo.load_demo(admin, app_database_url)
    acme = loaded.tenant_ids["acme"]
    token = api_server.token(loaded.owner_id, email=demo.OWNER_EMAIL)
    laptop = open_dashboard(
        browser, api_server, token, f"?scope={acme}&tz=UTC", viewport={"width": 1280, "height": 900}
    )
    laptop.wait_for_selector('[data-testid="chart"] .main-svg')
    expected = api_totals(api_server, loaded.owner_id, tenant=str(acme))
    assert shown(laptop, "total-cost") == expected["cost"]
    assert Decimal(expected["cost"]) > 0
    budget = laptop.locator('[data-testid="budget-row"]').first
    quotas = api_server.as_user(loaded.owner_id).get("/v1/quotas", params={"tenant": str(acme)}).json()
    assert (budget.get_attribute("data-used"), budget.get_attribute("data-limit")) == (
        quotas[0]["used"],
        quotas[0]["limit"],
    )
    if os.environ.get("USAGEMETER_UPDATE_SCREENSHOT"):
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        laptop.screenshot(path=str(SCREENSHOT), full_page=True)
    assert SCREENSHOT.exists(), "docs/img/dashboard.png: run this test with USAGEMETER_UPDATE_SCREENSHOT=1 once"

    phone = open_dashboard(browser, api_server, token, f"?scope={acme}&tz=UTC", viewport={"width": 390, "height": 844})
    assert phone.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    assert shown(phone, "total-cost") == expected["cost"]


def test_a_bad_token_returns_to_sign_in(browser: Browser, api_server: RunningApi, world: dict[str, Any]) -> None:
    page = browser.new_context().new_page()
    page.goto(f"{api_server.base_url}/#token=not-a-token")
    page.wait_for_selector('[data-testid="sign-in"]:not([hidden])')
    assert page.locator("#dashboard").is_hidden()
