"""Exception types that say what is wrong, so callers and the CLI can answer precisely."""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pydantic


def first_problem(failure: pydantic.ValidationError) -> tuple[str | None, str]:
    """The first rule an input breaks, as our errors name it: its dotted field (None for the whole) and why."""
    first = failure.errors()[0]
    field = ".".join(str(part) for part in first["loc"]) or None
    return field, str(first["msg"]).removeprefix("Value error, ")


class UsagemeterError(Exception):
    """Base of every error usagemeter raises on purpose."""


class ConfigurationError(UsagemeterError):
    """A setting is missing or malformed (database URL, data directory)."""


class MigrationError(UsagemeterError):
    """Migrations could not be applied; the database was left as it was before the failing one."""


class MigrationFileError(MigrationError):
    """A file in supabase/migrations does not follow the <14-digit timestamp>_<name>.sql naming."""


class MigrationChanged(MigrationError):
    """An applied migration's file no longer matches what was applied: history would lie."""


class EmbeddedServerError(UsagemeterError):
    """The embedded PostgreSQL could not be initialised, started or stopped."""


class InvalidEvent(UsagemeterError, ValueError):
    """An event breaks a rule (the same rules as the database CHECKs); nothing was written.

    `index` is the event's position in its batch (0 for a single event), `field` the offending field.
    """

    def __init__(self, message: str, *, index: int = 0, field: str | None = None) -> None:
        super().__init__(message)
        self.index = index
        self.field = field


