"""Settings read from the environment, built on demand (never at import) so tests and CLI can differ."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs
from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from usagemeter.db import connection


def default_data_dir() -> Path:
    """Where the embedded PostgreSQL keeps its data: the user's data dir, or /var/lib for root."""
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return Path("/var/lib/usagemeter")
    return platformdirs.user_data_path("usagemeter")


class Settings(BaseSettings):
    """usagemeter's settings; USAGEMETER_DATABASE_URL wins over the conventional DATABASE_URL.

    Two logins: `database_url` is the admin (owner) login, for migrations and maintenance only;
    recording and reports connect as the app login, `authenticator` (see `app_database_url`).
    """

    model_config = SettingsConfigDict(extra="ignore")

    database_url: str | None = Field(
        default=None, validation_alias=AliasChoices("USAGEMETER_DATABASE_URL", "DATABASE_URL")
    )
    app_database_url_given: str | None = Field(default=None, validation_alias="USAGEMETER_APP_DATABASE_URL")
    authenticator_password: SecretStr | None = Field(default=None, validation_alias="USAGEMETER_AUTHENTICATOR_PASSWORD")
    data_dir: Path = Field(default_factory=default_data_dir, validation_alias="USAGEMETER_DATA_DIR")
    jwt_secret: SecretStr | None = Field(default=None, validation_alias="USAGEMETER_JWT_SECRET")
    jwks_url: str | None = Field(default=None, validation_alias="USAGEMETER_JWKS_URL")
    jwt_issuer: str | None = Field(default=None, validation_alias="USAGEMETER_JWT_ISSUER")

    def app_url_for(self, admin_url: str) -> str:
        """The app login on `admin_url`'s server and database, with USAGEMETER_AUTHENTICATOR_PASSWORD."""
        password = self.authenticator_password.get_secret_value() if self.authenticator_password else None
        return connection.app_url(admin_url, password=password)

    @property
    def app_database_url(self) -> str | None:
        """USAGEMETER_APP_DATABASE_URL, else the admin URL with its login switched to `authenticator`."""
        if self.app_database_url_given:
            return self.app_database_url_given
        return self.app_url_for(self.database_url) if self.database_url else None
