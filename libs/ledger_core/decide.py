"""The ledger's decision function: given a partition's state and a command, what happens?

:func:`decide` is pure: it reads the state and returns a :class:`Decision` (the outcome to answer
with, whether to store it, and the effects: new customers, accounts, journal entries). The writer
persists the effects in one transaction and only then calls :func:`apply` to update its memory.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass

import orjson

from ledger_core.commands import (
    Command,
    CreateCustomer,
    MoneyCommand,
    OpenBalance,
    fingerprint,
    idempotency_key,
)
from ledger_core.currencies import EXPONENTS
from ledger_core.errors import error_body, status_of
from ledger_core.money import AmountError, format_amount, parse_amount
from ledger_core.state import (
    Account,
    Customer,
    PartitionState,
    balance_account_id,
    stable_id,
    system_account_id,
)

# Which system account is the other side of each money movement.
COUNTERPARTY = {
    "debit": "trading",
    "credit": "trading",
    "deposit": "settlement",
    "withdrawal": "settlement",
}
# Sign of the movement on the customer's balance.
DIRECTION = {"debit": -1, "credit": 1, "deposit": 1, "withdrawal": -1}


@dataclass(frozen=True, slots=True)
class StoredOutcome:
    """An outcome as kept in the idempotency table."""

    fingerprint: bytes
    status: int
    body: bytes


@dataclass(frozen=True, slots=True)
class Outcome:
    """The answer to a command: HTTP status and the exact body bytes."""

    status: int
    body: bytes
    error: str | None = None
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class Posting:
    account_id: uuid.UUID
    amount: int  # signed, minor units; the postings of an entry sum to zero
    seq: int  # the account's sequence number of this posting (1, 2, ...)
    balance_after: int


@dataclass(frozen=True, slots=True)
class JournalEntry:
    entry_id: uuid.UUID
    kind: str
    customer_id: str
    balance_id: str
    request_id: str
    currency: str
    amount: int
    comment: str
    counterparty: str  # system account kind on the other side
    postings: tuple[Posting, ...]


@dataclass(frozen=True, slots=True)
class NewCustomer:
    customer_id: str


@dataclass(frozen=True, slots=True)
class NewAccount:
    account_id: uuid.UUID
    customer_id: str
    balance_id: str
    currency: str


@dataclass(frozen=True, slots=True)
class BlockChange:
    customer_id: str
    blocked: bool
    request_id: str


Effect = NewCustomer | NewAccount | JournalEntry | BlockChange


@dataclass(frozen=True, slots=True)
class Decision:
    """What to answer, whether to keep the answer for retries, and what changes."""

    outcome: Outcome
    record: bool  # store (key, fingerprint, outcome) in the idempotency table
    effects: tuple[Effect, ...] = ()

    @property
    def entry_id(self) -> uuid.UUID | None:
        """The journal entry this decision posts, if any."""
        for effect in self.effects:
            if isinstance(effect, JournalEntry):
                return effect.entry_id
        return None


def _exact(data: bytes) -> bytes:
    """A right-sized copy: orjson's output keeps a ~4 KiB allocation behind even a short result,
    and stored outcomes live long in the writer's memory."""
    return bytes(memoryview(data))


def _error(code: str, message: str | None = None, *, record: bool = True) -> Decision:
    return Decision(Outcome(status_of(code), _exact(error_body(code, message)), code), record)


def _ok(status: int, body: Mapping[str, object], *effects: Effect) -> Decision:
    return Decision(Outcome(status, _exact(orjson.dumps(body))), True, effects)


