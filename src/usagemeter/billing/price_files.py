"""Price files: CSV or JSON lists of prices, read and checked whole before any of them is loaded.

CSV: a header naming the columns (prices.REQUIRED_COLUMNS, optionally prices.CACHE_COLUMNS), one
price per row, empty cells where a column does not apply. JSON: a list of objects with the same
keys (missing or null: does not apply). Rows count from 1, the header not being one; every error
names the file, the row and the column. Numbers are read as exact decimals, never floats.
"""

from __future__ import annotations

import csv
import io
import json
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any, Literal, NoReturn

from usagemeter import errors
from usagemeter.billing import prices

PriceFileFormat = Literal["csv", "json"]

STARTER_FILE = "starter_prices.csv"


def _invalid(where: str, message: str, *, row: int | None = None, field: str | None = None) -> NoReturn:
    raise errors.InvalidPrice(f"{where}{message}", row=row, field=field)


def _cell(value: object) -> object:
    """A cell as PriceRow takes it: text without surrounding white space, and an empty cell as absent."""
    if isinstance(value, str):
        value = value.strip()
        return value or None
    return value


def _header(cells: list[str], where: str) -> list[str]:
    names = [cell.strip() for cell in cells]
    expected = ",".join(prices.REQUIRED_COLUMNS)
    optional = ",".join(prices.CACHE_COLUMNS)
    unknown = [name for name in names if name not in prices.COLUMNS]
    missing = [name for name in prices.REQUIRED_COLUMNS if name not in names]
    twice = sorted({name for name in names if names.count(name) > 1})
    problem = (
        f"unknown column {unknown[0]!r}"
        if unknown
        else f"column {twice[0]!r} appears twice"
        if twice
        else f"missing column {missing[0]!r}"
        if missing
        else None
    )
    if problem:
        _invalid(where, f"header: {problem}: expected {expected}, optionally followed by {optional}")
    return names


def parse_csv(text: str, *, where: str = "") -> list[prices.PriceRow]:
    """The prices of a CSV price file's text; `where` prefixes messages (the file's name and a space)."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)  # any line ending; quoted cells keep theirs
    header: list[str] | None = None
    rows: list[prices.PriceRow] = []
    try:
        for cells in reader:
            if not any(cell.strip() for cell in cells):
                continue  # blank lines, and spreadsheets' rows of empty cells
            if header is None:
                header = _header(cells, where)
                continue
            number = len(rows) + 1
            at = f"{where}row {number} (line {reader.line_num}): "
            if len(cells) != len(header):
                _invalid(at, f"has {len(cells)} cells, the header has {len(header)}", row=number)
            fields = {name: _cell(cell) for name, cell in zip(header, cells, strict=True)}
            rows.append(prices.price_row(fields, row=number, where=where, line=reader.line_num))
    except csv.Error as failure:
        _invalid(where, f"line {reader.line_num}: not valid CSV: {failure}")
    if header is None:
        _invalid(where, f"empty: expected a header line {','.join(prices.REQUIRED_COLUMNS)}")
    return rows


def _no_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a number a price can be (JSON has no NaN or Infinity)")


def parse_json(text: str, *, where: str = "") -> list[prices.PriceRow]:
    """The prices of a JSON price file's text: a list of objects with the CSV's keys; numbers read as decimals."""
    try:
        document = json.loads(text, parse_float=Decimal, parse_constant=_no_constant)
    except json.JSONDecodeError as failure:
        _invalid(where, f"not valid JSON: {failure.msg} (line {failure.lineno}, column {failure.colno})")
    except (ValueError, RecursionError) as failure:
        _invalid(where, f"not valid JSON: {failure}")
    if not isinstance(document, list):
        _invalid(where, f"expected a JSON list of price objects, got {type(document).__name__}")
    rows: list[prices.PriceRow] = []
    for number, item in enumerate(document, start=1):
        if not isinstance(item, dict):
            _invalid(where, f"row {number}: expected an object with the keys {', '.join(prices.COLUMNS)}", row=number)
        fields: dict[str, Any] = {key: _cell(value) for key, value in item.items()}
        rows.append(prices.price_row(fields, row=number, where=where))
    return rows


def format_of(path: Path, text: str) -> PriceFileFormat:
    """CSV or JSON: by the extension (.csv, .json), else by the content (JSON starts with [ or {)."""
    suffix = path.suffix.lower()
    if suffix in (".csv", ".json"):
        return "csv" if suffix == ".csv" else "json"
    return "json" if text.lstrip()[:1] in ("[", "{") else "csv"


def parse_price_text(text: str, *, price_format: PriceFileFormat, where: str = "") -> list[prices.PriceRow]:
    """The prices of a price file's text, checked as a list (no key twice, one currency), non-empty."""
    rows = parse_csv(text, where=where) if price_format == "csv" else parse_json(text, where=where)
    if not rows:
        _invalid(where, "holds no prices")
    prices.check_price_list(rows, where=where)
    return rows


def read_price_file(path: str | Path) -> list[prices.PriceRow]:
    """The prices of a CSV or JSON price file, all valid, or InvalidPrice naming the file, row and column.

    Parameters
    ----------
    path:
        The file; its extension (.csv, .json) or else its content says which format it is.

    Returns
    -------
    The prices in file order (row N of errors is the Nth price).
    """
    path = Path(path)
    where = f"{path}: "
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as failure:
        _invalid(where, f"cannot read the file: {failure.strerror or failure}")
    except UnicodeDecodeError as failure:
        _invalid(where, f"not UTF-8 text (byte {failure.start})")
    return parse_price_text(text, price_format=format_of(path, text), where=where)


def starter_prices() -> list[prices.PriceRow]:
    """The starter price list shipped with usagemeter: published provider prices (sources in docs/billing.md)."""
    text = resources.files("usagemeter.billing").joinpath(STARTER_FILE).read_text(encoding="utf-8")
    return parse_price_text(text, price_format="csv", where=f"{STARTER_FILE}: ")
