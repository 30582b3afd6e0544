"""The `usagemeter` command line (typer + rich): one module per group of commands."""

from __future__ import annotations

import typer

from usagemeter.cli import (
    budgets,
    common,
    corrections,
    database,
    maintenance,
    prices,
    recording,
    reporting,
    server,
    statements,
    tenants,
)

app = typer.Typer(help="Record and report AI usage per tenant on PostgreSQL, isolated by RLS.", no_args_is_help=True)


@app.callback()
def _command_line() -> None:
    """Record and report AI usage per tenant on PostgreSQL, isolated by RLS."""
    common.command_line.set(True)  # what runs next is a command, not library use


app.add_typer(database.db_app, name="db")
app.add_typer(prices.prices_app, name="prices")
app.command("gen-types")(database.gen_types)
app.command("record")(recording.record)
app.command("report")(reporting.report)
app.command("export")(reporting.export)
app.command("rollup")(reporting.rollup_command)
app.add_typer(budgets.budget_app, name="budget")
app.command("void")(corrections.void_command)
app.command("amend")(corrections.amend_command)
app.add_typer(statements.statement_app, name="statement")
app.command("serve")(server.serve)
app.command("token")(server.token)
app.add_typer(tenants.tenant_app, name="tenant")
app.add_typer(tenants.user_app, name="user")
app.command("maintain")(maintenance.maintain)
app.command("retention")(maintenance.retention)

__all__ = ["app"]