def decide(state: PartitionState, cmd: Command, prior: StoredOutcome | None) -> Decision:
    """Decide ``cmd`` against ``state``; ``prior`` is the stored outcome for its key, if any.

    Records (for byte-identical replay) every outcome that depends on ledger state: successes,
    402, 404, 409 conflicts of existence and 451. Does not record what the request alone
    decides (400s) nor a reused request_id (409), since those change nothing.
    """
    if prior is not None:
        if prior.fingerprint == fingerprint(cmd):
            return Decision(Outcome(prior.status, prior.body, replayed=True), record=False)
        return _error(
            "request_id_reused",
            "request_id was already used with a different body",
            record=False,
        )
    if isinstance(cmd, MoneyCommand):
        return _decide_money(state, cmd)
    if isinstance(cmd, CreateCustomer):
        if cmd.customer_id in state.customers:
            return _error("customer_exists")
        return _ok(
            201, {"customer_id": cmd.customer_id, "blocked": False}, NewCustomer(cmd.customer_id)
        )
    if isinstance(cmd, OpenBalance):
        customer = state.customers.get(cmd.customer_id)
        if customer is None:
            return _error("customer_not_found")
        if cmd.currency not in EXPONENTS:
            return _error("unknown_currency", record=False)
        if cmd.balance_id in customer.balances:
            return _error("balance_exists")
        account_id = balance_account_id(cmd.customer_id, cmd.balance_id)
        return _ok(
            201,
            {
                "customer_id": cmd.customer_id,
                "balance_id": cmd.balance_id,
                "amount": format_amount(0, cmd.currency),
                "currency_code": cmd.currency,
            },
            NewAccount(account_id, cmd.customer_id, cmd.balance_id, cmd.currency),
        )
    customer = state.customers.get(cmd.customer_id)
    if customer is None:
        return _error("customer_not_found")
    effects: tuple[Effect, ...] = ()
    if customer.blocked != cmd.blocked:
        effects = (BlockChange(cmd.customer_id, cmd.blocked, cmd.request_id),)
    return _ok(200, {"customer_id": cmd.customer_id, "blocked": cmd.blocked}, *effects)


def _decide_money(state: PartitionState, cmd: MoneyCommand) -> Decision:
    customer = state.customers.get(cmd.customer_id)
    if customer is None:
        return _error("customer_not_found")
    # Blocking stops Quadcode's callbacks; operators may still move a blocked customer's money
    # (a final withdrawal, a correction).
    if customer.blocked and cmd.kind in ("debit", "credit"):
        return _error("customer_blocked")
    account = customer.balances.get(cmd.balance_id)
    if account is None:
        return _error("balance_not_found")
    if cmd.currency != account.currency:
        return _error(
            "currency_mismatch",
            f"balance {cmd.balance_id!r} is in {account.currency}, not {cmd.currency}",
            record=False,
        )
    try:
        amount = parse_amount(cmd.amount, cmd.currency)
    except AmountError as exc:
        return _error(exc.code, exc.message, record=False)
    delta = DIRECTION[cmd.kind] * amount
    new_balance = account.balance + delta
    if new_balance < 0:
        return _error("insufficient_funds")
    counter_kind = COUNTERPARTY[cmd.kind]
    counter = state.system.get((counter_kind, cmd.currency)) or Account(
        system_account_id(counter_kind, cmd.currency, state.partition), cmd.currency
    )
    entry = JournalEntry(
        entry_id=stable_id("entry", *idempotency_key(cmd)),
        kind=cmd.kind,
        customer_id=cmd.customer_id,
        balance_id=cmd.balance_id,
        request_id=cmd.request_id,
        currency=cmd.currency,
        amount=amount,
        comment=cmd.comment,
        counterparty=counter_kind,
        postings=(
            Posting(account.account_id, delta, account.seq + 1, new_balance),
            Posting(counter.account_id, -delta, counter.seq + 1, counter.balance - delta),
        ),
    )
    body = {
        "customer_id": cmd.customer_id,
        "balance_id": cmd.balance_id,
        "amount": format_amount(amount, cmd.currency),
        "balance_current_amount": format_amount(new_balance, cmd.currency),
        "currency_code": cmd.currency,
    }
    return _ok(201, body, entry)


def apply(state: PartitionState, decision: Decision) -> None:
    """Update ``state`` with a decision's effects (after they are durable)."""
    for effect in decision.effects:
        if isinstance(effect, JournalEntry):
            accounts = (
                state.customers[effect.customer_id].balances[effect.balance_id],
                state.system_account(effect.counterparty, effect.currency),
            )
            for account, posting in zip(accounts, effect.postings, strict=True):
                assert posting.account_id == account.account_id, "posting on the wrong account"
                assert posting.seq == account.seq + 1, "posting out of sequence"
                account.seq = posting.seq
                account.balance = posting.balance_after
        elif isinstance(effect, NewCustomer):
            state.customers[effect.customer_id] = Customer()
        elif isinstance(effect, NewAccount):
            state.customers[effect.customer_id].balances[effect.balance_id] = Account(
                effect.account_id, effect.currency
            )
        else:
            state.customers[effect.customer_id].blocked = effect.blocked
