"""UsageEvent: one event to record, validated in Python by exactly the rules the database CHECKs enforce.

Validating first gives callers an error naming the field before any round trip, and keeps a bad
event out of a batch; the database still enforces the same rules for every other writer. A
property test checks that the two agree.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Required, TypedDict

from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator, model_validator

ACTION_PATTERN = re.compile(r"[a-z0-9_-]+:[a-z0-9_-]+:[a-z0-9_-]+")
ACTION_MAX_LENGTH = 200
IDEMPOTENCY_KEY_MAX_LENGTH = 200
METADATA_MAX_BYTES = 16384
MODEL_MAX_LENGTH = 200
INT4_MAX = 2**31 - 1
# Parts of tokens_input that providers bill at other rates (billing prices them): metadata keys.
CACHE_TOKEN_KEYS = ("tokens_cached_input", "tokens_cache_write")

TokenCount = Annotated[StrictInt, Field(ge=0, le=INT4_MAX)]


def _jsonb_number(value: int | float) -> str:
    """A number as jsonb prints it: numeric without exponent, and no negative zero."""
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("metadata numbers must be finite (JSON has no NaN or Infinity)")
        decimal = Decimal(repr(value))
        text = format(decimal, "f")
        return text.lstrip("-") if decimal == 0 else text
    return str(value)


def storable_text_problem(value: str) -> str | None:
    """Why PostgreSQL text cannot hold `value` (NUL, or a lone surrogate that UTF-8 cannot encode), or None."""
    if "\x00" in value:
        return "cannot contain NUL (\\u0000): PostgreSQL text cannot store it"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "must be valid Unicode (no lone surrogates such as '\\udc80')"
    return None


def _jsonb_string(value: str) -> str:
    problem = storable_text_problem(value)
    if problem is not None:
        raise ValueError(f"metadata strings {problem}")
    return json.dumps(value, ensure_ascii=False)


def jsonb_text(value: object) -> str:
    """The text PostgreSQL prints for `value::jsonb::text`, so the 16 KiB limit is measured as the CHECK does."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int | float):
        return _jsonb_number(value)
    if isinstance(value, str):
        return _jsonb_string(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(jsonb_text(item) for item in value) + "]"
    if isinstance(value, dict):
        if not all(isinstance(key, str) for key in value):
            raise ValueError("metadata keys must be strings")
        # jsonb orders keys by length, then bytes; the text length does not depend on the order.
        return "{" + ", ".join(f"{_jsonb_string(k)}: {jsonb_text(v)}" for k, v in value.items()) + "}"
    raise ValueError(
        f"metadata values must be JSON (object, array, string, number, boolean, null), not {type(value).__name__}"
    )


# Where json.dumps and jsonb may print differently (exponents, negative zero), or a NUL may hide.
_MEASURE_EXACTLY = re.compile(r"e\+|e-|-0\.0|\\u0000")
# json.dumps with options builds an encoder per call (a microsecond per event on record()'s path): one, kept.
_METADATA_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False)


class JsonObject(dict[str, Any]):
    """A validated metadata object that remembers its JSON text, so it is serialised once, not twice."""

    __slots__ = ("json_text",)

    def __init__(self, value: dict[str, Any], json_text: str) -> None:
        super().__init__(value)
        self.json_text = json_text


def metadata_json(metadata: dict[str, Any]) -> str:
    """The JSON text to send for `metadata` (computed once by validation when possible)."""
    return metadata.json_text if isinstance(metadata, JsonObject) else json.dumps(metadata)


