"""Reading a fact: the general-ledger lines it books and the balance sequences it claims.

The sign convention is the ledger's (``docs/events/consumer-contract.md``): a posting of ``+x``
raises the account's balance. Customer balances are liabilities, so a positive posting is a
credit and a negative one a debit; every entry's lines sum to zero per currency.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Literal

import orjson

from ledger_core.currencies import EXPONENTS
from ledger_core.money import to_minor

SCHEMA = "ledger.event/v1"
CUSTOMER = "customer"
"""The account label of a customer balance (system accounts are labelled by their kind)."""

# entry.posted names its system account only through its kind (the posting carries the id).
_SYSTEM_OF_ENTRY = {
    "debit": "trading",
    "credit": "trading",
    "deposit": "settlement",
    "withdrawal": "settlement",
    # A reversal moves its original's amount back against the same system account.
    "deposit_reversal": "settlement",
    "withdrawal_reversal": "settlement",
}

Counter = Literal["balance_seq", "hold_seq"]
Side = Literal["debit", "credit"]


class UnreadableFact(ValueError):
    """A fact of a known type that does not hold what the schema promises."""


@dataclass(frozen=True, slots=True)
class LedgerLine:
    """One general-ledger line: an amount moved on one account (a ledger account id: a customer
    balance, or a system account's shard)."""

    account_id: str
    account: str  # "customer", or the system account's kind ("trading", "settlement", ...)
    customer_id: str  # the owner of a customer balance, else ""
    balance_id: str  # the customer balance's id, else ""
    currency: str
    amount: int  # signed minor units: + credit, - debit

    @property
    def side(self) -> Side:
        """The accounting side: positive postings are credits, negative ones debits."""
        return "credit" if self.amount > 0 else "debit"


@dataclass(frozen=True, slots=True)
class Claim:
    """A sequence number a fact moves a balance's counter to: booking it needs the number
    before it booked (held + 1). Numbers a fact carries without moving them (a reservation's
    ``balance_seq``, a settlement's target ``hold_seq``) are no claims: the two counters move
    independently, and what a fact books depends only on the counters it moves."""

    customer_id: str
    balance_id: str
    counter: Counter
    value: int


@dataclass(frozen=True, slots=True)
class ReadFact:
    """What the books need from one fact."""

    event_id: str
    type: str
    customer_id: str
    occurred_at: datetime
    claims: tuple[Claim, ...]
    lines: tuple[LedgerLine, ...]
    entry_id: str = ""
    kind: str = ""  # entry.posted's kind (debit, credit, deposit, ...), else the type
    reference: str = ""  # the request id, or the exchange id
    comment: str = ""

    @property
    def day(self) -> date:
        """The (UTC) day the fact is booked on: the day the ledger accepted its command."""
        return self.occurred_at.date()


def read_fact(payload: bytes | dict[str, Any]) -> ReadFact | None:
    """Read one fact; None for a fact these books do not know (another schema version, a type
    added later: the contract says to ignore them). Raises :class:`UnreadableFact` when a known
    fact is malformed or its lines do not sum to zero per currency."""
    try:
        body = orjson.loads(payload) if isinstance(payload, bytes) else payload
        if not isinstance(body, dict):
            raise UnreadableFact("a fact is a JSON object")
        if body.get("schema") != SCHEMA:
            return None
        kind = body["type"]
        reader = _READERS.get(kind)
        if reader is None:
            return None
        fact = reader(body)
    except UnreadableFact:
        raise
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise UnreadableFact(f"malformed fact: {exc!r}") from exc
    _check_balanced(fact)
    return fact


def _base(body: dict[str, Any], **fields: Any) -> ReadFact:
    return ReadFact(
        event_id=str(body["event_id"]),
        type=str(body["type"]),
        customer_id=str(body["customer_id"]),
        occurred_at=datetime.fromisoformat(body["occurred_at"]),
        **fields,
    )


def _customer(body: dict[str, Any]) -> ReadFact:
    # No money moves and no balance sequence: de-duplicated by event id alone.
    return _base(body, claims=(), lines=())


def _opened(body: dict[str, Any]) -> ReadFact:
    customer, balance = str(body["customer_id"]), str(body["balance_id"])
    if body["currency_code"] not in EXPONENTS:
        raise UnreadableFact(f"unknown currency {body['currency_code']!r}")
    # balance.opened starts both counters: from "never seen" (-1) to 0.
    claims = (
        Claim(customer, balance, "balance_seq", int(body["balance_seq"])),
        Claim(customer, balance, "hold_seq", 0),
    )
    return _base(body, claims=claims, lines=())


def _entry(body: dict[str, Any]) -> ReadFact:
    customer, balance = str(body["customer_id"]), str(body["balance_id"])
    currency = str(body["currency_code"])
    system = _SYSTEM_OF_ENTRY[body["kind"]]
    postings = body["postings"]
    if len(postings) != 2:
        raise UnreadableFact("entry.posted has two postings: the customer's, then the system's")
    customer_posting, system_posting = postings
    lines = (
        LedgerLine(
            str(customer_posting["account_id"]),
            CUSTOMER,
            customer,
            balance,
            currency,
            to_minor(customer_posting["amount"], currency),
        ),
        LedgerLine(
            str(system_posting["account_id"]),
            system,
            "",
            "",
            currency,
            to_minor(system_posting["amount"], currency),
        ),
    )
    claims = (Claim(customer, balance, "balance_seq", int(body["balance_seq"])),)
    return _base(
        body,
        claims=claims,
        lines=lines,
        entry_id=str(body["entry_id"]),
        kind=str(body["kind"]),
        reference=str(body["request_id"]),
        comment=str(body["comment"]),
    )


def _exchange(body: dict[str, Any]) -> ReadFact:
    customer = str(body["customer_id"])
    kind = str(body["type"])
    states = body["balances"]
    source = states[0]
    # What each exchange fact moves: a reservation or a void moves the source's hold counter
    # only; a settlement moves the source's two counters and the target's postings counter.
    source_id = str(source["balance_id"])
    claims = [Claim(customer, source_id, "hold_seq", int(source["hold_seq"]))]
    lines: list[LedgerLine] = []
    if kind == "exchange.settled":
        target = states[1]
        claims += [
            Claim(customer, source_id, "balance_seq", int(source["balance_seq"])),
            Claim(customer, str(target["balance_id"]), "balance_seq", int(target["balance_seq"])),
        ]
        for p in body["postings"]:
            label = str(p["account"])
            currency = str(p["currency_code"])
            is_customer = label.startswith("balance:")
            lines.append(
                LedgerLine(
                    str(p["account_id"]),
                    CUSTOMER if is_customer else label,
                    customer if is_customer else "",
                    label.removeprefix("balance:") if is_customer else "",
                    currency,
                    to_minor(p["amount"], currency),
                )
            )
    return _base(
        body,
        claims=tuple(claims),
        lines=tuple(lines),
        entry_id=str(body.get("entry_id", "")),
        kind=kind.removeprefix("exchange."),
        reference=str(body["exchange_id"]),
        comment=str(body.get("comment", body.get("reason", ""))),
    )


_READERS = {
    "customer.created": _customer,
    "customer.blocked": _customer,
    "customer.unblocked": _customer,
    "balance.opened": _opened,
    "entry.posted": _entry,
    "exchange.reserved": _exchange,
    "exchange.settled": _exchange,
    "exchange.voided": _exchange,
}


def _check_balanced(fact: ReadFact) -> None:
    totals: dict[str, int] = {}
    for line in fact.lines:
        if line.amount == 0:
            raise UnreadableFact("a posting of zero")
        totals[line.currency] = totals.get(line.currency, 0) + line.amount
    unbalanced = {c: t for c, t in totals.items() if t != 0}
    if unbalanced:
        raise UnreadableFact(f"the lines do not sum to zero: {unbalanced}")
