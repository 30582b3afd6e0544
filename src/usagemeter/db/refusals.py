"""What a database failure means for a write: the one place that maps SQLSTATEs to project errors.

Three answers, and every failure gets one:
- transient (the connection, the server restarting, a serialization failure or deadlock, a
  read-only standby): try the whole write again on a new connection (retry.py);
- a refusal of one event (row-level security, a constraint, a trigger's `raise exception`,
  and any SQLSTATE not listed here): the event fails alone with a project error;
- after the last attempt, transient becomes DatabaseUnavailable (DatabaseReadOnly if read-only).

To give a new refusal its own error (a budget's custom SQLSTATE, say), `register` a factory for
its SQLSTATE or two-character class.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import psycopg
from psycopg import errors as pgerrors

from usagemeter import errors

# Connection and server failures: another attempt on a new connection may well succeed.
TRANSIENT_CLASSES = frozenset({"08", "53", "58"})  # connection exception, insufficient resources, system error
TRANSIENT_SQLSTATES = frozenset(
    {
        "40001",  # serialization_failure
        "40P01",  # deadlock_detected
        "55P03",  # lock_not_available
        "57P01",  # admin_shutdown
        "57P02",  # crash_shutdown
        "57P03",  # cannot_connect_now
        "57P05",  # idle_session_timeout
    }
)
READ_ONLY = "25006"  # read_only_sql_transaction: a standby after a failover, or a database set read-only

# Failures of the database as a whole rather than of one event: a table, column, function, schema
# or database that is missing (not migrated yet, or dropped), or an internal error. A writer that
# can wait (the enqueue flusher, an import) keeps such events for later instead of rejecting them.
DATABASE_WIDE_SQLSTATES = frozenset({"42P01", "42703", "42883", "3F000", "3D000"})
DATABASE_WIDE_CLASSES = frozenset(
    {"XX"}
)  # read_only_sql_transaction: a standby after a failover, or a database set read-only

Refuser = Callable[[psycopg.Error, int], errors.UsagemeterError]

_FK_MEANING = {
    "usage_events_tenant_id_fkey": "unknown tenant_id (no such tenant)",
    "usage_events_user_id_fkey": "unknown user_id (no such user in auth.users)",
}


def describe(failure: psycopg.Error) -> str:
    """A refusal in words a caller can act on."""
    diag = failure.diag
    if isinstance(failure, pgerrors.InsufficientPrivilege) and "row-level security" in (diag.message_primary or ""):
        return (
            "not allowed by row-level security: a user records only as themselves (user_id = their id),"
            " either personal (no tenant_id) or into a tenant they are a member of"
        )
    if isinstance(failure, pgerrors.ForeignKeyViolation) and diag.constraint_name in _FK_MEANING:
        return _FK_MEANING[diag.constraint_name]
    if diag.constraint_name:
        return f"{diag.constraint_name}: {diag.message_primary}"
    return diag.message_primary or str(failure).strip()


def _rejected(failure: psycopg.Error, index: int) -> errors.UsagemeterError:
    return errors.EventRejected(f"event {index}: {describe(failure)}", index=index, sqlstate=failure.sqlstate)


def _raised(failure: psycopg.Error, index: int) -> errors.UsagemeterError:
    """A trigger's or function's `raise exception`: the database's own message, hint and detail."""
    diag = failure.diag
    return errors.WriteRefused(
        f"event {index}: {describe(failure)}",
        index=index,
        sqlstate=failure.sqlstate,
        hint=diag.message_hint,
        detail=diag.message_detail,
    )


QUOTA_EXCEEDED = "UMQ01"  # a hard budget (usagemeter_private.count_usage_against_budgets_v1)
UNPRICED_USAGE = "UMQ02"  # a cost budget meets tokens without a price


