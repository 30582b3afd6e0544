"""Price files and PriceRow: each bad input is refused naming its row and column, before any database."""

from __future__ import annotations

import csv
import io
import json
import uuid
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from usagemeter import errors
from usagemeter.billing import price_files, prices

HEADER = ",".join(prices.REQUIRED_COLUMNS)
FULL_HEADER = ",".join(prices.COLUMNS)
TOKEN_ROW = "gpt-4o,,,USD,2.50,10.00,,2025-06-10"
ACTION_ROW = ",agency:scope:generate,,USD,,,0.50,2025-06-10"


def parse(*lines: str, header: str = HEADER) -> list[prices.PriceRow]:
    return price_files.parse_price_text("\n".join((header, *lines)) + "\n", price_format="csv", where="p.csv: ")


def refusal(*lines: str, header: str = HEADER) -> errors.InvalidPrice:
    with pytest.raises(errors.InvalidPrice) as caught:
        parse(*lines, header=header)
    return caught.value


def test_a_token_price_and_an_action_price() -> None:
    token, action = parse(TOKEN_ROW, ACTION_ROW)
    assert token.model == "gpt-4o"
    assert token.action is None
    assert token.input_per_million == Decimal("2.50")
    assert token.output_per_million == Decimal("10.00")
    assert token.cached_input_per_million is None
    assert token.effective_from == datetime(2025, 6, 10, tzinfo=UTC)  # a date alone is midnight UTC
    assert action.model is None
    assert action.per_event == Decimal("0.50")


def test_the_cache_columns_are_optional_and_may_come_in_any_order() -> None:
    (price,) = parse("gpt-4o,,,USD,2.50,10.00,,2025-06-10,1.25,3", header=FULL_HEADER)
    assert (price.cached_input_per_million, price.cache_write_per_million) == (Decimal("1.25"), Decimal(3))
    shuffled = "cache_write_per_million," + ",".join(reversed(prices.REQUIRED_COLUMNS))
    (same,) = parse("3,2025-06-10,,10.00,2.50,USD,,,gpt-4o", header=shuffled)
    assert same.cache_write_per_million == Decimal(3)
    assert same.model == "gpt-4o"