def validated_metadata(metadata: dict[str, Any]) -> JsonObject:
    """Check what the database's metadata CHECKs check, and keep the JSON text for sending.

    json.dumps (C) prints what jsonb prints except for some floats: jsonb writes numbers without
    exponent and zero without sign. When the text holds an exponent, a negative zero or an escaped
    NUL, the size is measured exactly (jsonb_text), which also refuses NUL in strings.
    """
    try:
        text = _METADATA_ENCODER.encode(metadata)
    except ValueError:
        raise ValueError("metadata numbers must be finite (JSON has no NaN or Infinity)") from None
    except TypeError as failure:
        raise ValueError(
            f"metadata values must be JSON (object, array, string, number, boolean, null): {failure}"
        ) from None
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise ValueError("metadata strings must be valid Unicode (no lone surrogates)") from None
    if _MEASURE_EXACTLY.search(text) is not None:
        size = len(jsonb_text(metadata).encode("utf-8"))
    if size > METADATA_MAX_BYTES:
        raise ValueError(f"is {size} bytes as JSON text, more than the {METADATA_MAX_BYTES} allowed")
    return JsonObject(metadata, text)


def _claim_value(where: str, value: object) -> object:
    """A claim as JSON can carry it: UUIDs and datetimes as strings; what PostgreSQL cannot take raises."""
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, str):
        problem = storable_text_problem(value)
        if problem is not None:
            raise ValueError(f"claims: {where} {problem}")
        return value
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"claims: {where} must be finite (JSON has no NaN or Infinity)")
        return value
    if isinstance(value, list | tuple):
        return [_claim_value(f"{where}[{n}]", item) for n, item in enumerate(value)]
    if isinstance(value, Mapping):
        return {_claim_key(where, key): _claim_value(f"{where}.{key}", item) for key, item in value.items()}
    kind = type(value).__name__
    raise ValueError(f"claims: {where} must be JSON (string, number, boolean, null, list, object), not {kind}")


def _claim_key(where: str, key: object) -> str:
    if not isinstance(key, str):
        raise ValueError(f"claims: {where} has a key that is not a string: {key!r}")
    problem = storable_text_problem(key)
    if problem is not None:
        raise ValueError(f"claims: a key in {where or 'the claims'} {problem}")
    return key


def validated_claims(claims: Mapping[str, Any]) -> dict[str, Any]:
    """JWT claims as they are sent to the database (request.jwt.claims), checked before any write.

    Refused here rather than when a batch is written, where they would fail events of other callers.
    """
    return {_claim_key("", key): _claim_value(key, value) for key, value in claims.items()}


class EventFields(TypedDict, total=False):
    """One event as keyword arguments of record() and enqueue(): what UsageEvent validates."""

    action: Required[str]
    user_id: Required[uuid.UUID | None]
    tenant_id: uuid.UUID | None
    module_id: str | None
    tokens_input: int
    tokens_output: int
    metadata: Mapping[str, Any] | None
    idempotency_key: str | None
    created_at: datetime | None
    model: str | None


def model_problem(metadata: Mapping[str, Any]) -> str | None:
    """Why metadata.model is not a model name the database keeps (its text is the model column), or None."""
    value = metadata.get("model")
    if value is None:
        return None
    text = value if isinstance(value, str) else jsonb_text(value)
    if len(text) > MODEL_MAX_LENGTH:
        return f"metadata.model must be at most {MODEL_MAX_LENGTH} characters, got {len(text)}"
    return None


def cache_counts_problem(metadata: Mapping[str, Any], tokens_input: int) -> str | None:
    """Why the cached-input counts in metadata are not parts of tokens_input, or None (the database CHECKs the same)."""
    total = 0
    for key in CACHE_TOKEN_KEYS:
        if key not in metadata:
            continue
        value = metadata[key]
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0 or value != int(value):
            return f"metadata.{key} must be a whole number >= 0, got {value!r}"
        total += int(value)
    if total > tokens_input:
        parts = " + ".join(f"metadata.{k}" for k in CACHE_TOKEN_KEYS if k in metadata)
        return f"{parts} ({total}) must not exceed tokens_input ({tokens_input})"
    return None