def _quota_exceeded(failure: psycopg.Error, index: int) -> errors.UsagemeterError:
    """A hard budget's refusal: the budget, used, requested, limit and window travel as JSON in DETAIL."""
    diag = failure.diag
    try:
        budget = json.loads(diag.message_detail or "")
        return errors.QuotaExceeded(
            f"event {index}: {describe(failure)}", budget=budget, index=index, sqlstate=failure.sqlstate,
            hint=diag.message_hint, detail=diag.message_detail,
        )  # fmt: skip
    except (ValueError, KeyError, TypeError):
        return _raised(failure, index)  # a detail we cannot read still refuses, in the database's words


def _unpriced(failure: psycopg.Error, index: int) -> errors.UsagemeterError:
    diag = failure.diag
    return errors.UnpricedUsage(
        f"event {index}: {describe(failure)}", index=index, sqlstate=failure.sqlstate, hint=diag.message_hint
    )


# Refusals by SQLSTATE (five characters) or class (two); anything else non-transient is _rejected.
_REFUSERS: dict[str, Refuser] = {"P0001": _raised, QUOTA_EXCEEDED: _quota_exceeded, UNPRICED_USAGE: _unpriced}


def is_batch_wide(refused: errors.UsagemeterError) -> bool:
    """Whether a refusal is about a whole statement (a budget counts the batch together), not one of its events."""
    return isinstance(refused, errors.QuotaExceeded)


def register(code: str, refuser: Refuser) -> None:
    """Map a SQLSTATE (five characters) or a class of them (two) to the project error a refusal raises."""
    if len(code) not in (2, 5):
        raise ValueError(f"expected a SQLSTATE (5 characters) or its class (2), got {code!r}")
    _REFUSERS[code] = refuser


def is_read_only(failure: BaseException) -> bool:
    return isinstance(failure, psycopg.Error) and failure.sqlstate == READ_ONLY


def is_transient(failure: BaseException) -> bool:
    """Whether the whole write is worth another attempt on a new connection (see the module docstring)."""
    if isinstance(failure, psycopg.InterfaceError):
        return True  # the connection is closed or broken
    if not isinstance(failure, psycopg.Error) or isinstance(failure, pgerrors.PipelineAborted):
        return False  # PipelineAborted follows an earlier error in the same pipeline, which decides
    state = failure.sqlstate
    if state is None:
        return isinstance(failure, psycopg.OperationalError)  # lost connection, pool timeout: nothing from the server
    return state in TRANSIENT_SQLSTATES or state[:2] in TRANSIENT_CLASSES or state == READ_ONLY


def is_database_wide(failure: BaseException) -> bool:
    """Whether a failure says nothing about the event: the database cannot take writes now (transient or above)."""
    if isinstance(failure, errors.DatabaseUnavailable) or is_transient(failure):
        return True
    state = getattr(failure, "sqlstate", None)
    return isinstance(state, str) and (state in DATABASE_WIDE_SQLSTATES or state[:2] in DATABASE_WIDE_CLASSES)


def refusal(failure: BaseException, *, index: int) -> errors.UsagemeterError:
    """The project error for a non-transient failure of the event at `index`; never raises."""
    if isinstance(failure, errors.UsagemeterError):
        return failure
    if isinstance(failure, psycopg.Error):
        state = failure.sqlstate or ""
        refuser = _REFUSERS.get(state) or _REFUSERS.get(state[:2]) or _rejected
        return refuser(failure, index)
    return errors.EventRejected(
        f"event {index}: could not be written ({type(failure).__name__}: {failure})", index=index
    )


def unavailable(failure: BaseException, *, attempts: int) -> errors.DatabaseUnavailable:
    """What a transient failure becomes once retries are exhausted, naming the cause."""
    cause = str(failure).strip() or type(failure).__name__
    if is_read_only(failure):
        return errors.DatabaseReadOnly(
            f"the database is read-only (a standby after a failover?) and took no write after {attempts}"
            f" attempts: {cause}"
        )
    return errors.DatabaseUnavailable(f"the database did not answer after {attempts} attempts: {cause}")