def test_an_action_price_narrowed_to_a_model_and_a_tenant_price() -> None:
    tenant = uuid.uuid4()
    (price,) = parse(f"gpt-4o,agency:scope:generate,{tenant},USD,,,0.25,2025-06-10T09:30:00+02:00")
    assert (price.model, price.action, price.tenant_id) == ("gpt-4o", "agency:scope:generate", tenant)
    assert price.effective_from == datetime(2025, 6, 10, 7, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("line", "field", "message"),
    [
        ("gpt-4o,,,USD,-2.50,10,,2025-06-10", "input_per_million", "must be 0 or more"),
        ("gpt-4o,,,USD,2.50,10,,2025-06-10,-1", "cached_input_per_million", "must be 0 or more"),
        (",agency:scope:generate,,USD,,,-0.01,2025-06-10", "per_event", "must be 0 or more"),
        ("gpt-4o,,,usd,2.50,10,,2025-06-10", "currency", "ISO 4217 code of three capital letters"),
        ("gpt-4o,,,US,2.50,10,,2025-06-10", "currency", "got 'US'"),
        ("gpt-4o,,,EURO,2.50,10,,2025-06-10", "currency", "ISO 4217"),
        ("gpt-4o,,,,2.50,10,,2025-06-10", "currency", "needs a currency, an ISO 4217 code such as USD"),
        ("gpt-4o,,,USD,2.50,,,2025-06-10", "output_per_million", "needs the price of a million output tokens"),
        ("gpt-4o,,,USD,,10,,2025-06-10", "input_per_million", "needs the price of a million input tokens"),
        ("gpt-4o,agency:scope:generate,,USD,2.50,,0.5,2025-06-10", "input_per_million", "prices events, not tokens"),
        ("gpt-4o,agency:scope:generate,,USD,,,0.5,2025-06-10,1", "cached_input_per_million", "not tokens"),
        ("gpt-4o,,,USD,2.50,10,0.5,2025-06-10", "per_event", "a token price (no action) has no per_event"),
        (",agency:scope:generate,,USD,,,,2025-06-10", "per_event", "an action price needs per_event"),
        (",,,USD,2.50,10,,2025-06-10", "action", "needs a model (a token price) or an action"),
        (",Agency:Scope,,USD,,,1,2025-06-10", "action", "expected <module>:<domain>:<verb>"),
        ("gpt-4o,,nope,USD,2.50,10,,2025-06-10", "tenant_id", "UUID"),
        ("gpt-4o,,,USD,2.50,10,,June 10", "effective_from", "expected an ISO 8601 date"),
        ("gpt-4o,,,USD,2.50,10,,2025-06-31", "effective_from", "expected an ISO 8601 date"),
        ("gpt-4o,,,USD,2.50,10,,2025-06-10T09:00:00", "effective_from", "needs a time zone"),
        ("gpt-4o,,,USD,2.50,10,,", "effective_from", "needs the date (2025-06-10) or date-time with a zone"),
        ("gpt-4o,,,USD,abc,10,,2025-06-10", "input_per_million", "expected a decimal number such as 2.50"),
        ('gpt-4o,,,USD,"2,50",10,,2025-06-10', "input_per_million", "got '2,50'"),
        ("gpt-4o,,,USD,$2.50,10,,2025-06-10", "input_per_million", "expected a decimal number"),
        ("gpt-4o,,,USD,NaN,10,,2025-06-10", "input_per_million", "must be a finite number"),
        ("gpt-4o,,,USD,0.0000001,10,,2025-06-10", "input_per_million", "more than 6 decimal places"),
        ("gpt-4o,,,USD,100000000000000,10,,2025-06-10", "input_per_million", "must be less than"),
        ("gpt-4o,,,USD,1e400,10,,2025-06-10", "input_per_million", "must be less than"),
        ("x" * 201 + ",,,USD,2.50,10,,2025-06-10", "model", "1 to 200 characters"),
        ('"gpt\t4o",,,USD,2.50,10,,2025-06-10', "model", "must not contain control characters"),
    ],
)
def test_a_bad_row_names_its_row_line_and_field(line: str, field: str, message: str) -> None:
    (cells,) = csv.reader([line])
    line += "," * (len(prices.COLUMNS) - len(cells))  # the cache columns, empty where the case leaves them out
    failure = refusal(TOKEN_ROW + ",,", "", line, header=FULL_HEADER)  # the blank line is no row, but it is a line
    assert (failure.row, failure.field) == (2, field)
    assert str(failure).startswith(f"p.csv: row 2 (line 4): {field}: ")
    assert message in str(failure)


def test_the_first_rule_a_row_breaks_is_named() -> None:
    failure = refusal("gpt-4o,,,usd,-1,,,soon")
    assert failure.field == "currency"


def test_a_row_with_the_wrong_number_of_cells() -> None:
    failure = refusal(TOKEN_ROW, "gpt-4o,,,USD,2.50")
    assert failure.row == 2
    assert "p.csv: row 2 (line 3): has 5 cells, the header has 8" in str(failure)


@pytest.mark.parametrize(
    ("second", "field", "message"),
    [
        (TOKEN_ROW, "effective_from", "two prices for the same model, action, tenant and currency"),
        ("gpt-4o,,,USD,3,12,,2025-06-10T02:00:00+02:00", "effective_from", "(rows 1 and 2: model gpt-4o"),
        ("gpt-4o,,,EUR,2.50,10,,2025-06-11", "currency", "row 1 is in USD, this row in EUR"),
    ],
)
def test_a_file_refuses_a_duplicate_and_a_second_currency(second: str, field: str, message: str) -> None:
    failure = refusal(TOKEN_ROW, second)
    assert (failure.row, failure.field) == (2, field)
    assert str(failure).startswith(f"p.csv: row 2: {field}: ")
    assert message in str(failure)


