"""Prices: what tokens of a model and events of an action cost, validated here, loaded as the service role.

The database holds the rules that must hold for every client (usage_prices' checks, one currency,
immutability, who may write) and rates every event as it is written. This module checks a price
list first, so a bad row is named by its row and column before any round trip, and maps the
database's refusals of a load to errors naming the row; a load is one transaction, all or nothing.

rows = price_files.read_price_file("prices.csv")
loaded = load_prices(conn, rows)
in_effect = list_prices(conn, Identity.user(uid), at=datetime.now(UTC))
"""

from __future__ import annotations

import unicodedata
import uuid
from collections.abc import Sequence
from datetime import UTC, date, datetime, time
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

import psycopg
import pydantic
from psycopg import errors as pgerrors
from psycopg.rows import dict_row
from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationInfo, field_validator

from usagemeter import errors
from usagemeter.db import Identity, acting_as, refusals, sql
from usagemeter.recording import event

queries = sql.load_queries("usagemeter.billing")

# The columns of a price file, in the order a file's header names them; the last two may be left out.
REQUIRED_COLUMNS = (
    "model", "action", "tenant_id", "currency", "input_per_million", "output_per_million", "per_event",
    "effective_from",
)  # fmt: skip
CACHE_COLUMNS = ("cached_input_per_million", "cache_write_per_million")
COLUMNS = REQUIRED_COLUMNS + CACHE_COLUMNS

# numeric(20, 6): six decimal places, fourteen digits before the point.
MONEY_PLACES = 6
MONEY_QUANTUM = Decimal(1).scaleb(-MONEY_PLACES)
MONEY_LIMIT = Decimal(10) ** (20 - MONEY_PLACES)

DUPLICATE = "two prices for the same model, action, tenant and currency with the same effective_from"


