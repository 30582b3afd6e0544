"""What a report covers (scope, time range, narrowing), shared by summaries, listings and exports."""

from __future__ import annotations

import json
import uuid
import zoneinfo
from datetime import UTC, datetime
from typing import Any, Self, TypeVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from usagemeter import errors
from usagemeter.reporting import report_sql

Scope = report_sql.Scope

# The moments a report may cover. Python's datetime holds years 1 to 9999 and PostgreSQL's
# timestamptz far more; a year of margin keeps every zone conversion, whole-day rounding and
# week or month bucket start of a range inside what both can represent.
EARLIEST = datetime(2, 1, 1, tzinfo=UTC)
LATEST = datetime(9999, 1, 1, tzinfo=UTC)

# A containment filter deeper than this is refused (json and jsonb would recurse on it).
METADATA_MAX_DEPTH = 100


class ReportError(errors.UsagemeterError, ValueError):
    """A report was asked for with bad parameters (unknown grouping, inverted range, bad time zone, bad cursor)."""


def time_zone(name: str) -> zoneinfo.ZoneInfo:
    """The IANA zone `name`, if both Python and PostgreSQL can use it; ReportError naming `tz` otherwise.

    `right/` zones count leap seconds, which PostgreSQL refuses; a zone the server lacks is
    refused when the summary runs (see summaries.summarize).
    """
    if name.startswith("right/"):
        raise ReportError(
            f"tz: {name!r} counts leap seconds, which PostgreSQL does not support: use {name.removeprefix('right/')!r}"
        )
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ReportError(f"tz: unknown time zone {name!r} (expected an IANA name such as Europe/Paris)") from None


def range_from_text(start: str | None, end: str | None, tz: str) -> tuple[datetime, datetime]:
    """A report's [start, end) from ISO dates (midnight in `tz`) or date-times; by default this month in `tz`.

    The CLI's --from/--to and the HTTP API's from/to read the same way; errors name `start` or `end`.
    """
    zone = time_zone(tz)

    def parse(text: str, field: str) -> datetime:
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise ReportError(f"{field}: expected an ISO date or date-time such as 2026-06-01, got {text!r}") from None
        return moment if moment.tzinfo else moment.replace(tzinfo=zone)

    today = datetime.now(zone)
    month_start = datetime(today.year, today.month, 1, tzinfo=zone)
    next_month = datetime(today.year + today.month // 12, today.month % 12 + 1, 1, tzinfo=zone)
    return (parse(start, "start") if start else month_start), (parse(end, "end") if end else next_month)


def in_reportable_range(moment: datetime) -> bool:
    """Whether `moment` lies in [EARLIEST, LATEST] (compared without converting, which could overflow)."""
    return EARLIEST <= moment <= LATEST


def metadata_depth(value: object) -> int:
    """How deeply `value` nests lists and objects (1 for a flat object), measured without recursion."""
    depth, level = 0, [value]
    while level:
        depth += 1
        level = [
            child
            for item in level
            for child in (item.values() if isinstance(item, dict) else item if isinstance(item, list) else ())
            if isinstance(child, dict | list)
        ]
    return depth


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

    @field_validator("start", "end")
    @classmethod
    def _reportable(cls, moment: datetime) -> datetime:
        if not in_reportable_range(moment):
            raise ValueError(
                f"{moment.isoformat()} is outside the range a report can cover,"
                f" {EARLIEST.date()} (earliest) to {LATEST.date()} (latest) UTC"
            )
        return moment

    @field_validator("metadata")
    @classmethod
    def _jsonb(cls, metadata: dict[str, Any] | None) -> dict[str, Any] | None:
        """Refuse what json or jsonb cannot take, so the server never fails on the filter."""
        if metadata is None:
            return None
        if metadata_depth(metadata) > METADATA_MAX_DEPTH:
            raise ValueError(f"nested too deeply (more than {METADATA_MAX_DEPTH} levels)")
        try:
            text = json.dumps(metadata, allow_nan=False)
        except ValueError:
            raise ValueError("numbers must be finite (JSON has no NaN or Infinity)") from None
        except TypeError as failure:
            raise ValueError(f"values must be JSON: {failure}") from None
        if "\\u0000" in text.replace("\\\\", ""):
            raise ValueError("strings cannot contain NUL (\\u0000): PostgreSQL text cannot store it")
        try:
            json.dumps(metadata, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("strings must be valid Unicode (no lone surrogates)") from None
        return metadata

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
        where, message = errors.first_problem(failure)
        raise ReportError(f"{where}: {message}" if where else message) from None