def test_prices_that_differ_in_a_key_column_are_not_duplicates() -> None:
    tenant = uuid.uuid4()
    rows = parse(
        TOKEN_ROW, f"gpt-4o,,{tenant},USD,2,8,,2025-06-10", "gpt-4o,,,USD,3,12,,2025-06-11",
        ACTION_ROW, "gpt-4o,agency:scope:generate,,USD,,,0.75,2025-06-10",
    )  # fmt: skip
    assert len(rows) == 5


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty: expected a header line model,action,tenant_id"),
        (HEADER + "\n", "holds no prices"),
        (HEADER + ",surcharge\n", "header: unknown column 'surcharge'"),
        (HEADER.replace(",per_event", "") + "\n", "header: missing column 'per_event'"),
        (HEADER + ",currency\n", "header: column 'currency' appears twice"),
        (HEADER + '\n"gpt-4o,,\n', "not valid CSV"),
    ],
)
def test_a_bad_csv_file_as_a_whole(text: str, message: str) -> None:
    with pytest.raises(errors.InvalidPrice, match=r"^p\.csv: ") as caught:
        price_files.parse_price_text(text, price_format="csv", where="p.csv: ")
    assert caught.value.row is None
    assert message in str(caught.value)


def json_prices(value: object) -> list[prices.PriceRow]:
    return price_files.parse_price_text(json.dumps(value), price_format="json", where="p.json: ")


def test_json_numbers_are_read_as_exact_decimals_and_missing_keys_do_not_apply() -> None:
    text = '[{"model": "gpt-4o-mini", "currency": "USD", "input_per_million": 0.15, "output_per_million": 0.6,'
    text += ' "cached_input_per_million": 0.075, "effective_from": "2025-04-14"}]'
    (price,) = price_files.parse_price_text(text, price_format="json")
    assert price.input_per_million == Decimal("0.15")  # not 0.1499999999999999944488848768742172978818416595458984375
    assert price.cached_input_per_million == Decimal("0.075")
    assert price.per_event is None


@pytest.mark.parametrize(
    ("value", "row", "field", "message"),
    [
        ({"model": "m"}, None, None, "expected a JSON list of price objects, got dict"),
        (["gpt-4o"], 1, None, "row 1: expected an object with the keys model, action"),
        ([{"model": "m", "currency": "USD", "input_per_million": True, "output_per_million": 1,
           "effective_from": "2025-06-10"}], 1, "input_per_million", "expected a decimal number such as 2.50, got"),
        ([{"model": "m", "currency": "USD", "input_per_million": 1, "output_per_million": 1,
           "effective_from": "2025-06-10", "discount": "5%"}], 1, "discount", "Extra inputs are not permitted"),
        ([{"model": 4, "currency": "USD", "input_per_million": 1, "output_per_million": 1,
           "effective_from": "2025-06-10"}], 1, "model", "valid string"),
        ([{"model": "m", "currency": "USD", "input_per_million": 1, "output_per_million": 1}], 1, "effective_from",
         "Field required"),
        ([{"model": "m", "currency": "USD", "input_per_million": 1, "output_per_million": 1,
           "effective_from": 20250610}], 1, "effective_from", "ISO 8601 date or date-time as text, got int"),
    ],
)  # fmt: skip
def test_a_bad_json_file_names_the_row_and_key(value: object, row: int | None, field: str | None, message: str) -> None:
    with pytest.raises(errors.InvalidPrice, match=r"^p\.json: ") as caught:
        json_prices(value)
    assert (caught.value.row, caught.value.field) == (row, field)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[{"model": "m",}]', "not valid JSON: Expecting property name"),
        ('[{"input_per_million": NaN}]', "JSON has no NaN or Infinity"),
        ("[]", "holds no prices"),
    ],
)
def test_json_that_is_no_price_list(text: str, message: str) -> None:
    with pytest.raises(errors.InvalidPrice, match=r"^p\.json: ") as caught:
        price_files.parse_price_text(text, price_format="json", where="p.json: ")
    assert message in str(caught.value)


