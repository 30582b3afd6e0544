"""`usagemeter budget`: set, list, delete and check budgets, and read their alerts (as the service role)."""

from __future__ import annotations

import json
import uuid
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

import pydantic
import typer

from usagemeter import db, errors
from usagemeter.billing import budgets
from usagemeter.cli.common import DatabaseUrlOption, app_database, database, fail, out, reported_errors

budget_app = typer.Typer(help="Budgets the database enforces as usage is written.", no_args_is_help=True)


def _print_json(value: dict[str, Any]) -> None:
    """One JSON object per line on stdout (not rich: its wrapping would break a line)."""
    print(json.dumps(value), flush=True)


def _decimal(text: str, flag: str) -> Decimal:
    try:
        return Decimal(text)
    except InvalidOperation:
        fail(f"{flag}: expected a number, got {text!r}", code=2)


def _thresholds(text: str) -> tuple[Decimal, ...]:
    try:
        return budgets.thresholds_from_text(text)
    except InvalidOperation:
        fail(f"--thresholds: expected numbers separated by commas, got {text!r}", code=2)


def _one_scope(tenant: uuid.UUID | None, personal_user: uuid.UUID | None) -> None:
    if (tenant is None) == (personal_user is None):
        fail("give --tenant T (optionally with --user U) or --personal-user U", code=2)


@budget_app.command("set")
def set_command(
    metric: Annotated[str, typer.Option("--metric", help="events, tokens or cost")],
    limit: Annotated[str, typer.Option("--limit", help="The limit, in events, tokens or currency units")],
    window: Annotated[str, typer.Option("--window", help="day, week, month or total (prepaid credit)")],
    mode: Annotated[str, typer.Option("--mode", help="hard (refuse what would pass it) or soft (alert only)")],
    tenant: Annotated[uuid.UUID | None, typer.Option("--tenant", help="Tenant whose usage is limited")] = None,
    user: Annotated[uuid.UUID | None, typer.Option("--user", help="With --tenant: only this member")] = None,
    personal_user: Annotated[uuid.UUID | None, typer.Option("--personal-user", help="A Personal user")] = None,
    currency: Annotated[str | None, typer.Option("--currency", help="ISO 4217, for a cost budget")] = None,
    tz: Annotated[str, typer.Option("--tz", help="IANA time zone of the calendar window")] = "UTC",
    action: Annotated[str | None, typer.Option("--action", help="Only actions matching, e.g. agency:*")] = None,
    thresholds: Annotated[str, typer.Option("--thresholds", help="Alert at these fractions (or %)")] = "0.8,1",
    database_url: DatabaseUrlOption = None,
) -> None:
    """Set a budget; prints it as one JSON object with its id."""
    _one_scope(tenant, personal_user)
    if user is not None and tenant is None:
        fail("--user narrows a tenant budget: give --tenant too (or --personal-user for a Personal user)", code=2)
    try:
        spec = budgets.BudgetSpec(
            tenant_id=tenant, user_id=user if tenant else personal_user, metric=metric,  # type: ignore[arg-type]
            limit=_decimal(limit, "--limit"), currency=currency, period=window,  # type: ignore[arg-type]
            time_zone=tz, action_pattern=action, mode=mode,  # type: ignore[arg-type]
            thresholds=_thresholds(thresholds),
        )  # fmt: skip
    except pydantic.ValidationError as failure:
        field, message = errors.first_problem(failure)
        flag = {"period": "--window", "time_zone": "--tz", "action_pattern": "--action"}.get(field or "", field)
        fail(f"--{str(flag).removeprefix('--')}: {message}" if field else message, code=2)
    with reported_errors(), database(database_url) as url, db.connect(url, autocommit=True) as conn:
        status = budgets.set_budget(conn, spec)
    _print_json(status.as_json())


@budget_app.command("list")
def list_command(
    tenant: Annotated[uuid.UUID | None, typer.Option("--tenant", help="A tenant's budgets")] = None,
    personal_user: Annotated[uuid.UUID | None, typer.Option("--personal-user", help="A Personal user's")] = None,
    output: Annotated[str, typer.Option("--format", help="json (one object per line) or table")] = "json",
    database_url: DatabaseUrlOption = None,
) -> None:
    """Budgets with their current window: id, metric, limit, used, window_start, window_end, mode."""
    _one_scope(tenant, personal_user)
    with reported_errors(), database(database_url) as url, db.connect(url, autocommit=True) as conn:
        found = budgets.list_budgets(conn, db.Identity.service(), tenant_id=tenant, personal_user_id=personal_user)
    if output == "json":
        for status in found:
            _print_json(status.as_json())
        return
    from rich.table import Table

    table = Table("id", "metric", "limit", "used", "window", "from", "to", "mode", title="budgets")
    for status in found:
        record = status.as_json()
        table.add_row(record["id"], record["metric"], record["limit"], record["used"], record["window"],
                      record["window_start"] or "", record["window_end"] or "", record["mode"])  # fmt: skip
    out.print(table)


@budget_app.command("delete")
def delete_command(budget_id: uuid.UUID, database_url: DatabaseUrlOption = None) -> None:
    """Delete a budget (its counters and alerts too)."""
    with reported_errors(), database(database_url) as url, db.connect(url, autocommit=True) as conn:
        budgets.delete_budget(conn, budget_id)
    _print_json({"deleted": str(budget_id)})


@budget_app.command("check")
def check_command(
    action: Annotated[str, typer.Option("--action", help="The action the spend is for")],
    tenant: Annotated[uuid.UUID | None, typer.Option("--tenant", help="Tenant of the spend")] = None,
    user: Annotated[
        uuid.UUID | None, typer.Option("--user", help="User of the spend (Personal without --tenant)")
    ] = None,
    events: Annotated[int, typer.Option("--events", help="Events to spend")] = 1,
    tokens: Annotated[int, typer.Option("--tokens", help="Tokens to spend")] = 0,
    cost: Annotated[str, typer.Option("--cost", help="Cost to spend")] = "0",
    database_url: DatabaseUrlOption = None,
) -> None:
    """May this much be spent now? Prints {"allowed", "budgets"}; exit 1 when a hard budget would be passed."""
    if tenant is None and user is None:
        fail("give --tenant T and/or --user U", code=2)
    with reported_errors(), app_database(database_url) as url, db.connect(url, autocommit=True) as conn:
        answer = budgets.check_quota(conn, db.Identity.service(), tenant_id=tenant, user_id=user, action=action,
                                     events=events, tokens=tokens, cost=_decimal(cost, "--cost"))  # fmt: skip
    _print_json(answer.as_json())
    if not answer.allowed:
        raise typer.Exit(1)


@budget_app.command("alerts")
def alerts_command(
    after: Annotated[int, typer.Option("--after", help="Only alerts with a larger id")] = 0,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Threshold alerts after an id, oldest first, one JSON object per line."""
    with reported_errors(), database(database_url) as url, db.connect(url, autocommit=True) as conn:
        for alert in budgets.alerts_after(conn, db.Identity.service(), after_id=after):
            _print_json(alert)
