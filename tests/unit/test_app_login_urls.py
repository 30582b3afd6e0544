"""Which login recording and reports use: the app URL, given or derived from the admin URL."""

from __future__ import annotations

import pytest
from psycopg import conninfo

from usagemeter import db, settings


def _params(url: str) -> dict[str, object]:
    return dict(conninfo.conninfo_to_dict(url))


def test_the_app_url_is_the_admin_url_as_authenticator_without_the_admin_password() -> None:
    derived = db.app_url("postgresql://postgres:owner-secret@db.example:6543/app?sslmode=require", password=None)
    assert _params(derived) == {"user": "authenticator", "host": "db.example", "port": "6543", "dbname": "app",
                                "sslmode": "require"}  # fmt: skip
    with_password = db.app_url("postgresql://postgres:owner-secret@db.example/app", password="app-secret")
    assert _params(with_password)["password"] == "app-secret"


def test_an_authenticator_url_keeps_its_own_password() -> None:
    url = "postgresql://authenticator:its-own@db.example/app"
    assert db.app_url(url, password=None) == url


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("DATABASE_URL", "USAGEMETER_DATABASE_URL", "USAGEMETER_APP_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("USAGEMETER_AUTHENTICATOR_PASSWORD", raising=False)
    return monkeypatch


def test_settings_derive_the_app_url_with_the_authenticator_password(environment: pytest.MonkeyPatch) -> None:
    assert settings.Settings().app_database_url is None
    environment.setenv("USAGEMETER_DATABASE_URL", "postgresql://postgres:owner-secret@db.example/app")
    environment.setenv("USAGEMETER_AUTHENTICATOR_PASSWORD", "app-secret")
    derived = _params(settings.Settings().app_database_url or "")
    assert (derived["user"], derived["password"], derived["dbname"]) == ("authenticator", "app-secret", "app")


def test_a_given_app_url_wins(environment: pytest.MonkeyPatch) -> None:
    environment.setenv("USAGEMETER_DATABASE_URL", "postgresql://postgres@db.example/app")
    environment.setenv("USAGEMETER_APP_DATABASE_URL", "postgresql://authenticator:x@pooler.example:6543/app")
    assert settings.Settings().app_database_url == "postgresql://authenticator:x@pooler.example:6543/app"
