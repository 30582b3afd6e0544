"""Exception types that say what is wrong, so callers and the CLI can answer precisely."""

from __future__ import annotations

from typing import TYPE_CHECKING

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
