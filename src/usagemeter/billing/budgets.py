"""Budgets: set, list, delete and check them; the database enforces them as usage is written.

    budgets.set_budget(conn, BudgetSpec(tenant_id=t, metric="events", limit=1000, period="month", mode="hard"))
    budgets.check_quota(conn, Identity.user(u), tenant_id=t, user_id=u, action="agency:scope:generate", tokens=5000)

Enforcement is not here: statement triggers on usage_events count every write against the
budgets it falls under, in the writing transaction, for every client (see the budgets migration).
`check_quota` only tells a caller, before an expensive model call, whether a spend would pass now;
the write itself is what is refused (QuotaExceeded) when it would pass a hard limit.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

import psycopg
from psycopg import errors as pgerrors
from psycopg.rows import dict_row
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from usagemeter import errors
from usagemeter.billing import budget_sql
from usagemeter.db import Identity, acting_as

Metric = Literal["events", "tokens", "cost"]
Period = Literal["day", "week", "month", "total"]
Mode = Literal["hard", "soft"]

ACTION_PATTERN = r"^[a-z0-9_*-]+(:[a-z0-9_*-]+){0,2}$"


class BudgetSpec(BaseModel):
    """A budget to set: its scope, metric, limit, window and mode (the same rules as the table's CHECKs)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tenant_id: uuid.UUID | None = None
    user_id: uuid.UUID | None = None
    metric: Metric
    limit: Decimal = Field(gt=0, max_digits=20, decimal_places=6)
    currency: str | None = Field(default=None, pattern=r"^[A-Z]{3}$")
    period: Period
    time_zone: str = Field(default="UTC", min_length=1, max_length=64)
    action_pattern: str | None = Field(default=None, max_length=200, pattern=ACTION_PATTERN)
    mode: Mode
    thresholds: tuple[Decimal, ...] = (Decimal("0.8"), Decimal("1.0"))

    @field_validator("thresholds")
    @classmethod
    def _fractions(cls, thresholds: tuple[Decimal, ...]) -> tuple[Decimal, ...]:
        if not 1 <= len(thresholds) <= 10 or any(not 0 < t <= 10 for t in thresholds):
            raise ValueError("give 1 to 10 thresholds, each a fraction of the limit above 0 (e.g. 0.8 for 80%)")
        return thresholds

    @model_validator(mode="after")
    def _consistent(self) -> BudgetSpec:
        if self.tenant_id is None and self.user_id is None:
            raise ValueError("a budget needs a scope: a tenant (optionally one user in it) or a Personal user")
        if (self.metric == "cost") != (self.currency is not None):
            raise ValueError("a cost budget needs a currency (--currency), and only a cost budget takes one")
        if self.metric != "cost" and self.limit != self.limit.to_integral_value():
            raise ValueError(f"an {self.metric} limit is a whole number, got {self.limit}")
        return self


@dataclass(frozen=True)
class BudgetStatus:
    """A budget with its current window and what it has used there."""

    id: uuid.UUID
    tenant_id: uuid.UUID | None
    user_id: uuid.UUID | None
    metric: str
    limit: Decimal
    currency: str | None
    period: str
    time_zone: str
    action_pattern: str | None
    mode: str
    thresholds: tuple[Decimal, ...]
    window_start: datetime | None
    window_end: datetime | None
    used: Decimal
    remaining: Decimal

    def as_json(self) -> dict[str, Any]:
        """JSON-ready: ids and money as strings (exact), times in ISO 8601; `window` names the period."""
        return {
            "id": str(self.id),
            "tenant_id": _text(self.tenant_id),
            "user_id": _text(self.user_id),
            "metric": self.metric,
            "limit": plain_number(self.limit),
            "used": plain_number(self.used),
            "remaining": plain_number(self.remaining),
            "currency": self.currency,
            "window": self.period,
            "time_zone": self.time_zone,
            "window_start": _time(self.window_start),
            "window_end": _time(self.window_end),
            "action_pattern": self.action_pattern,
            "mode": self.mode,
            "thresholds": [plain_number(t) for t in self.thresholds],
        }


@dataclass(frozen=True)
class QuotaCheck:
    """The answer to "may I spend this much more now?": allowed unless a hard budget would pass its limit."""

    allowed: bool
    budgets: tuple[dict[str, Any], ...]

    def as_json(self) -> dict[str, Any]:
        return {"allowed": self.allowed, "budgets": list(self.budgets)}


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def plain_number(value: Decimal) -> str:
    """A decimal as a string without trailing zeros after the point (1000, 12.5), exactly."""
    text = format(value, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def _time(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _status(row: dict[str, Any]) -> BudgetStatus:
    return BudgetStatus(
        id=row["id"], tenant_id=row["tenant_id"], user_id=row["user_id"], metric=row["metric"],
        limit=row["usage_limit"], currency=row["currency"], period=row["period"], time_zone=row["time_zone"],
        action_pattern=row["action_pattern"], mode=row["mode"], thresholds=tuple(row["thresholds"]),
        window_start=row["window_start"], window_end=row["window_end"], used=row["used"],
        remaining=row["remaining"],
    )  # fmt: skip


def set_budget(conn: psycopg.Connection[Any], spec: BudgetSpec) -> BudgetStatus:
    """Set a budget as the service role; it counts the usage already in its current window.

    Raises
    ------
    errors.BudgetError
        The scope does not exist (unknown tenant or user), or the database refuses the budget
        (unknown time zone, a cost budget in another currency than the prices).
    """
    params = spec.model_dump()
    params["thresholds"] = list(spec.thresholds)
    try:
        with acting_as(conn, Identity.service()):
            row = conn.execute(budget_sql.INSERT_BUDGET, params).fetchone()
    except pgerrors.ForeignKeyViolation as failure:
        scope = "tenant" if "tenant_id" in (failure.diag.constraint_name or "") else "user"
        value = spec.tenant_id if scope == "tenant" else spec.user_id
        raise errors.BudgetError(f"{scope}: no {scope} has id {value}; a budget's scope must exist") from None
    except (pgerrors.InvalidParameterValue, pgerrors.CheckViolation) as failure:
        raise errors.BudgetError(failure.diag.message_primary or str(failure)) from None
    assert row is not None
    found = list_budgets(conn, Identity.service(), budget_id=row[0])
    return found[0]


def list_budgets(
    conn: psycopg.Connection[Any],
    identity: Identity,
    *,
    tenant_id: uuid.UUID | None = None,
    personal_user_id: uuid.UUID | None = None,
    budget_id: uuid.UUID | None = None,
) -> list[BudgetStatus]:
    """Budgets as `identity` may read them (RLS), each with its current window: a tenant's, or a Personal user's."""
    params = {"tenant_id": tenant_id, "personal_user_id": personal_user_id, "budget_id": budget_id}
    with acting_as(conn, identity), conn.cursor(row_factory=dict_row) as cur:
        return [_status(row) for row in cur.execute(budget_sql.BUDGET_STATUS, params).fetchall()]


def delete_budget(conn: psycopg.Connection[Any], budget_id: uuid.UUID) -> None:
    """Delete a budget (its counters and alerts go with it), as the service role."""
    with acting_as(conn, Identity.service()):
        row = conn.execute(budget_sql.DELETE_BUDGET, {"budget_id": budget_id}).fetchone()
    if row is None:
        raise errors.BudgetError(f"budget: no budget has id {budget_id}")


def check_quota(
    conn: psycopg.Connection[Any],
    identity: Identity,
    *,
    tenant_id: uuid.UUID | None,
    user_id: uuid.UUID | None,
    action: str,
    events: int = 1,
    tokens: int = 0,
    cost: Decimal = Decimal(0),
) -> QuotaCheck:
    """Whether spending this much more now would stay within every hard budget it counts against.

    Advisory: another writer may spend the rest before this caller writes. Only the write is
    enforced (QuotaExceeded); this answers before an expensive call whether to make it at all.
    """
    params = {"tenant_id": tenant_id, "user_id": user_id, "action": action, "events": events, "tokens": tokens,
              "cost": cost}  # fmt: skip
    with acting_as(conn, identity), conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(budget_sql.CHECK_QUOTA, params).fetchall()
    budgets = tuple(
        {
            "budget_id": str(row["budget_id"]),
            "metric": row["metric"],
            "mode": row["mode"],
            "limit": plain_number(row["usage_limit"]),
            "used": plain_number(row["used"]),
            "requested": plain_number(row["requested"]),
            "remaining": plain_number(row["remaining"]),
            "window_start": _time(row["window_start"]),
            "window_end": _time(row["window_end"]),
            "allowed": row["allowed"],
        }
        for row in rows
    )
    return QuotaCheck(allowed=all(b["allowed"] for b in budgets), budgets=budgets)


def alerts_after(
    conn: psycopg.Connection[Any], identity: Identity, *, after_id: int = 0, limit: int = 1000
) -> list[dict[str, Any]]:
    """Threshold alerts with ids above `after_id`, oldest first: how a listener catches up after being away."""
    with acting_as(conn, identity), conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(budget_sql.ALERTS_AFTER, {"after_id": after_id, "limit": limit}).fetchall()
    return [
        {
            **row,
            "budget_id": str(row["budget_id"]),
            "tenant_id": _text(row["tenant_id"]),
            "user_id": _text(row["user_id"]),
            "threshold": plain_number(row["threshold"]),
            "used": plain_number(row["used"]),
            "usage_limit": plain_number(row["usage_limit"]),
            "window_start": _time(row["window_start"]),
            "fired_at": _time(row["fired_at"]),
        }
        for row in rows
    ]


def listen_for_alerts(conn: psycopg.Connection[Any], *, timeout: float) -> Iterator[str]:
    """The payloads (JSON text) of alerts as they commit, until `timeout` seconds pass without one.

    `conn` must be in autocommit mode. Notifications are not kept for absent listeners: catch up
    with alerts_after first, then listen.
    """
    conn.execute(budget_sql.LISTEN_ALERTS)
    for notification in conn.notifies(timeout=timeout):
        yield notification.payload


def thresholds_from_text(text: str) -> tuple[Decimal, ...]:
    """`80,100` or `0.8,1` as fractions; percentages above 10 are divided by 100."""
    values: Sequence[Decimal] = [Decimal(part.strip()) for part in text.split(",") if part.strip()]
    return tuple(v / 100 if v > 10 else v for v in values)
