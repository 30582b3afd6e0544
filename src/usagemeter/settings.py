"""Settings read from the environment, built on demand (never at import) so tests and CLI can differ."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs
from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_data_dir() -> Path:
    """Where the embedded PostgreSQL keeps its data: the user's data dir, or /var/lib for root."""
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return Path("/var/lib/usagemeter")
    return platformdirs.user_data_path("usagemeter")


class Settings(BaseSettings):
    """usagemeter's settings; USAGEMETER_DATABASE_URL wins over the conventional DATABASE_URL."""

    model_config = SettingsConfigDict(extra="ignore")

    database_url: str | None = Field(
        default=None, validation_alias=AliasChoices("USAGEMETER_DATABASE_URL", "DATABASE_URL")
    )
    data_dir: Path = Field(default_factory=default_data_dir, validation_alias="USAGEMETER_DATA_DIR")
