"""`usagemeter statement`: a month's statement for a tenant or a Personal user, and closing it."""

from __future__ import annotations

import sys
import uuid
from typing import Annotated, Literal

import typer
from rich.table import Table

from usagemeter import db
from usagemeter.billing import statements
from usagemeter.cli.common import DatabaseUrlOption, app_database, fail, out, reported_errors

statement_app = typer.Typer(help="Monthly statements: lines by action and model, and their total.")

TenantOption = Annotated[uuid.UUID | None, typer.Option("--tenant", help="The tenant's statement")]
PersonalOption = Annotated[uuid.UUID | None, typer.Option("--personal-user", help="A Personal user's statement")]
MonthOption = Annotated[str | None, typer.Option("--month", help="YYYY-MM")]
ZoneOption = Annotated[str, typer.Option("--tz", help="IANA time zone of the month's bounds")]


def _scope(tenant: uuid.UUID | None, personal_user: uuid.UUID | None, month: str | None) -> str:
    if (tenant is None) == (personal_user is None):
        fail("give --tenant T or --personal-user U", code=2)
    if month is None:
        fail("give --month YYYY-MM", code=2)
    return month


def _print(statement: statements.Statement, output: str) -> None:
    if output == "json":
        sys.stdout.write(statement.to_json())
    elif output == "csv":
        sys.stdout.write(statement.to_csv())
    else:
        who = f"tenant {statement.tenant_id}" if statement.tenant_id else f"user {statement.user_id}"
        state = "final" if statement.final else "open"
        title = f"{who}, {statement.start:%Y-%m} ({statement.time_zone}), {state}"
        table = Table("action", "model", "events", "tokens_input", "tokens_output",
                      f"amount ({statement.currency or '-'})", title=title, title_justify="left")  # fmt: skip
        for line in statement.lines:
            record = line.as_json()
            table.add_row(record["action"], record["model"] or "", f"{line.events:,}", f"{line.tokens_input:,}",
                          f"{line.tokens_output:,}", record["amount"])  # fmt: skip
        table.add_section()
        table.add_row("total", "", "", "", "", statement.as_json()["total"])
        out.print(table)


@statement_app.callback(invoke_without_command=True)
def statement_command(
    ctx: typer.Context,
    tenant: TenantOption = None,
    personal_user: PersonalOption = None,
    month: MonthOption = None,
    tz: ZoneOption = "UTC",
    output: Annotated[Literal["table", "csv", "json"], typer.Option("--format", help="table, csv or json")] = "table",
    database_url: DatabaseUrlOption = None,
) -> None:
    """Print a month's statement (the stored one once closed); `statement close` makes it final."""
    if ctx.invoked_subcommand is not None:
        return
    chosen_month = _scope(tenant, personal_user, month)
    with reported_errors(), app_database(database_url) as url, db.connect(url, autocommit=True) as conn:
        found = statements.statement(conn, db.Identity.service(), tenant_id=tenant, personal_user_id=personal_user,
                                     month=chosen_month, tz=tz)  # fmt: skip
    _print(found, output)


@statement_app.command("close")
def close_command(
    tenant: TenantOption = None,
    personal_user: PersonalOption = None,
    month: MonthOption = None,
    tz: ZoneOption = "UTC",
    database_url: DatabaseUrlOption = None,
) -> None:
    """Make a past month's statement final and print it as JSON; later entries dated in it go to the next open month."""
    chosen_month = _scope(tenant, personal_user, month)
    with reported_errors(), app_database(database_url) as url, db.connect(url, autocommit=True) as conn:
        closed = statements.close_statement(conn, tenant_id=tenant, personal_user_id=personal_user,
                                            month=chosen_month, tz=tz)  # fmt: skip
    sys.stdout.write(closed.to_json())