def _money(value: object) -> Decimal | None:
    """A price as an exact decimal: from a string, an int or a Decimal, never a float (floats are inexact)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | Decimal):
        if isinstance(value, float):
            raise ValueError(
                f"floats are inexact: give the price as a string or a Decimal (e.g. '2.50'), got {value!r}"
            )
        raise ValueError(f"expected a decimal number such as 2.50, got {type(value).__name__}")
    try:
        amount = Decimal(value.strip()) if isinstance(value, str) else Decimal(value)
    except InvalidOperation:
        raise ValueError(f"expected a decimal number such as 2.50, got {str(value)[:40]!r}") from None
    if not amount.is_finite():
        raise ValueError(f"must be a finite number, got {value!r}")
    if amount < 0:
        raise ValueError(f"must be 0 or more (a price is never negative), got {amount}")
    if amount >= MONEY_LIMIT:
        raise ValueError(f"must be less than {MONEY_LIMIT:,} (prices are numeric(20, 6)), got {amount}")
    if amount != amount.quantize(MONEY_QUANTUM):
        raise ValueError(
            f"has more than {MONEY_PLACES} decimal places (prices are kept to the millionth), got {amount}"
        )
    return abs(amount)  # -0 is 0


def parse_moment(value: object) -> datetime:
    """A point in time from an ISO 8601 date (midnight UTC) or a date-time with a zone; naive date-times are refused.

    Numbers are refused too: pydantic would read 20250610 as seconds since 1970.
    """
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, date):
        return datetime.combine(value, time(), tzinfo=UTC)
    elif isinstance(value, str):
        text = value.strip()
        try:
            return datetime.combine(date.fromisoformat(text), time(), tzinfo=UTC)
        except ValueError:
            pass
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(
                "expected an ISO 8601 date (2025-06-10, midnight UTC) or a date-time with a zone"
                f" (2025-06-10T09:00:00Z), got {text[:40]!r}"
            ) from None
    elif value is None:
        raise ValueError("needs the date (2025-06-10) or date-time with a zone from which the price applies")
    else:
        raise ValueError(f"expected an ISO 8601 date or date-time as text, got {type(value).__name__}")
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise ValueError(f"needs a time zone, e.g. {parsed.isoformat()}Z (a naive date-time is ambiguous)")
    return parsed


Money = Annotated[Decimal | None, BeforeValidator(_money)]


class PriceRow(BaseModel):
    """One price: tokens of a model (per million), or events of an action (per event, optionally of one model).

    For every tenant (tenant_id None) or one, from effective_from on, in an ISO 4217 currency.
    Token price: model, input_per_million and output_per_million, optionally the cache rates
    (absent: the input rate); no per_event. Action price: action and per_event, optionally a
    model to narrow it to; no token rates. The same rules as usage_prices' checks.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True)

    model: str | None = None
    action: str | None = None
    tenant_id: uuid.UUID | None = None
    currency: str
    input_per_million: Money = None
    output_per_million: Money = None
    per_event: Money = None
    effective_from: Annotated[datetime, BeforeValidator(parse_moment)]
    cached_input_per_million: Money = None
    cache_write_per_million: Money = None

    @field_validator("model")
    @classmethod
    def _model_name(cls, model: str | None) -> str | None:
        if model is None:
            return None
        if not 1 <= len(model) <= event.MODEL_MAX_LENGTH:
            raise ValueError(f"must be 1 to {event.MODEL_MAX_LENGTH} characters, got {len(model)}")
        if model != model.strip():
            raise ValueError(f"must not start or end with white space (events name models exactly), got {model!r}")
        if any(unicodedata.category(character) == "Cc" for character in model):
            raise ValueError(f"must not contain control characters (tabs, line breaks...), got {model[:60]!r}")
        problem = event.storable_text_problem(model)
        if problem is not None:
            raise ValueError(problem)
        return model

    @field_validator("action")
    @classmethod
    def _action_or_model(cls, action: str | None, info: ValidationInfo) -> str | None:
        if action is not None and (
            len(action) > event.ACTION_MAX_LENGTH or event.ACTION_PATTERN.fullmatch(action) is None
        ):
            raise ValueError(
                f"expected <module>:<domain>:<verb>, three segments of a-z 0-9 _ -, at most {event.ACTION_MAX_LENGTH}"
                f" characters (e.g. agency:scope:generate), got {action[:60]!r}"
            )
        if action is None and "model" in info.data and info.data["model"] is None:
            raise ValueError("a price needs a model (a token price) or an action (a per-event price); both are empty")
        return action

    @field_validator("currency", mode="before")
    @classmethod
    def _currency_given(cls, currency: object) -> object:
        if currency is None:
            raise ValueError("needs a currency, an ISO 4217 code such as USD")
        return currency

    @field_validator("currency")
    @classmethod
    def _iso_4217(cls, currency: str) -> str:
        if len(currency) != 3 or not (currency.isascii() and currency.isalpha() and currency.isupper()):
            raise ValueError(f"expected an ISO 4217 code of three capital letters such as USD, got {currency[:20]!r}")
        return currency

    @field_validator("input_per_million", "output_per_million")
    @classmethod
    def _token_rate(cls, rate: Decimal | None, info: ValidationInfo) -> Decimal | None:
        if "action" not in info.data:  # the action was refused already: that is the row's problem
            return rate
        if info.data["action"] is None and rate is None:
            side = "input" if info.field_name == "input_per_million" else "output"
            raise ValueError(f"a token price (a model, no action) needs the price of a million {side} tokens")
        return _no_token_rate_on_an_action_price(rate, info)

    @field_validator("cached_input_per_million", "cache_write_per_million")
    @classmethod
    def _cache_rate(cls, rate: Decimal | None, info: ValidationInfo) -> Decimal | None:
        return _no_token_rate_on_an_action_price(rate, info)

    @field_validator("per_event")
    @classmethod
    def _per_event(cls, per_event: Decimal | None, info: ValidationInfo) -> Decimal | None:
        if "action" not in info.data:
            return per_event
        if info.data["action"] is not None and per_event is None:
            raise ValueError("an action price needs per_event, the price of one event")
        if info.data["action"] is None and per_event is not None:
            raise ValueError(
                "a token price (no action) has no per_event: leave it empty, or name the action whose events it prices"
            )
        return per_event

    @field_validator("effective_from")
    @classmethod
    def _effective_from_has_zone(cls, effective_from: datetime) -> datetime:
        if effective_from.tzinfo is None or effective_from.utcoffset() is None:
            raise ValueError("needs a time zone (a naive date-time is ambiguous)")
        return effective_from

    @property
    def key(self) -> tuple[str | None, str | None, uuid.UUID | None, str, datetime]:
        """What usage_prices_key makes unique: one price per model, action, tenant, currency and instant."""
        return self.model, self.action, self.tenant_id, self.currency, self.effective_from

    def describe(self) -> str:
        """The price's key in words, for messages (model gpt-4o, all tenants, USD, effective_from ...)."""
        parts = [f"action {self.action}" if self.action else "", f"model {self.model}" if self.model else ""]
        parts += [f"tenant {self.tenant_id}" if self.tenant_id else "all tenants", self.currency]
        parts.append(f"effective_from {self.effective_from.astimezone(UTC).isoformat()}")
        return ", ".join(part for part in parts if part)


def _no_token_rate_on_an_action_price(rate: Decimal | None, info: ValidationInfo) -> Decimal | None:
    if rate is not None and info.data.get("action") is not None:
        raise ValueError(
            f"an action price (per_event) prices events, not tokens: leave {info.field_name} empty,"
            " or price the model's tokens in a row without an action"
        )
    return rate


def price_row(fields: dict[str, Any], *, row: int, where: str = "", line: int | None = None) -> PriceRow:
    """Validate one price; InvalidPrice naming where (a file), the row (and line) and the field if it breaks a rule."""
    try:
        return PriceRow.model_validate(fields)
    except pydantic.ValidationError as failure:
        field, message = errors.first_problem(failure)
        at = f"{where}row {row}{f' (line {line})' if line is not None else ''}: "
        raise errors.InvalidPrice(f"{at}{field + ': ' if field else ''}{message}", row=row, field=field) from None


