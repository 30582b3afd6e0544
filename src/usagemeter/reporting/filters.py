"""What a report covers (scope, time range, narrowing), shared by summaries, listings and exports."""

from __future__ import annotations

import json
import uuid
from typing import Any, Self, TypeVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, ValidationError, model_validator

from usagemeter import errors
from usagemeter.reporting import report_sql

Scope = report_sql.Scope


class ReportError(errors.UsagemeterError, ValueError):
    """A report was asked for with bad parameters (unknown grouping, inverted range, bad time zone, bad cursor)."""


class UsageFilter(BaseModel):
    """Which events a report covers: a scope, a time range [start, end), and optional narrowing."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    scope: Scope
    tenant_id: uuid.UUID | None = None
    user_id: uuid.UUID | None = None
    start: AwareDatetime
    end: AwareDatetime
    action: str | None = None
    action_prefix: str | None = None
    module: str | None = None
    by_user: uuid.UUID | None = None
    metadata: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.start >= self.end:
            raise ValueError(f"the range is empty or inverted: start {self.start} is not before end {self.end}")
        if self.scope == "tenant" and self.tenant_id is None:
            raise ValueError("scope 'tenant' needs tenant_id")
        if self.scope == "user" and self.user_id is None:
            raise ValueError("scope 'user' (personal usage) needs user_id")
        return self

    def active_filters(self) -> list[str]:
        names = ["action", "action_prefix", "module", "by_user", "metadata"]
        return [name for name in names if getattr(self, name) is not None]

    def parameters(self) -> dict[str, Any]:
        return {
            "tenant_id": self.tenant_id,
            "user_id": self.user_id,
            "start": self.start,
            "end": self.end,
            "action": self.action,
            "action_prefix": self.action_prefix,
            "module": self.module,
            "by_user": self.by_user,
            "metadata": json.dumps(self.metadata) if self.metadata is not None else None,
        }


QueryModel = TypeVar("QueryModel", bound=BaseModel)


def query_from(model: type[QueryModel], **fields: object) -> QueryModel:
    """Build a query model, turning validation errors into one ReportError that names the field."""
    try:
        return model(**fields)
    except ValidationError as failure:
        first = failure.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        message = str(first["msg"]).removeprefix("Value error, ")
        raise ReportError(f"{where}: {message}" if where else message) from None
