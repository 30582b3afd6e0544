"""The dashboard in headless Chromium (Debian's, driven by Playwright): it shows the numbers the API returns.

Asserted on numbers the page writes into data attributes, never on a canvas existing. Nothing
downloads a browser: Debian's `chromium` runs, which .ci/run installs.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import psycopg
import pytest
from playwright.sync_api import Browser, Page, Route, sync_playwright

from tests import factories, http_server
from tests.http_server import RunningApi
from usagemeter import api, db
from usagemeter.api import auth
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


def new_page(browser: Browser, **context: Any) -> Page:
    """A page in a fresh browser session whose zone is UTC, so the page's default range is the test's."""
    return browser.new_context(**{"timezone_id": "UTC", **context}).new_page()


def open_dashboard(browser: Browser, api: RunningApi, token: str, query: str = "", **context: Any) -> Page:
    page = new_page(browser, **context)
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


def test_late_answers_for_a_view_left_behind_never_overwrite_the_current_one(
    browser: Browser, api_server: RunningApi, world: dict[str, Any]
) -> None:
    page = open_dashboard(browser, api_server, api_server.token(world["ada"]), f"?scope={world['globex']}&tz=UTC")
    held: list[Route] = []
    page.route(
        lambda url: f"tenant={world['acme']}" in url, lambda route: held.append(route)
    )  # Acme's answers wait until released
    page.select_option('[data-testid="scope-picker"]', str(world["acme"]))
    deadline = time.monotonic() + 10
    while len(held) < 5:  # totals, series, actions, users, budgets
        assert time.monotonic() < deadline, f"only {len(held)} requests for Acme"
        page.wait_for_timeout(20)
    page.evaluate("document.body.dataset.loaded = ''")
    page.select_option('[data-testid="scope-picker"]', str(world["globex"]))
    wait_for_scope(page, str(world["globex"]))
    for route in held:
        with page.expect_response(route.request.url):
            route.continue_()
    page.wait_for_timeout(200)  # time for a late render, were one to happen
    expected = api_totals(api_server, world["ada"], tenant=str(world["globex"]))
    assert int(shown(page, "total-tokens")) == expected["tokens_total"]
    assert page.input_value('[data-testid="scope-picker"]') == str(world["globex"])
    assert f"scope={world['globex']}" in page.url


def test_the_view_is_in_the_url_and_restores(browser: Browser, api_server: RunningApi, world: dict[str, Any]) -> None:
    token = api_server.token(world["ada"])
    page = open_dashboard(browser, api_server, token, f"?scope={world['acme']}", timezone_id="Asia/Tokyo")
    assert page.input_value('[data-testid="tz"]') == "Asia/Tokyo"  # the browser's zone by default
    since = (datetime.now(UTC) - timedelta(days=5)).date().isoformat()
    page.fill('[data-testid="from"]', since)
    page.dispatch_event('[data-testid="from"]', "change")
    page.wait_for_function(f"(document.body.dataset.loaded || '').includes('|{since}|')")
    page.select_option('[data-testid="group"]', "module")
    page.wait_for_function("(document.body.dataset.loaded || '').endsWith('|module')")
    shared = page.url
    assert "#token" not in shared  # the token never stays in the address bar
    query = parse_qs(urlsplit(shared).query)
    assert query["scope"] == [str(world["acme"])]
    assert (query["from"], query["tz"], query["group"]) == ([since], ["Asia/Tokyo"], ["module"])

    again = open_dashboard(browser, api_server, token, "?" + urlsplit(shared).query)  # a UTC browser: the link wins
    assert again.input_value('[data-testid="group"]') == "module"
    assert again.input_value('[data-testid="scope-picker"]') == str(world["acme"])
    assert (again.input_value('[data-testid="from"]'), again.input_value('[data-testid="tz"]')) == (since, "Asia/Tokyo")
    assert again.locator('[data-testid="chart"]').get_attribute("data-series") == "2"  # agency and support modules
    params = {"tenant": str(world["acme"]), "from": since, "to": query["to"][0], "tz": "Asia/Tokyo"}
    expected = api_server.as_user(world["ada"]).get("/v1/usage", params=params).json()[0]
    assert int(shown(again, "total-tokens")) == expected["tokens_total"]
    assert int(shown(again, "total-events")) == expected["events"] < DAYS * 2  # the shorter range, not the default


def test_a_tenant_one_does_not_belong_to_shows_nothing_of_it(
    browser: Browser, api_server: RunningApi, world: dict[str, Any]
) -> None:
    token = api_server.token(world["bob"])
    page = open_dashboard(browser, api_server, token, "?tz=UTC")
    options = page.locator('[data-testid="scope-picker"] option').all_inner_texts()
    assert "acme" not in options
    for forced_query in (f"?scope={world['acme']}&tz=UTC", f"?tenant={world['acme']}&tz=UTC"):
        forced = open_dashboard(browser, api_server, token, forced_query)
        assert forced.input_value('[data-testid="scope-picker"]') == str(world["acme"])
        assert int(shown(forced, "total-events")) == 0
        assert int(shown(forced, "total-tokens")) == 0
        assert forced.locator('[data-testid="action-row"]').count() == 0
        assert forced.locator('[data-testid="user-row"]').count() == 0
        assert forced.locator('[data-testid="budget-row"]').count() == 0
        assert "No usage in this range." in forced.inner_text('[data-testid="actions"]')
        assert forced.locator('[data-testid="chart-empty"]').is_visible()
        assert forced.locator('[data-testid="chart"]').is_hidden()


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


def test_signing_in_with_a_pasted_token_and_out(
    browser: Browser, api_server: RunningApi, world: dict[str, Any]
) -> None:
    page = new_page(browser)
    page.goto(f"{api_server.base_url}/?tz=UTC")  # no token, and no demo session on this server
    page.wait_for_selector('[data-testid="sign-in"]:not([hidden])')

    page.fill('[data-testid="token-input"]', "not-a-token")
    page.click('[data-testid="sign-in"] button[type="submit"]')
    refused = api_server.client("not-a-token").get("/v1/tenants").json()["detail"]
    page.wait_for_selector('[data-testid="sign-in-error"]:not([hidden])')
    assert refused in page.inner_text('[data-testid="sign-in-error"]')
    assert page.locator("#dashboard").is_hidden()

    page.fill('[data-testid="token-input"]', api_server.token(world["bob"]))
    page.click('[data-testid="sign-in"] button[type="submit"]')
    wait_for_scope(page, str(world["globex"]))
    assert page.get_attribute('[data-testid="who"]', "data-user-id") == str(world["bob"])
    expected = api_totals(api_server, world["bob"], tenant=str(world["globex"]))
    assert int(shown(page, "total-tokens")) == expected["tokens_total"] > 0

    page.click('[data-testid="sign-out"]')
    page.wait_for_selector('[data-testid="sign-in"]:not([hidden])')
    assert page.evaluate("sessionStorage.length") == 0
    assert page.locator("#dashboard").is_hidden()


def test_an_expired_token_returns_to_sign_in(browser: Browser, api_server: RunningApi, world: dict[str, Any]) -> None:
    expired = auth.mint(http_server.SECRET, user_id=world["ada"], ttl=timedelta(minutes=-5))
    page = new_page(browser)
    page.goto(f"{api_server.base_url}/#token={expired}")
    page.wait_for_selector('[data-testid="sign-in-error"]:not([hidden])')
    assert "expired" in page.inner_text('[data-testid="sign-in-error"]')
    assert "#token" not in page.url


def test_an_api_error_is_shown_with_its_detail_and_hides_the_figures(
    browser: Browser, api_server: RunningApi, world: dict[str, Any]
) -> None:
    page = open_dashboard(browser, api_server, api_server.token(world["ada"]), f"?scope={world['acme']}&tz=UTC")
    expected = api_totals(api_server, world["ada"], tenant=str(world["acme"]))
    assert page.locator('[data-testid="total-tokens"]').is_visible()

    page.fill('[data-testid="tz"]', "Mars/Olympus_Mons")
    page.dispatch_event('[data-testid="tz"]', "change")
    page.wait_for_function("document.body.dataset.loaded === 'error'")
    answer = api_server.as_user(world["ada"]).get(
        "/v1/usage", params={"tenant": str(world["acme"]), "tz": "Mars/Olympus_Mons"}
    )
    assert answer.status_code == 422
    assert page.inner_text('[data-testid="error"]') == answer.json()["detail"]
    assert page.locator('[data-testid="total-tokens"]').is_hidden()  # the last view's figures are not left standing
    assert "tz=Mars%2FOlympus_Mons" in page.url

    page.fill('[data-testid="tz"]', "UTC")
    page.dispatch_event('[data-testid="tz"]', "change")
    wait_for_scope(page, str(world["acme"]))
    assert page.locator('[data-testid="error"]').is_hidden()
    assert int(shown(page, "total-tokens")) == expected["tokens_total"]


def test_under_demo_the_page_signs_in_by_itself(browser: Browser, app_database_url: str, world: dict[str, Any]) -> None:
    config = api.ServerConfig(
        app_database_url=app_database_url,
        verifier=auth.TokenVerifier(secret=http_server.SECRET, jwks_url=None),
        demo_user_token=auth.mint(http_server.SECRET, user_id=world["ada"]),
    )
    with http_server.running_api(config) as running:
        page = new_page(browser)
        page.goto(f"{running.base_url}/?scope=personal&tz=UTC")  # no token given
        wait_for_scope(page, "personal")
        assert page.get_attribute('[data-testid="who"]', "data-user-id") == str(world["ada"])
        assert int(shown(page, "total-events")) == DAYS