class EventRejected(UsagemeterError):
    """The database refused an event (row-level security, unknown tenant or user); nothing of its batch was written."""

    def __init__(self, message: str, *, index: int = 0, sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.index = index
        self.sqlstate = sqlstate


class WriteRefused(EventRejected):
    """A rule in the database refused the event (a trigger's `raise exception`, e.g. a budget): its own words.

    `hint` and `detail` are what the database attached to its refusal, if anything.
    """

    def __init__(
        self,
        message: str,
        *,
        index: int = 0,
        sqlstate: str | None = None,
        hint: str | None = None,
        detail: str | None = None,
    ) -> None:
        super().__init__(message, index=index, sqlstate=sqlstate)
        self.hint = hint
        self.detail = detail


class QuotaExceeded(WriteRefused):
    """A hard budget refused the write: it would pass the budget's limit in its window. Nothing of it was stored.

    Names the budget, what it had used, what the write asked for, the limit and the window; in a
    batch, the whole statement is refused (all or nothing), so `requested` is the batch's share.
    """

    def __init__(
        self,
        message: str,
        *,
        budget: dict[str, Any],
        index: int = 0,
        sqlstate: str | None = None,
        hint: str | None = None,
        detail: str | None = None,
    ) -> None:
        super().__init__(message, index=index, sqlstate=sqlstate, hint=hint, detail=detail)
        self.budget_id: str = budget["budget_id"]
        self.metric: str = budget["metric"]
        self.limit = Decimal(str(budget["limit"]))
        self.used = Decimal(str(budget["used"]))
        self.requested = Decimal(str(budget["requested"]))
        self.currency: str | None = budget.get("currency")
        self.period: str = budget["period"]
        self.time_zone: str = budget["time_zone"]
        self.window_start: str = budget["window_start"]
        self.window_end: str = budget["window_end"]
        self.tenant_id: str | None = budget.get("tenant_id")
        self.user_id: str | None = budget.get("user_id")


class UnpricedUsage(WriteRefused):
    """A cost budget would have to count tokens of a model without a price (or of no model); nothing was stored."""


class IdempotencyConflict(UsagemeterError):
    """An idempotency key was reused with a different payload: a retry must repeat the original event."""

    def __init__(self, message: str, *, index: int = 0, existing_id: object = None) -> None:
        super().__init__(message)
        self.index = index
        self.existing_id = existing_id


class DatabaseUnavailable(UsagemeterError):
    """The database could not be reached after retries; with record(), nothing or everything was written."""


class DatabaseReadOnly(DatabaseUnavailable):
    """The database takes no writes (a standby after a failover, or set read-only); nothing was written.

    It may pass later (a new primary), so it is retried like a dropped connection first; enqueued
    events are spooled and replayed, as when the database is down.
    """


class Backpressure(UsagemeterError):
    """The enqueue buffer and spool are full and the policy is to raise rather than block."""


class RecorderClosed(UsagemeterError):
    """The recorder was closed; it takes no more events."""


class BudgetError(UsagemeterError, ValueError):
    """A budget could not be set, found or deleted: the message names what is wrong; nothing changed."""


class InvalidCorrection(UsagemeterError, ValueError):
    """A void or amendment was asked for with a bad reason or token count; nothing was sent. `field` names it."""

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(message)
        self.field = field


class EventNotFound(UsagemeterError, LookupError):
    """No usage event has the id given to a void or amendment (SQLSTATE P0002); nothing changed."""

    def __init__(self, message: str, *, event_id: object = None) -> None:
        super().__init__(message)
        self.event_id = event_id


class CorrectionRefused(UsagemeterError):
    """The database refused a void or amendment (already void, an entry, ...), in its own words; nothing changed."""

    def __init__(self, message: str, *, sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


class PermissionDenied(UsagemeterError):
    """The caller may not do this (SQLSTATE 42501, or a row RLS hides): nothing changed.

    Only the service role voids or amends usage and creates tenants; owners and admins manage members.
    """


class InvalidPrice(UsagemeterError, ValueError):
    """A price breaks a rule, or a price file cannot be read; no price of its file or list was loaded.

    `row` is the price's 1-based position in its file or list (None for the file as a whole: its
    header, its syntax), `field` the column at fault, if one is.
    """

    def __init__(self, message: str, *, row: int | None = None, field: str | None = None) -> None:
        super().__init__(message)
        self.row = row
        self.field = field


class PriceRefused(UsagemeterError):
    """The database refused a price of a load (a duplicate, an unknown tenant, a second currency); none was stored.

    `row` is the refused price's 1-based position in the list loaded, `field` the column at fault if
    one is, `sqlstate` the database's code.
    """

    def __init__(self, message: str, *, row: int, field: str | None = None, sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.row = row
        self.field = field
        self.sqlstate = sqlstate


class StatementError(UsagemeterError, ValueError):
    """A statement could not be made or closed: a bad month, zone or scope, or a month not ended or already closed."""


class InvalidToken(UsagemeterError):
    """A bearer token was missing, malformed, wrongly signed, expired or for another audience or issuer.

    The message says which, without echoing the token; the HTTP API answers 401 with it.
    """


class InvalidTenant(UsagemeterError, ValueError):
    """A tenant's name or slug breaks a rule (the same as the tenants table's CHECKs); nothing was written.

    `field` names it: `name` or `slug`.
    """

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(message)
        self.field = field


class TenantConflict(UsagemeterError):
    """Another tenant already has this slug (tenants_slug_key); nothing was written. `field` is `slug`."""

    def __init__(self, message: str, *, field: str = "slug") -> None:
        super().__init__(message)
        self.field = field


class TenantNotFound(UsagemeterError, LookupError):
    """No tenant has the id given (or the caller cannot see it); nothing was written."""


class InvalidMember(UsagemeterError, ValueError):
    """A membership was asked for with a bad role (owner, admin or member); nothing was written."""

    def __init__(self, message: str, *, field: str = "role") -> None:
        super().__init__(message)
        self.field = field


class MemberExists(UsagemeterError):
    """The user is already a member of the tenant with another role; nothing changed. `role` is their current one."""

    def __init__(self, message: str, *, role: str | None = None) -> None:
        super().__init__(message)
        self.role = role


class MemberNotFound(UsagemeterError, LookupError):
    """The user is not a member of the tenant, as far as the caller can see; nothing was removed."""


class UserNotFound(UsagemeterError, LookupError):
    """No user in auth.users has the id given; nothing was written. `user_id` is that id."""

    def __init__(self, message: str, *, user_id: object = None) -> None:
        super().__init__(message)
        self.user_id = user_id


class InvalidUser(UsagemeterError, ValueError):
    """A user was asked for with a bad email; nothing was written. `field` names it."""

    def __init__(self, message: str, *, field: str = "email") -> None:
        super().__init__(message)
        self.field = field


class UserExists(UsagemeterError):
    """A user with this id or email already exists in auth.users; nothing was written."""


class UsersManagedElsewhere(UsagemeterError):
    """auth.users is not usagemeter's shim (a real Supabase database): users are created through Supabase Auth."""


class DemoRefused(UsagemeterError):
    """The demo data set loads only into a database with no usage and no tenants, or one it was loaded into."""


class RetentionError(UsagemeterError):
    """Retention stopped before dropping anything more: an archive that failed or does not match, a month
    that changed, rows left in the default partition. What was dropped before stays dropped; a rerun goes on."""


class DistributeError(UsagemeterError):
    """`usagemeter db distribute` refused: the database is not on a Citus coordinator with workers, is not
    migrated, or is distributed already. Nothing was changed."""
