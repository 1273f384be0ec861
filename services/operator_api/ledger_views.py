"""What the operator API's ledger reads answer, built from plain rows (pure; no I/O).

Amounts are minor units in the rows and decimal strings with exactly the currency's exponent in
every answer, as everywhere in the API. Statements come as JSON or as CSV (RFC 4180, with cells
that a spreadsheet would run as a formula made inert); the trial balance is summed here.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ledger_core.money import format_amount


def rfc3339(at: datetime) -> str:
    """A time as RFC 3339 in UTC with milliseconds (the entries' times are Kafka timestamps,
    which have millisecond resolution): ``2026-11-22T01:56:15.123Z``."""
    return at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class BalanceRow:
    """A customer balance as read: its total (last posting's balance after), what open exchange
    reservations hold of it, and its last sequence number (0: no posting yet)."""

    balance_id: str
    currency: str
    total: int
    held: int
    seq: int
    created_at: datetime


def balance_view(customer_id: str, row: BalanceRow) -> dict[str, Any]:
    """``{customerId, balanceId, currency, total, held, available, seq, createdAt}``:
    ``available`` is what a debit, withdrawal or new exchange may spend (the total minus what
    open exchanges hold), the amount Quadcode's balance read answers."""
    return {
        "customerId": customer_id,
        "balanceId": row.balance_id,
        "currency": row.currency,
        "total": format_amount(row.total, row.currency),
        "held": format_amount(row.held, row.currency),
        "available": format_amount(row.total - row.held, row.currency),
        "seq": row.seq,
        "createdAt": rfc3339(row.created_at),
    }


@dataclass(frozen=True, slots=True)
class StatementLine:
    """One posting on a customer balance with its entry's details."""

    seq: int
    time: datetime
    kind: str
    amount: int  # signed: + into the balance, - out of it
    balance_after: int
    entry_id: uuid.UUID
    request_id: str
    comment: str
    order_id: str | None


def next_after_seq(lines: Sequence[StatementLine], limit: int, more: bool) -> int | None:
    """The cursor of the next page: the last line's seq when more lines follow, else None.

    ``more`` is whether the query found a line beyond ``limit`` (it asks for one extra), so a
    page that ends exactly at the last line does not send the caller to an empty page.
    """
    if not more or not lines:
        return None
    assert len(lines) == limit, "a page with more lines after it is full"
    return lines[-1].seq


def line_json(line: StatementLine, currency: str) -> dict[str, Any]:
    return {
        "seq": line.seq,
        "time": rfc3339(line.time),
        "kind": line.kind,
        "amount": format_amount(line.amount, currency),
        "balanceAfter": format_amount(line.balance_after, currency),
        "entryId": str(line.entry_id),
        "requestId": line.request_id,
        "comment": line.comment,
        "orderId": line.order_id,
    }


CSV_HEADER = (
    "seq",
    "time",
    "kind",
    "amount",
    "currency",
    "balanceAfter",
    "entryId",
    "requestId",
    "comment",
    "orderId",
)

# A spreadsheet runs a cell that starts with one of these as a formula (=HYPERLINK(...), +cmd|,
# -2+3, @SUM); tab and carriage return hide such a start from a naive check (OWASP, "CSV
# injection").
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def text_cell(text: str) -> str:
    """A text cell made inert: one that a spreadsheet would read as a formula gets a leading
    apostrophe, which spreadsheets show as text and do not evaluate. Numbers are written by
    :func:`csv_row` unguarded (a negative amount must stay a number)."""
    return "'" + text if text.startswith(_FORMULA_STARTS) else text


def quoted(cell: str) -> str:
    """RFC 4180: a cell holding a comma, a double quote, CR or LF is enclosed in double quotes,
    and each double quote in it doubled."""
    if any(c in cell for c in ',"\r\n'):
        return '"' + cell.replace('"', '""') + '"'
    return cell


def csv_row(cells: Iterable[str]) -> str:
    """One record, CRLF-terminated as RFC 4180 asks."""
    return ",".join(quoted(c) for c in cells) + "\r\n"


def statement_csv(lines: Iterable[StatementLine], currency: str) -> bytes:
    """The header row and one row per line, UTF-8. Every text cell (kind, ids, comment) goes
    through :func:`text_cell`; seq, time, amounts and the currency are the ledger's own and
    can not start a formula, except a negative amount, which is a number and stays one."""
    out = [csv_row(CSV_HEADER)]
    for line in lines:
        out.append(
            csv_row(
                (
                    str(line.seq),
                    rfc3339(line.time),
                    text_cell(line.kind),
                    format_amount(line.amount, currency),
                    currency,
                    format_amount(line.balance_after, currency),
                    str(line.entry_id),
                    text_cell(line.request_id),
                    text_cell(line.comment),
                    text_cell(line.order_id or ""),
                )
            )
        )
    return "".join(out).encode()


@dataclass(slots=True)
class CurrencyTrial:
    """One currency's side of the trial balance: customers and each system kind, in minor units."""

    currency: str
    customers: int = 0
    system: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return self.customers + sum(self.system.values())


def trial_balance(rows: Iterable[tuple[str, str, int]]) -> list[CurrencyTrial]:
    """Sum ``(currency, account kind, balance)`` rows per currency: customer balances on one side,
    each system kind (``trading``, ``settlement``, ``exchange_clearing``...; every shard of a kind
    summed) on its own line. Every entry sums to zero per currency, so each total must be zero;
    one that is not means the books are broken (the audit names the entry)."""
    per_currency: dict[str, CurrencyTrial] = {}
    for currency, kind, amount in rows:
        trial = per_currency.setdefault(currency, CurrencyTrial(currency))
        if kind == "customer":
            trial.customers += amount
        else:
            trial.system[kind] = trial.system.get(kind, 0) + amount
    return [per_currency[c] for c in sorted(per_currency)]


def trial_balance_view(trials: Sequence[CurrencyTrial], as_of: datetime) -> dict[str, Any]:
    """``{asOf, balanced, currencies: [{currency, customers, system: {kind: amount}, total,
    balanced}]}``; ``balanced`` overall is true when every currency's total is zero."""
    currencies = [
        {
            "currency": t.currency,
            "customers": format_amount(t.customers, t.currency),
            "system": {k: format_amount(v, t.currency) for k, v in sorted(t.system.items())},
            "total": format_amount(t.total, t.currency),
            "balanced": t.total == 0,
        }
        for t in trials
    ]
    return {
        "asOf": rfc3339(as_of),
        "balanced": all(t.total == 0 for t in trials),
        "currencies": currencies,
    }
