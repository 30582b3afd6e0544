"""The recorder over monthly partitions: idempotency keys hold across months, repeats inside a batch resolve.

Apart from test_partitions.py because the recorder connects as the app login, which the Supabase
platform tier's `authenticator` cannot be (it may become a superuser there).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from psycopg import errors as pgerrors

from tests import factories
from tests.integration.test_partitions import add_months
from usagemeter import Recorder, errors
from usagemeter.recording.event import UsageEvent


def test_an_idempotency_key_is_unique_across_months_and_a_retry_in_another_month_is_a_duplicate(
    owner: psycopg.Connection[Any], app_database_url: str
) -> None:
    tenant, user = factories.add_tenant(owner), factories.add_user(owner)
    factories.add_member(owner, tenant, user)
    now = datetime.now(UTC)
    event: dict[str, Any] = {
        "tenant_id": tenant,
        "user_id": user,
        "action": "a:b:c",
        "tokens_input": 3,
        "idempotency_key": "k-1",
    }
    with Recorder(app_database_url) as recorder:
        first = recorder.record(**event, created_at=now)
        again = recorder.record(**event, created_at=add_months(now, 1))
        assert again.duplicate
        assert again.id == first.id
        with pytest.raises(errors.IdempotencyConflict):
            recorder.record(**{**event, "tokens_input": 4}, created_at=add_months(now, 2))
    assert factories.count_events(owner) == 1
    with pytest.raises(pgerrors.UniqueViolation, match="usage_event_keys_idempotency_key_idx"):
        owner.execute(
            "insert into public.usage_events (tenant_id, user_id, action, idempotency_key, created_at)"
            " values (%s, %s, 'a:b:c', 'k-1', %s)",
            (tenant, user, add_months(now, 3)),
        )


def test_a_batch_repeating_a_key_stores_it_once(owner: psycopg.Connection[Any], app_database_url: str) -> None:
    user = factories.add_user(owner)
    event = UsageEvent(user_id=user, action="a:b:c", tokens_input=3, idempotency_key="twice")
    with Recorder(app_database_url) as recorder:
        first, second = recorder.as_user(user).record_many([event, event])
    assert second.duplicate
    assert second.id == first.id
    assert factories.count_events(owner) == 1
