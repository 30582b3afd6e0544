"""`usagemeter void` and `amend`: correcting an event as the service role, as a new entry of the ledger."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Annotated, Any, NoReturn

import psycopg
import typer

from usagemeter import db, errors
from usagemeter.billing import corrections
from usagemeter.cli.common import DatabaseUrlOption, database, fail, reported_errors

# The flag of each checked field, so an error names what the user typed.
FLAGS = {"reason": "--reason", "tokens_input": "--tokens-in", "tokens_output": "--tokens-out"}

EventIdArgument = Annotated[
    uuid.UUID, typer.Argument(help="Id of the event to correct", metavar="EVENT_ID", show_default=False)
]
ReasonOption = Annotated[
    str, typer.Option("--reason", help="Why (kept with the entry for audit; 1 to 1000 characters)", show_default=False)
]


def _bad_parameter(failure: errors.InvalidCorrection) -> NoReturn:
    """Bad input is a usage error: one line naming the flag, exit 2, before any database is opened."""
    fail(f"{FLAGS.get(failure.field, failure.field)}{str(failure).removeprefix(failure.field)}", code=2)


def _checked(check: Callable[[], Any]) -> None:
    try:
        check()
    except errors.InvalidCorrection as failure:
        _bad_parameter(failure)


def _run(correct: Callable[[psycopg.Connection[Any]], corrections.Correction], database_url: str | None) -> None:
    """Correct as the service role on the admin login, and print the entry as one JSON object."""
    with reported_errors(), database(database_url) as url, db.connect(url) as conn:
        entry = correct(conn)
    print(json.dumps(entry.as_dict()))


def void_command(event_id: EventIdArgument, reason: ReasonOption, database_url: DatabaseUrlOption = None) -> None:
    """Void an event: a correction entry takes back its count, tokens and cost; the event stays for audit.

    Prints the entry as one JSON object. Exit 1 if the event is unknown, void or an entry; 2 on a usage error.
    """
    _checked(lambda: corrections.checked_reason(reason))
    _run(lambda conn: corrections.void(conn, event_id=event_id, reason=reason), database_url)


def amend_command(
    event_id: EventIdArgument,
    tokens_in: Annotated[int, typer.Option("--tokens-in", help="The event's corrected input tokens")],
    tokens_out: Annotated[int, typer.Option("--tokens-out", help="The event's corrected output tokens")],
    reason: ReasonOption,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Set an event's token counts (new totals, not increments): an entry carries the change, re-priced at its time.

    Prints the entry as one JSON object. Exit 1 if the event is unknown, void or an entry; 2 on a usage error.
    """
    _checked(lambda: corrections.checked_token_count(tokens_in, field="tokens_input"))
    _checked(lambda: corrections.checked_token_count(tokens_out, field="tokens_output"))
    _checked(lambda: corrections.checked_reason(reason))
    _run(
        lambda conn: corrections.amend(
            conn, event_id=event_id, tokens_input=tokens_in, tokens_output=tokens_out, reason=reason
        ),
        database_url,
    )