def test_python_callers_give_money_exactly_never_as_a_float() -> None:
    fields: dict[str, Any] = {"model": "m", "currency": "USD", "input_per_million": 0.1, "output_per_million": 1,
                              "effective_from": datetime(2025, 6, 10, tzinfo=UTC)}  # fmt: skip
    with pytest.raises(errors.InvalidPrice, match=r"row 1: input_per_million: floats are inexact") as caught:
        prices.price_row(fields, row=1)
    assert caught.value.field == "input_per_million"
    assert prices.price_row({**fields, "input_per_million": Decimal("0.1")}, row=1).input_per_million == Decimal("0.1")
    with pytest.raises(errors.InvalidPrice, match="model: must not start or end with white space"):
        prices.price_row({**fields, "input_per_million": "0.1", "model": "gpt-4o "}, row=1)
    naive = {**fields, "input_per_million": "0.1", "effective_from": datetime(2025, 6, 10)}
    with pytest.raises(errors.InvalidPrice, match="effective_from: needs a time zone"):
        prices.price_row(naive, row=1)


@pytest.mark.parametrize("ending", ["\n", "\r\n", "\r"])
def test_any_line_ending_and_quoted_cells_spanning_lines(ending: str) -> None:
    text = ending.join((HEADER, TOKEN_ROW, ',"agency:scope:generate",,USD,,,"0.50",2025-06-10', ""))
    assert [p.per_event for p in price_files.parse_csv(text)] == [None, Decimal("0.50")]
    with pytest.raises(errors.InvalidPrice, match=r"row 1 \(line 3\): model: must not contain control characters"):
        price_files.parse_csv(ending.join((HEADER, '"gpt' + ending + '4o",,,USD,1,1,,2025-06-10', "")))


def test_minus_zero_is_zero() -> None:
    (price,) = parse("gpt-4o,,,USD,-0,-0.00,,2025-06-10")
    assert prices.price_record(price)["input_per_million"] == "0"
    assert prices.price_record(price)["output_per_million"] == "0"


def test_the_format_follows_the_extension_then_the_content(tmp_path: Path) -> None:
    csv_text = f"{HEADER}\n{TOKEN_ROW}\n"
    json_text = json.dumps([{"model": "gpt-4o", "currency": "USD", "input_per_million": "2.50",
                             "output_per_million": "10", "effective_from": "2025-06-10"}])  # fmt: skip
    for name, text in (("p.csv", csv_text), ("p.JSON", json_text), ("prices", csv_text), ("prices.txt", json_text)):
        (tmp_path / name).write_text(text, encoding="utf-8")
        (price,) = price_files.read_price_file(tmp_path / name)
        assert price.model == "gpt-4o"
    (tmp_path / "bom.csv").write_bytes(b"\xef\xbb\xbf" + csv_text.encode())  # as spreadsheets save CSV
    assert len(price_files.read_price_file(tmp_path / "bom.csv")) == 1


def test_a_file_that_cannot_be_read(tmp_path: Path) -> None:
    with pytest.raises(errors.InvalidPrice, match=r"missing\.csv: cannot read the file: No such file"):
        price_files.read_price_file(tmp_path / "missing.csv")
    (tmp_path / "latin1.csv").write_bytes(f"{HEADER}\nmod\xe8le,,,USD,1,1,,2025-06-10\n".encode("latin-1"))
    with pytest.raises(errors.InvalidPrice, match=r"latin1\.csv: not UTF-8 text"):
        price_files.read_price_file(tmp_path / "latin1.csv")


# Property tests: any valid price list survives a trip through both file formats unchanged, and a
# negative amount in any money column of any row is named by that row and column.

money = st.decimals(min_value=0, max_value=Decimal("99999999999999.999999"), places=6, allow_nan=False)
zones = st.sampled_from([UTC, timezone(timedelta(hours=2)), timezone(timedelta(hours=-9, minutes=-30))])
moments = st.builds(
    lambda when, zone: when.replace(tzinfo=UTC).astimezone(zone),
    st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2100, 1, 1)),
    zones,
)
names = st.text(st.characters(codec="utf-8", exclude_categories=["Cc"]), min_size=1, max_size=30).filter(
    lambda name: name == name.strip()
)
segments = st.text("abcxyz019_-", min_size=1, max_size=6)
actions = st.tuples(segments, segments, segments).map(":".join)
tenants = st.one_of(st.none(), st.uuids(version=4))


