"""`usagemeter prices load` and `prices list`: the price list, loaded by the service role, read under RLS."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from usagemeter import db, errors
from usagemeter.billing import price_files, prices
from usagemeter.cli.common import DatabaseUrlOption, app_database, database, fail, out, reported_errors

prices_app = typer.Typer(
    help="Prices: what tokens of a model and events of an action cost (the database rates every event).",
    no_args_is_help=True,
)

MONEY_COLUMNS = (
    ("input_per_million", "input /M"),
    ("cached_input_per_million", "cached /M"),
    ("cache_write_per_million", "cache write /M"),
    ("output_per_million", "output /M"),
    ("per_event", "per event"),
)


@prices_app.command("load")
def load(
    file: Annotated[Path | None, typer.Argument(help="CSV or JSON price file", show_default=False)] = None,
    starter: Annotated[
        bool, typer.Option("--starter", help="Load the starter prices shipped with usagemeter instead of a FILE")
    ] = False,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Load a price file (CSV or JSON) as the service role, in one transaction: every price or none."""
    if (file is None) == (not starter):
        fail("give a price FILE or --starter (one of them)", code=2)
    name = price_files.STARTER_FILE if file is None else str(file)
    try:
        rows = price_files.starter_prices() if file is None else price_files.read_price_file(file)
    except errors.InvalidPrice as failure:
        fail(f"{failure}; nothing was loaded")
    with reported_errors(), database(database_url) as url, db.connect(url, autocommit=True) as conn:
        try:
            loaded = prices.load_prices(conn, rows)
        except errors.PriceRefused as failure:
            fail(f"{name}: {failure}; nothing was loaded")
    out.print(f"loaded {loaded} price{'' if loaded == 1 else 's'} from {name}", highlight=False)


def _moment(text: str) -> datetime:
    """--at: `now`, an ISO date (midnight UTC) or a date-time with a zone; bad input exits 2."""
    if text.strip().lower() == "now":
        return datetime.now(UTC)
    try:
        return prices.parse_moment(text)
    except ValueError as failure:
        fail(f"--at: {failure}", code=2)


@prices_app.command("list")
def list_command(
    at: Annotated[
        str | None,
        typer.Option("--at", help="Only the prices in effect then: now, an ISO date (UTC) or date-time with zone"),
    ] = None,
    output: Annotated[str, typer.Option("--format", help="table or json")] = "table",
    tenant: Annotated[
        uuid.UUID | None, typer.Option("--tenant", help="Only the prices that apply to this tenant (general + own)")
    ] = None,
    as_user: Annotated[uuid.UUID | None, typer.Option("--as-user", help="Run as this user, under RLS")] = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """The price list, or with --at the prices in effect at a time (per model, action and tenant: the latest)."""
    if output not in ("table", "json"):
        fail(f"--format: expected table or json, got {output!r}", code=2)
    when = _moment(at) if at is not None else None
    identity = db.Identity.user(as_user) if as_user else db.Identity.service()
    with reported_errors(), app_database(database_url) as url, db.connect_app(url) as conn:
        rows = prices.list_prices(conn, identity, when, tenant_id=tenant)
    records = [prices.price_record(price) for price in rows]
    if output == "json":
        print(json.dumps(records, indent=2))
        return
    title = "Prices" + (f" in effect at {when.isoformat()}" if when else "")
    table = Table(title=title, title_justify="left")
    for heading in ("model", "action", "tenant", "currency"):
        table.add_column(heading)
    for _, heading in MONEY_COLUMNS:
        table.add_column(heading, justify="right")
    table.add_column("effective from")
    for record in records:
        table.add_row(
            record["model"] or "",
            record["action"] or "",
            record["tenant_id"] or "all",
            record["currency"],
            *(record[column] or "" for column, _ in MONEY_COLUMNS),
            record["effective_from"],
        )
    out.print(table)
    if not records:
        out.print("no prices" + (" in effect then" if when else ""))
