"""The dashboard's own routes over HTTP: the page, its assets, plotly.js from the installed wheel, the demo session."""

from __future__ import annotations

import re
from collections.abc import Iterator
from importlib import metadata, resources
from typing import Any

import httpx
import psycopg
import pytest

from tests import factories, http_server
from tests.http_server import RunningApi
from usagemeter import api
from usagemeter.api import auth


@pytest.fixture
def demo_api(app_database_url: str, owner: psycopg.Connection[Any]) -> Iterator[tuple[RunningApi, str]]:
    """The API as `serve --demo` runs it: with a demo user's token the page may ask for."""
    user = factories.add_user(owner)
    token = auth.mint(http_server.SECRET, user_id=user)
    config = api.ServerConfig(
        app_database_url=app_database_url,
        verifier=auth.TokenVerifier(secret=http_server.SECRET, jwks_url=None),
        demo_user_token=token,
    )
    with http_server.running_api(config) as running:
        yield running, token


def test_the_page_names_the_installed_plotly_which_is_served_from_the_wheel(api_server: RunningApi) -> None:
    client = api_server.client()
    page = client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["cache-control"] == "no-cache"
    scripts = re.findall(r'<script src="([^"]+)"', page.text)
    plotly_url = f"/static/vendor/plotly.min.js?v={metadata.version('plotly')}"
    assert plotly_url in scripts
    assert all(not src.startswith(("http:", "https:", "//")) for src in scripts)  # no CDN

    served = client.get(plotly_url)
    assert served.status_code == 200
    assert served.headers["content-type"].startswith("text/javascript")
    assert "immutable" in served.headers["cache-control"]
    assert "max-age=31536000" in served.headers["cache-control"]
    installed = resources.files("plotly") / "package_data" / "plotly.min.js"
    assert served.content == installed.read_bytes()


@pytest.mark.parametrize("asset", ["dashboard.js", "dashboard.css"])
def test_the_app_assets_are_revalidated_so_an_upgrade_shows_at_once(api_server: RunningApi, asset: str) -> None:
    client = api_server.client()
    first = client.get(f"/static/app/{asset}")
    assert first.status_code == 200
    assert first.headers["cache-control"] == "no-cache"
    again = client.get(f"/static/app/{asset}", headers={"If-None-Match": first.headers["etag"]})
    assert again.status_code == 304


def test_the_demo_session_is_there_only_under_demo(api_server: RunningApi, demo_api: tuple[RunningApi, str]) -> None:
    absent = api_server.client().get("/dashboard/demo-session")
    assert absent.status_code == 404
    assert absent.headers["content-type"].startswith("application/problem+json")
    assert "demo" in absent.json()["detail"]

    running, token = demo_api
    given = running.client().get("/dashboard/demo-session")
    assert given.status_code == 200
    assert given.headers["cache-control"] == "no-store"
    assert given.json() == {"token": token}
    signed_in = httpx.get(
        f"{running.base_url}/v1/tenants", headers={"Authorization": f"Bearer {given.json()['token']}"}
    )
    assert signed_in.status_code == 200


def test_the_dashboard_routes_stay_out_of_the_api_document(api_server: RunningApi) -> None:
    paths = api_server.client().get("/openapi.json").json()["paths"]
    assert not [path for path in paths if path == "/" or path.startswith(("/static", "/dashboard"))]
