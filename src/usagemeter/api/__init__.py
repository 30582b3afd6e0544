"""The HTTP API and dashboard: FastAPI on uvicorn, each request run in the database as its caller."""

from __future__ import annotations

from usagemeter.api.app import create_app
from usagemeter.api.server import ServerConfig

__all__ = ["ServerConfig", "create_app"]