@st.composite
def price_lists(draw: st.DrawFn) -> list[prices.PriceRow]:
    currency = draw(st.sampled_from(["USD", "EUR", "JPY"]))
    rows: dict[tuple[Any, ...], prices.PriceRow] = {}
    for _ in range(draw(st.integers(1, 6))):
        common = {"tenant_id": draw(tenants), "currency": currency, "effective_from": draw(moments)}
        if draw(st.booleans()):
            fields = {"model": draw(names), "input_per_million": draw(money), "output_per_million": draw(money),
                      "cached_input_per_million": draw(st.none() | money),
                      "cache_write_per_million": draw(st.none() | money)}  # fmt: skip
        else:
            fields = {"model": draw(st.none() | names), "action": draw(actions), "per_event": draw(money)}
        price = prices.PriceRow.model_validate({**common, **fields})
        rows.setdefault(price.key, price)
    return list(rows.values())


def as_csv(rows: list[prices.PriceRow]) -> str:
    """RFC 4180 CSV (CRLF lines, so a cell holding a CR or LF is quoted, as spreadsheets write it)."""
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=prices.COLUMNS, lineterminator="\r\n")
    writer.writeheader()
    writer.writerows(prices.price_record(row) for row in rows)
    return buffer.getvalue()


@given(price_lists())
def test_a_price_list_survives_csv_and_json_unchanged(rows: list[prices.PriceRow]) -> None:
    assert price_files.parse_price_text(as_csv(rows), price_format="csv") == rows
    as_json = json.dumps([prices.price_record(row) for row in rows])
    assert price_files.parse_price_text(as_json, price_format="json") == rows


@given(price_lists(), st.data())
def test_a_negative_amount_anywhere_is_named_by_row_and_column(
    rows: list[prices.PriceRow], data: st.DataObject
) -> None:
    records = [prices.price_record(row) for row in rows]
    number = data.draw(st.integers(1, len(rows)))
    amounts = [column for column in prices.COLUMNS if column.endswith("million") or column == "per_event"]
    column = data.draw(st.sampled_from([c for c in amounts if records[number - 1][c] is not None]))
    records[number - 1][column] = str(-data.draw(money.filter(bool)))
    with pytest.raises(errors.InvalidPrice) as caught:
        price_files.parse_price_text(json.dumps(records), price_format="json", where="p.json: ")
    assert (caught.value.row, caught.value.field) == (number, column)
    assert str(caught.value).startswith(f"p.json: row {number}: {column}: must be 0 or more")


def test_the_starter_prices_parse_and_name_the_common_models() -> None:
    rows = price_files.starter_prices()
    models = {row.model for row in rows}
    assert {
        "gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-4.1-mini", "o3", "o4-mini", "claude-sonnet-4-20250514",
        "claude-opus-4-20250514", "claude-3-5-haiku-20241022", "gemini-2.5-pro", "gemini-2.5-flash",
    } <= models  # fmt: skip
    assert {row.currency for row in rows} == {"USD"}
    assert all(row.action is None and row.tenant_id is None for row in rows)
    assert all(row.effective_from.year == 2025 for row in rows)
    assert all(row.cached_input_per_million is not None for row in rows)  # every provider publishes one
    assert all(row.cache_write_per_million is not None for row in rows if row.model and "claude" in row.model)


def test_the_docs_name_the_source_and_date_of_every_starter_price(repo_root: Path) -> None:
    docs = (repo_root / "docs" / "billing.md").read_text(encoding="utf-8")
    for row in price_files.starter_prices():
        assert f"`{row.model}`" in docs, f"docs/billing.md does not name {row.model}"
        assert row.effective_from.date().isoformat() in docs