def check_price_list(rows: Sequence[PriceRow], *, where: str = "") -> None:
    """What a load needs of the list as a whole: no key twice, one currency. InvalidPrice naming the row if not.

    The database enforces both too; checking first names the row without a round trip, and
    refuses the list before anything is written.
    """
    seen: dict[tuple[Any, ...], int] = {}
    for number, price in enumerate(rows, start=1):
        if price.currency != rows[0].currency:
            raise errors.InvalidPrice(
                f"{where}row {number}: currency: every price must be in one currency: row 1 is in"
                f" {rows[0].currency}, this row in {price.currency}",
                row=number,
                field="currency",
            )
        earlier = seen.setdefault(price.key, number)
        if earlier != number:
            raise errors.InvalidPrice(
                f"{where}row {number}: effective_from: {DUPLICATE} (rows {earlier} and {number}: {price.describe()})",
                row=number,
                field="effective_from",
            )


def _refused(failure: psycopg.Error, *, row: int, price: PriceRow) -> errors.PriceRefused:
    """The one place a database refusal of a price becomes a project error naming its row."""
    diag = failure.diag
    if isinstance(failure, pgerrors.UniqueViolation) and diag.constraint_name == "usage_prices_key":
        message, field = f"{DUPLICATE}: {price.describe()} is already stored", "effective_from"
    elif isinstance(failure, pgerrors.ForeignKeyViolation) and diag.constraint_name == "usage_prices_tenant_id_fkey":
        message, field = f"unknown tenant {price.tenant_id} (no such tenant)", "tenant_id"
    elif failure.sqlstate == "22023":  # the one-currency trigger
        hint = f" ({diag.message_hint})" if diag.message_hint else ""
        message, field = f"{diag.message_primary}{hint}", "currency"
    elif diag.constraint_name:
        message, field = f"{diag.constraint_name}: {diag.message_primary}", None
    else:
        message, field = diag.message_primary or str(failure).strip(), None
    where = f"{field}: " if field else ""
    return errors.PriceRefused(f"row {row}: {where}{message}", row=row, field=field, sqlstate=failure.sqlstate)


def load_prices(conn: psycopg.Connection[Any], rows: Sequence[PriceRow]) -> int:
    """Store prices as the service role, in one transaction: all of them, or none.

    Parameters
    ----------
    conn:
        A connection that may act as service_role (the owner's, or the app login's). Idle, the
        load is its own transaction and commits; inside a transaction, it is a savepoint of it,
        and the caller's commit or rollback decides.
    rows:
        The prices, validated (PriceRow); row numbers in errors count from 1 in this order.

    Returns
    -------
    How many prices were stored (len(rows)).

    Raises InvalidPrice (a key twice, two currencies) before writing anything, and PriceRefused
    naming the row when the database refuses one (already stored, unknown tenant, a currency other
    than the stored prices'); nothing is stored then. Connection failures propagate as psycopg's.
    """
    check_price_list(rows)
    with acting_as(conn, Identity.service()):
        for number, price in enumerate(rows, start=1):
            try:
                conn.execute(queries["insert_price"], price.model_dump())
            except psycopg.Error as failure:
                if refusals.is_transient(failure):
                    raise
                raise _refused(failure, row=number, price=price) from None
    return len(rows)


def list_prices(
    conn: psycopg.Connection[Any],
    identity: Identity,
    at: datetime | None = None,
    *,
    tenant_id: uuid.UUID | None = None,
) -> list[PriceRow]:
    """Prices as `identity` may read them (RLS: a user reads the general prices and their tenants'), in a fixed order.

    Parameters
    ----------
    at:
        Only the prices in effect at this moment: for each model, action and tenant, the latest
        effective_from at or before it. None: every price, past and future.
    tenant_id:
        Only the prices that apply to this tenant: the general ones and its own.

    Returns
    -------
    The prices, ordered by model, action, tenant (general first) and effective_from.
    """
    if at is not None and (at.tzinfo is None or at.utcoffset() is None):
        raise errors.InvalidPrice("at: needs a time zone (a naive date-time is ambiguous)", field="at")
    parameters = {"tenant_id": tenant_id, "at": at}
    with acting_as(conn, identity), conn.cursor(row_factory=dict_row) as cursor:
        found = cursor.execute(queries["list_prices" if at is None else "list_prices_in_effect"], parameters).fetchall()
    return [PriceRow.model_validate(row) for row in found]


def decimal_text(amount: Decimal) -> str:
    """A price as text: exact, without exponent or trailing zeros (2.500000 -> 2.5, 100.000000 -> 100)."""
    return format(amount.normalize(), "f")


def price_record(price: PriceRow) -> dict[str, str | None]:
    """A price as a file row: the COLUMNS in order, decimals as strings, effective_from in ISO 8601 UTC."""
    record: dict[str, str | None] = {}
    for column in COLUMNS:
        value = getattr(price, column)
        if isinstance(value, Decimal):
            record[column] = decimal_text(value)
        elif isinstance(value, datetime):
            record[column] = value.astimezone(UTC).isoformat()
        else:
            record[column] = None if value is None else str(value)
    return record