class UsageEvent(BaseModel):
    """One usage event, as the application hands it to the recorder.

    `module_id` defaults to the action's first segment. `created_at` may only be given by the
    service role (backfills, late events); users' events are stamped by the database. `model=` is
    stored as metadata.model, where the database reads it (so a direct insert that names only
    metadata.model is priced alike); `tokens_cached_input` and `tokens_cache_write` in metadata are
    parts of tokens_input.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    action: str
    user_id: uuid.UUID | None = None
    tenant_id: uuid.UUID | None = None
    module_id: str | None = None
    tokens_input: TokenCount = 0
    tokens_output: TokenCount = 0
    metadata: dict[str, Any] = Field(default_factory=dict)
    idempotency_key: str | None = None
    created_at: datetime | None = None

    @model_validator(mode="before")
    @classmethod
    def _model_into_metadata(cls, data: object) -> object:
        if not isinstance(data, dict) or "model" not in data:
            return data
        fields = dict(data)
        model = fields.pop("model")
        if model is None:
            return fields
        if not isinstance(model, str) or not model:
            raise ValueError(f"model must be a non-empty string, got {model!r}")
        metadata = fields.get("metadata") or {}
        if not isinstance(metadata, dict):
            return fields  # the metadata validator names the problem
        if metadata.get("model", model) != model:
            raise ValueError(f"model {model!r} differs from metadata.model {metadata['model']!r}")
        fields["metadata"] = {**metadata, "model": model}
        return fields

    @field_validator("action")
    @classmethod
    def _action_format(cls, action: str) -> str:
        if len(action) > ACTION_MAX_LENGTH or ACTION_PATTERN.fullmatch(action) is None:
            raise ValueError(
                f"expected <module>:<domain>:<verb>, three segments of a-z 0-9 _ -, at most {ACTION_MAX_LENGTH}"
                f" characters (e.g. agency:scope:generate), got {action[:60]!r}"
            )
        return action

    @field_validator("metadata", mode="before")
    @classmethod
    def _metadata_is_object(cls, metadata: object) -> object:
        if metadata is None:
            return {}
        if not isinstance(metadata, dict):
            raise ValueError(f"must be a JSON object, got {type(metadata).__name__}")
        return metadata

    @field_validator("metadata")
    @classmethod
    def _metadata_size(cls, metadata: dict[str, Any]) -> dict[str, Any]:
        return validated_metadata(metadata)

    @field_validator("idempotency_key")
    @classmethod
    def _idempotency_key(cls, key: str | None) -> str | None:
        if key is not None and not 1 <= len(key) <= IDEMPOTENCY_KEY_MAX_LENGTH:
            raise ValueError(f"must be 1 to {IDEMPOTENCY_KEY_MAX_LENGTH} characters, got {len(key)}")
        problem = None if key is None else storable_text_problem(key)
        if problem is not None:
            raise ValueError(problem)
        return key

    @field_validator("created_at")
    @classmethod
    def _created_at_has_zone(cls, created_at: datetime | None) -> datetime | None:
        if created_at is not None and created_at.tzinfo is None:
            raise ValueError("needs a time zone (naive datetimes are ambiguous)")
        return created_at

    @model_validator(mode="after")
    def _consistent(self) -> UsageEvent:
        module = self.action.split(":", 1)[0]
        if self.module_id is None:
            object.__setattr__(self, "module_id", module)
        elif self.module_id != module:
            raise ValueError(f"module_id {self.module_id!r} must equal the action's first segment {module!r}")
        if self.tenant_id is None and self.user_id is None:
            raise ValueError("an event needs a tenant_id or a user_id (personal events need the user)")
        if self.tokens_input + self.tokens_output > INT4_MAX:
            raise ValueError(f"tokens_input + tokens_output must not exceed {INT4_MAX}")
        problem = model_problem(self.metadata) or cache_counts_problem(self.metadata, self.tokens_input)
        if problem is not None:
            raise ValueError(problem)
        return self

    @property
    def tokens_total(self) -> int:
        return self.tokens_input + self.tokens_output

    @property
    def model(self) -> str | None:
        """The model the database prices the event by (metadata.model), if any."""
        value = self.metadata.get("model")
        return None if value is None or value == "" else value if isinstance(value, str) else jsonb_text(value)
