"""What the accountant gets: CSV files of general-ledger lines and daily balances, and the trial
balance as a table.

CSV follows RFC 4180 (comma separated, CRLF line ends, fields quoted when they hold a comma, a
quote or a line break, quotes doubled). Text a spreadsheet would run as a formula (starting with
``=``, ``+``, ``-``, ``@``, a tab or a carriage return) is prefixed with an apostrophe. Amount
columns are exact decimals the books format themselves (a balance may be negative), so they are
never prefixed. Columns: ``docs/accounting-consumer.md``.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping
from typing import Any, TextIO

from ledger_core.money import format_amount

LINE_COLUMNS = (
    "date",
    "occurred_at",
    "event_id",
    "entry_id",
    "fact_type",
    "kind",
    "reference",
    "account",
    "account_id",
    "customer_id",
    "balance_id",
    "currency",
    "debit",
    "credit",
)
DAILY_COLUMNS = (
    "date",
    "account",
    "account_id",
    "customer_id",
    "balance_id",
    "currency",
    "opening",
    "debits",
    "credits",
    "closing",
)
TRIAL_COLUMNS = ("currency", "account", "debits", "credits", "debit_balance", "credit_balance")

_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def text_cell(value: object) -> str:
    """A text cell a spreadsheet will show as text, never evaluate as a formula."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_STARTS) else text


def _writer(out: TextIO) -> Any:
    return csv.writer(out, lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)


def write_lines(out: TextIO, rows: Iterable[Mapping[str, Any]]) -> int:
    """General-ledger lines as CSV: one row per line, the amount in the debit or the credit
    column. Returns the number of rows."""
    w = _writer(out)
    w.writerow(LINE_COLUMNS)
    count = 0
    for r in rows:
        currency, amount = r["currency"], int(r["amount"])
        w.writerow(
            [
                r["day"].isoformat(),
                r["occurred_at"].isoformat(),
                str(r["event_id"]),
                text_cell(r["entry_id"]),
                text_cell(r["fact_type"]),
                text_cell(r["kind"]),
                text_cell(r["reference"]),
                text_cell(r["account"]),
                str(r["account_id"]),
                text_cell(r["customer_id"]),
                text_cell(r["balance_id"]),
                text_cell(currency),
                format_amount(-amount, currency) if amount < 0 else "",
                format_amount(amount, currency) if amount > 0 else "",
            ]
        )
        count += 1
    return count


def write_daily_balances(out: TextIO, rows: Iterable[Mapping[str, Any]]) -> int:
    """Daily balances as CSV: per account and day with movements, the opening balance, the
    day's debits and credits, and the closing balance (balances: + credit, - debit)."""
    w = _writer(out)
    w.writerow(DAILY_COLUMNS)
    count = 0
    for r in rows:
        currency = r["currency"]
        debits, credits, closing = int(r["debits"]), int(r["credits"]), int(r["closing"])
        w.writerow(
            [
                r["day"].isoformat(),
                text_cell(r["account"]),
                str(r["account_id"]),
                text_cell(r["customer_id"]),
                text_cell(r["balance_id"]),
                text_cell(currency),
                format_amount(closing - credits + debits, currency),
                format_amount(debits, currency),
                format_amount(credits, currency),
                format_amount(closing, currency),
            ]
        )
        count += 1
    return count


def trial_balance_rows(rows: Iterable[Mapping[str, Any]]) -> list[tuple[str, ...]]:
    """The trial balance: per currency and account the debits, the credits, and the balance in
    the debit or the credit column; then per currency a total line whose debit and credit
    balances are equal when the books balance."""
    out: list[tuple[str, ...]] = []
    totals: dict[str, list[int]] = {}
    for r in rows:
        currency, balance = r["currency"], int(r["balance"])
        debits, credits = int(r["debits"]), int(r["credits"])
        t = totals.setdefault(currency, [0, 0, 0, 0])
        t[0] += debits
        t[1] += credits
        t[2] += -balance if balance < 0 else 0
        t[3] += balance if balance > 0 else 0
        out.append(
            (
                currency,
                r["account"],
                format_amount(debits, currency),
                format_amount(credits, currency),
                format_amount(-balance, currency) if balance < 0 else "",
                format_amount(balance, currency) if balance > 0 else "",
            )
        )
    for currency, (d, c, db, cb) in totals.items():
        out.append(
            (
                currency,
                "TOTAL",
                format_amount(d, currency),
                format_amount(c, currency),
                format_amount(db, currency),
                format_amount(cb, currency),
            )
        )
    return out


def write_trial_balance_csv(out: TextIO, rows: list[tuple[str, ...]]) -> None:
    """The trial balance as CSV."""
    w = _writer(out)
    w.writerow(TRIAL_COLUMNS)
    for row in rows:
        w.writerow([text_cell(row[0]), text_cell(row[1]), *row[2:]])


def format_trial_balance(rows: list[tuple[str, ...]]) -> str:
    """The trial balance as an aligned text table for a terminal."""
    table = [TRIAL_COLUMNS, *rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(TRIAL_COLUMNS))]
    buf = io.StringIO()
    for r in table:
        cells = [r[0].ljust(widths[0]), r[1].ljust(widths[1])]
        cells += [r[i].rjust(widths[i]) for i in range(2, len(r))]
        buf.write("  ".join(cells).rstrip() + "\n")
    return buf.getvalue()
