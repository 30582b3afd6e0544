"""The database layer: connections, who a transaction runs as, retries, refusals, and the SQL loader.

It knows no business rules: the flows (recording, reporting) and operations build on it.
"""

from __future__ import annotations

from usagemeter.db.connection import app_pool, app_url, connect, connect_app, with_database
from usagemeter.db.identity import Identity, RequestRole, TenantId, UserId, acting_as

__all__ = [
    "Identity",
    "RequestRole",
    "TenantId",
    "UserId",
    "acting_as",
    "app_pool",
    "app_url",
    "connect",
    "connect_app",
    "with_database",
]
