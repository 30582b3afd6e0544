"""Shared by the integration tests of the SDK wrappers: a provider server, a recorder and the stored rows."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests import factories
from tests.provider_server import RunningProvider, running_provider
from usagemeter.recording.recorder import EnqueueOptions, Recorder

STORED = (
    "select action, tenant_id, user_id, tokens_input, tokens_output, metadata, idempotency_key"
    " from public.usage_events order by created_at, idempotency_key"
)


@pytest.fixture
def provider() -> Iterator[RunningProvider]:
    with running_provider() as running:
        yield running


@pytest.fixture
def tenant(owner: psycopg.Connection[Any]) -> uuid.UUID:
    return factories.add_tenant(owner)


@pytest.fixture
def recorder(app_database_url: str, tmp_path: Path) -> Iterator[Recorder]:
    with Recorder(app_database_url, enqueue_options=EnqueueOptions(spool_dir=tmp_path / "spool")) as running:
        yield running


def stored(owner: psycopg.Connection[Any], recorder: Recorder) -> list[dict[str, Any]]:
    """Every stored event, once everything enqueued has been written."""
    assert recorder.flush(timeout=30)
    with owner.cursor(row_factory=psycopg.rows.dict_row) as cur:
        return cur.execute(STORED).fetchall()
