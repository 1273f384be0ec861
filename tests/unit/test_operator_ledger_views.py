"""The operator API's ledger answers: statement pages and cursors, CSV, the trial balance."""

from __future__ import annotations

import csv
import io
import uuid
from datetime import UTC, datetime

import pytest

from operator_api.ledger_views import (
    CSV_HEADER,
    BalanceRow,
    StatementLine,
    balance_view,
    next_after_seq,
    quoted,
    statement_csv,
    text_cell,
    trial_balance,
    trial_balance_view,
)

pytestmark = pytest.mark.unit

AT = datetime(2026, 11, 22, 1, 56, 15, 123456, tzinfo=UTC)


def line(seq: int, amount: int = 100, comment: str = "c", request_id: str = "r") -> StatementLine:
    return StatementLine(
        seq=seq,
        time=AT,
        kind="deposit",
        amount=amount,
        balance_after=seq * 100,
        entry_id=uuid.UUID(int=seq),
        request_id=request_id,
        comment=comment,
        order_id=None,
    )


def test_the_cursor_is_the_last_seq_only_when_more_lines_follow() -> None:
    page = [line(5), line(6), line(7)]
    assert next_after_seq(page, 3, more=True) == 7
    # A page that ends exactly at the last line does not send the caller to an empty page.
    assert next_after_seq(page, 3, more=False) is None
    assert next_after_seq([], 3, more=False) is None


def test_a_balance_shows_total_held_and_available_in_the_currency_exponent() -> None:
    row = BalanceRow("b", "USDT", total=250_000_000, held=100_000_000, seq=3, created_at=AT)
    view = balance_view("c", row)
    assert (view["total"], view["held"], view["available"]) == (
        "250.000000",
        "100.000000",
        "150.000000",
    )
    assert view["createdAt"] == "2026-11-22T01:56:15.123Z"


def test_csv_has_a_header_and_crlf_records_that_a_csv_reader_reads_back() -> None:
    lines = [line(1), line(2, amount=-50, comment='say "hi", then\r\nleave')]
    data = statement_csv(lines, "USD").decode()
    assert data.startswith(",".join(CSV_HEADER) + "\r\n")
    assert data.count("\r\n") == 4  # header, two records, and the one inside the quoted comment
    rows = list(csv.reader(io.StringIO(data, newline="")))
    assert rows[0] == list(CSV_HEADER)
    assert rows[2][3] == "-0.50"  # a negative amount stays a number
    assert rows[2][8] == 'say "hi", then\r\nleave'
    assert rows[1][1] == "2026-11-22T01:56:15.123Z"


@pytest.mark.parametrize("start", ["=", "+", "-", "@", "\t", "\r"])
def test_a_text_cell_that_a_spreadsheet_would_run_as_a_formula_is_made_text(start: str) -> None:
    payload = start + 'HYPERLINK("http://evil")'
    assert text_cell(payload) == "'" + payload
    data = statement_csv([line(1, comment=payload, request_id=payload)], "USD").decode()
    record = list(csv.reader(io.StringIO(data, newline="")))[1]
    assert record[7] == "'" + payload and record[8] == "'" + payload


def test_plain_text_cells_are_left_as_they_are() -> None:
    assert text_cell("operator deposit") == "operator deposit"
    assert quoted("plain") == "plain"
    assert quoted("a,b") == '"a,b"'
    assert quoted('a"b') == '"a""b"'


def test_the_trial_balance_sums_customers_and_each_system_kind_per_currency() -> None:
    rows = [
        ("USD", "customer", 15_000),
        ("USD", "customer", 5_000),
        ("USD", "settlement", -25_000),
        ("USD", "settlement", 1_000),  # a second shard of the same kind
        ("USD", "trading", 4_000),
        ("BTC", "customer", 193_459),
        ("BTC", "exchange_clearing", -193_861),
        ("BTC", "rounding", 1),
        ("BTC", "markup_revenue", 5),
        ("BTC", "affiliate_margin", 396),
    ]
    trials = trial_balance(rows)
    assert [t.currency for t in trials] == ["BTC", "USD"]
    usd = trials[1]
    assert (usd.customers, usd.system, usd.total) == (
        20_000,
        {"settlement": -24_000, "trading": 4_000},
        0,
    )
    view = trial_balance_view(trials, AT)
    assert view["balanced"] is True
    assert view["currencies"][1] == {
        "currency": "USD",
        "customers": "200.00",
        "system": {"settlement": "-240.00", "trading": "40.00"},
        "total": "0.00",
        "balanced": True,
    }


def test_a_currency_that_does_not_sum_to_zero_unbalances_the_trial_balance() -> None:
    trials = trial_balance([("USD", "customer", 100), ("USD", "settlement", -99)])
    view = trial_balance_view(trials, AT)
    assert view["balanced"] is False
    assert view["currencies"][0]["total"] == "0.01"
    assert view["currencies"][0]["balanced"] is False


def test_an_empty_ledger_is_balanced() -> None:
    assert trial_balance_view(trial_balance([]), AT)["balanced"] is True
