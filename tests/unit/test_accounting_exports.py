"""The accountant's files: RFC 4180 CSV that a spreadsheet can not run as formulas, a trial
balance whose debit and credit columns agree, and the books' own migration set."""

from __future__ import annotations

import csv
import io
import uuid
from datetime import UTC, date, datetime

import pytest

from accounting import exports
from accounting.store import BOOKS
from wallet_platform.schema import WALLET, available

pytestmark = pytest.mark.unit

DAY = date(2026, 12, 1)
AT = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)


def line(amount: int, **extra: object) -> dict[str, object]:
    row: dict[str, object] = {
        "day": DAY,
        "occurred_at": AT,
        "event_id": uuid.UUID(int=1),
        "entry_id": "e1",
        "fact_type": "entry.posted",
        "kind": "deposit",
        "reference": "r1",
        "account": "customer",
        "account_id": uuid.UUID(int=2),
        "customer_id": "ann",
        "balance_id": "usd",
        "currency": "USD",
        "amount": amount,
    }
    row.update(extra)
    return row


@pytest.mark.parametrize("text", ['=HYPERLINK("x")', "+1", "-2+3", "@SUM(A1)", "\tx", "\rx"])
def test_text_a_spreadsheet_would_evaluate_is_prefixed_with_an_apostrophe(text: str) -> None:
    assert exports.text_cell(text) == "'" + text


def test_plain_text_is_left_as_it_is() -> None:
    assert exports.text_cell("ann") == "ann"
    assert exports.text_cell(None) == ""


def test_lines_export_is_rfc_4180_with_the_amount_on_its_side() -> None:
    out = io.StringIO(newline="")
    rows = [line(1050), line(-1050, account="settlement", customer_id="=cmd|' /C calc'!A0")]
    assert exports.write_lines(out, rows) == 2
    text = out.getvalue()
    assert text.count("\r\n") == 3 and "\n" not in text.replace("\r\n", "")
    parsed = list(csv.DictReader(io.StringIO(text, newline="")))
    assert [(r["debit"], r["credit"]) for r in parsed] == [("", "10.50"), ("10.50", "")]
    assert parsed[1]["customer_id"] == "'=cmd|' /C calc'!A0"
    assert list(parsed[0]) == list(exports.LINE_COLUMNS)


def test_a_field_with_a_comma_or_a_quote_is_quoted_and_its_quotes_doubled() -> None:
    out = io.StringIO(newline="")
    exports.write_lines(out, [line(1, reference='a,"b"')])
    assert '"a,""b"""' in out.getvalue()


def test_daily_balances_carry_opening_and_closing_and_negative_balances_unprefixed() -> None:
    out = io.StringIO(newline="")
    row = {
        "day": DAY,
        "account": "settlement",
        "account_id": uuid.UUID(int=3),
        "customer_id": "",
        "balance_id": "",
        "currency": "USD",
        "debits": 2500,
        "credits": 500,
        "closing": -3000,
    }
    exports.write_daily_balances(out, [row])
    (parsed,) = csv.DictReader(io.StringIO(out.getvalue(), newline=""))
    assert (parsed["opening"], parsed["debits"], parsed["credits"], parsed["closing"]) == (
        "-10.00",
        "25.00",
        "5.00",
        "-30.00",
    )


def test_the_trial_balance_total_has_equal_debit_and_credit_balances() -> None:
    rows = exports.trial_balance_rows(
        [
            {
                "currency": "USD",
                "account": "customer",
                "debits": 100,
                "credits": 900,
                "balance": 800,
            },
            {
                "currency": "USD",
                "account": "settlement",
                "debits": 1000,
                "credits": 200,
                "balance": -800,
            },
        ]
    )
    assert rows[-1] == ("USD", "TOTAL", "11.00", "11.00", "8.00", "8.00")
    assert "TOTAL" in exports.format_trial_balance(rows)


def test_the_books_have_their_own_migrations_and_the_wallets_are_unchanged() -> None:
    books = available(BOOKS)
    assert [m.version for m in books] == list(range(1, len(books) + 1))
    assert all("accounting." in m.sql for m in books)
    assert not any("accounting." in m.sql for m in available(WALLET))
    assert WALLET.table == "schema_migrations" and BOOKS.table == "accounting.schema_migrations"
