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
    ExchangeReserve,
    ExchangeSettle,
    ExchangeVoid,
    MoneyCommand,
    OpenBalance,
    Reversal,
    fingerprint,
    idempotency_key,
)
from ledger_core.currencies import EXPONENTS
from ledger_core.errors import error_body, status_of
from ledger_core.money import (
    AmountError,
    ceiling,
    format_amount,
    parse_amount,
    parse_amount_or_zero,
)
from ledger_core.state import (
    Account,
    Customer,
    PartitionState,
    Reservation,
    UndoLog,
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
    "deposit_reversal": "settlement",
    "withdrawal_reversal": "settlement",
}
# Sign of the movement on the customer's balance: a reversal moves its original's amount back.
DIRECTION = {
    "debit": -1,
    "credit": 1,
    "deposit": 1,
    "withdrawal": -1,
    "deposit_reversal": -1,
    "withdrawal_reversal": 1,
}


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
    """One leg of an entry, on a customer balance (``balance_id``) or on a system account shard
    (``system_kind``), in ``currency``."""

    account_id: uuid.UUID
    amount: int  # signed, minor units; an entry's postings sum to zero in each currency
    seq: int  # the account's sequence number of this posting (1, 2, ...)
    balance_after: int
    currency: str
    balance_id: str | None  # the customer's balance, or None for a system account
    system_kind: str | None  # the system account's kind, or None for a customer balance


@dataclass(frozen=True, slots=True)
class ExchangeTerms:
    """What an exchange entry converts: the target side of a settled exchange."""

    target_balance_id: str
    target_currency: str
    paid: int  # to the customer's target balance, minor units of the target currency
    markup_revenue: int
    affiliate_margin: int
    rounding: int


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """A journal entry: the one model of every posting the ledger makes.

    A single-currency entry (debit, credit, deposit, withdrawal, their reversals) has two
    postings in ``currency``, the customer's first. An exchange entry (``kind`` "exchange",
    ``exchange`` set; ``balance_id`` is the source balance, ``request_id`` the exchange id) has
    postings in two currencies, each summing to zero. Source currency: customer -amount, exchange
    clearing +amount. Target currency: exchange clearing -(paid + markup + affiliate + rounding),
    customer +paid, markup revenue +markup, affiliate margin +affiliate, rounding +rounding
    (zero parts are left out).
    """

    entry_id: uuid.UUID
    kind: str
    customer_id: str
    balance_id: str
    request_id: str
    currency: str
    amount: int  # minor units of ``currency``
    comment: str
    postings: tuple[Posting, ...]
    order_id: str | None = None
    exchange: ExchangeTerms | None = None


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


@dataclass(frozen=True, slots=True)
class BalanceState:
    """A customer balance after an exchange step, as its facts report it."""

    balance_id: str
    account_id: uuid.UUID
    currency: str
    seq: int  # postings so far (balance_seq)
    holds: int  # reservations made and released so far (hold_seq)
    balance: int
    reserved: int

    @property
    def available(self) -> int:
        return self.balance - self.reserved


@dataclass(frozen=True, slots=True)
class ReservationMade:
    """An exchange's hold on its source balance (no posting: the total balance is unchanged)."""

    customer_id: str
    exchange_id: str
    source_balance_id: str
    target_balance_id: str
    currency: str
    target_currency: str
    amount: int
    comment: str
    source: BalanceState  # after the hold
    target_account_id: uuid.UUID


@dataclass(frozen=True, slots=True)
class ReservationReleased:
    """An exchange's hold released: settled (with its entry) or voided (nothing moved)."""

    customer_id: str
    exchange_id: str
    outcome: str  # "settled" or "voided"
    order_id: str
    reason: str  # why it was voided ("" when settled)
    currency: str
    amount: int
    source: BalanceState  # after the release (and the entry, if settled)
    target: BalanceState | None  # after the entry, if settled
    entry: JournalEntry | None


Effect = (
    NewCustomer | NewAccount | JournalEntry | BlockChange | ReservationMade | ReservationReleased
)


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
            if isinstance(effect, ReservationReleased) and effect.entry is not None:
                return effect.entry.entry_id
        return None


def _exact(data: bytes) -> bytes:
    """A right-sized copy: orjson's output keeps a ~4 KiB allocation behind even a short result,
    and stored outcomes live long in the writer's memory."""
    return bytes(memoryview(data))


def _error(code: str, message: str | None = None, *, record: bool = True) -> Decision:
    return Decision(Outcome(status_of(code), _exact(error_body(code, message)), code), record)


def _ok(status: int, body: Mapping[str, object], *effects: Effect) -> Decision:
    return Decision(Outcome(status, _exact(orjson.dumps(body))), True, effects)


def refuse(reason: str, *, record: bool) -> Decision:
    """The final answer to a command the ledger can never apply (``command_refused``): nothing
    changes, and, when ``record``, the answer is stored so every retry gets the same bytes."""
    return _error(
        "command_refused", f"the ledger can not apply this request: {reason}", record=record
    )


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
    if isinstance(cmd, Reversal):
        return _decide_reversal(state, cmd)
    if isinstance(cmd, ExchangeReserve):
        return _decide_reserve(state, cmd)
    if isinstance(cmd, ExchangeSettle):
        return _decide_settle(state, cmd)
    if isinstance(cmd, ExchangeVoid):
        return _decide_void(state, cmd)
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


def _above_ceiling(currency: str) -> Decision:
    """A credit, deposit or settlement that would lift a customer balance above its currency's
    ceiling (``money.ceiling``), which keeps every balance_after far inside the ledger's
    NUMERIC(40, 0) columns. Stored, like a 402: it depends on the balance, so a retry of the same
    request gets the same answer even once the balance is lower."""
    return _error("amount_too_large", f"the balance would exceed the {currency} ceiling")


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
    # A debit may spend the available amount only: what exchanges hold is not there to spend.
    available = new_balance - account.reserved
    if available < 0:
        return _error("insufficient_funds")
    if delta > 0 and new_balance > ceiling(cmd.currency):
        return _above_ceiling(cmd.currency)
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
        postings=_two_postings(account, cmd.balance_id, delta, counter, counter_kind),
    )
    body = {
        "customer_id": cmd.customer_id,
        "balance_id": cmd.balance_id,
        "amount": format_amount(amount, cmd.currency),
        # The available amount, as GET balance answers (equal to the total without holds).
        "balance_current_amount": format_amount(available, cmd.currency),
        "currency_code": cmd.currency,
    }
    return _ok(201, body, entry)


def _decide_reversal(state: PartitionState, cmd: Reversal) -> Decision:
    """A deposit's reversal takes its amount out of the balance (402 when the available amount
    is short), a withdrawal's puts it back (400 ``amount_too_large`` above the ceiling). Blocked
    customers are reversed like operators' withdrawals: blocking stops Quadcode, not corrections.

    Only the success is stored: the key is the original entry's, so a stored refusal would make
    that entry irreversible forever; refused, it stays reversible once the balance allows it (a
    retry is decided again, and changes nothing until it succeeds)."""
    customer = state.customers.get(cmd.customer_id)
    if customer is None:
        return _error("customer_not_found", record=False)
    account = customer.balances.get(cmd.balance_id)
    if account is None:
        return _error("balance_not_found", record=False)
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
    available = new_balance - account.reserved
    if available < 0:
        return _error("insufficient_funds", "the balance can not cover the reversal", record=False)
    if delta > 0 and new_balance > ceiling(cmd.currency):
        return _error(
            "amount_too_large", f"the balance would exceed the {cmd.currency} ceiling", record=False
        )
    counter = _system(state, "settlement", cmd.currency)
    entry = JournalEntry(
        entry_id=stable_id("entry", *idempotency_key(cmd)),
        kind=cmd.kind,
        customer_id=cmd.customer_id,
        balance_id=cmd.balance_id,
        request_id=cmd.entry_id,  # the link to the original entry
        currency=cmd.currency,
        amount=amount,
        comment=cmd.comment,
        postings=_two_postings(account, cmd.balance_id, delta, counter, "settlement"),
    )
    body = {
        "customer_id": cmd.customer_id,
        "balance_id": cmd.balance_id,
        "entry_id": str(entry.entry_id),
        "kind": cmd.kind,
        "reverses": cmd.entry_id,
        "request_id": cmd.reference,
        "amount": format_amount(amount, cmd.currency),
        "balance_current_amount": format_amount(available, cmd.currency),
        "currency_code": cmd.currency,
    }
    return _ok(201, body, entry)


def _two_postings(
    account: Account, balance_id: str, delta: int, counter: Account, counter_kind: str
) -> tuple[Posting, Posting]:
    """A single-currency entry's postings: ``delta`` on the customer's balance, its opposite
    on the system account."""
    currency = account.currency
    return (
        Posting(
            account.account_id,
            delta,
            account.seq + 1,
            account.balance + delta,
            currency,
            balance_id,
            None,
        ),
        Posting(
            counter.account_id,
            -delta,
            counter.seq + 1,
            counter.balance - delta,
            currency,
            None,
            counter_kind,
        ),
    )


def _system(state: PartitionState, kind: str, currency: str) -> Account:
    """The partition's shard of a system account, without creating it in ``state``."""
    return state.system.get((kind, currency)) or Account(
        system_account_id(kind, currency, state.partition), currency
    )


def _balance_state(balance_id: str, account: Account, **changes: int) -> BalanceState:
    values = {
        "seq": account.seq,
        "holds": account.holds,
        "balance": account.balance,
        "reserved": account.reserved,
    }
    values.update(changes)
    return BalanceState(balance_id, account.account_id, account.currency, **values)


def _decide_reserve(state: PartitionState, cmd: ExchangeReserve) -> Decision:
    customer = state.customers.get(cmd.customer_id)
    if customer is None:
        return _error("customer_not_found")
    if customer.blocked:
        return _error("customer_blocked")
    if cmd.source_balance_id == cmd.target_balance_id:
        return _error("invalid_field", "source and target must be different balances", record=False)
    source = customer.balances.get(cmd.source_balance_id)
    target = customer.balances.get(cmd.target_balance_id)
    if source is None:
        return _error("balance_not_found", f"no source balance {cmd.source_balance_id!r}")
    if target is None:
        return _error("balance_not_found", f"no target balance {cmd.target_balance_id!r}")
    for balance_id, account, currency in (
        (cmd.source_balance_id, source, cmd.currency),
        (cmd.target_balance_id, target, cmd.target_currency),
    ):
        if currency != account.currency:
            return _error(
                "currency_mismatch",
                f"balance {balance_id!r} is in {account.currency}, not {currency}",
                record=False,
            )
    if source.currency == target.currency:
        return _error(
            "currency_mismatch", "an exchange needs balances in two currencies", record=False
        )
    try:
        amount = parse_amount(cmd.amount, cmd.currency)
    except AmountError as exc:
        return _error(exc.code, exc.message, record=False)
    if cmd.exchange_id in customer.reservations:
        # Only reachable when this request's stored outcome is not in memory: the writer checks
        # answers that store nothing against Postgres, which turns this into the replay.
        return _error("request_id_reused", "the exchange already holds a reservation", record=False)
    if amount > source.available:
        return _error("insufficient_funds")
    after = _balance_state(
        cmd.source_balance_id, source, reserved=source.reserved + amount, holds=source.holds + 1
    )
    body = {
        "customer_id": cmd.customer_id,
        "exchange_id": cmd.exchange_id,
        "status": "reserved",
        "source_balance_id": cmd.source_balance_id,
        "target_balance_id": cmd.target_balance_id,
        "amount": format_amount(amount, cmd.currency),
        "currency_code": cmd.currency,
        "source_available_after": format_amount(after.available, cmd.currency),
    }
    made = ReservationMade(
        cmd.customer_id,
        cmd.exchange_id,
        cmd.source_balance_id,
        cmd.target_balance_id,
        cmd.currency,
        cmd.target_currency,
        amount,
        cmd.comment,
        after,
        target.account_id,
    )
    return _ok(201, body, made)


def _open_reservation(
    state: PartitionState, customer_id: str, exchange_id: str
) -> tuple[Customer, Reservation] | Decision:
    customer = state.customers.get(customer_id)
    if customer is None:
        return _error("customer_not_found")
    reservation = customer.reservations.get(exchange_id)
    if reservation is None:
        return _error(
            "exchange_not_open",
            f"exchange {exchange_id!r} has no open reservation (unknown, settled or voided)",
        )
    return customer, reservation


def _decide_settle(state: PartitionState, cmd: ExchangeSettle) -> Decision:
    found = _open_reservation(state, cmd.customer_id, cmd.exchange_id)
    if isinstance(found, Decision):
        return found
    customer, res = found
    source = customer.balances[res.source_balance_id]
    target = customer.balances[res.target_balance_id]
    currency, target_currency = res.currency, target.currency
    if cmd.target_currency != target_currency:
        return _error(
            "currency_mismatch",
            f"balance {res.target_balance_id!r} is in {target_currency}, not {cmd.target_currency}",
            record=False,
        )
    try:
        paid, markup, affiliate, rounding = (
            parse_amount_or_zero(a, target_currency)
            for a in (cmd.paid, cmd.markup_revenue, cmd.affiliate_margin, cmd.rounding)
        )
    except AmountError as exc:
        return _error(exc.code, exc.message, record=False)
    total = paid + markup + affiliate + rounding
    source_after = source.balance - res.amount
    if source_after < 0:  # the hold guarantees the funds; a second line of defence
        return _error("insufficient_funds")
    if paid and target.balance + paid > ceiling(target_currency):
        return _above_ceiling(target_currency)
    postings: list[Posting] = [
        Posting(
            source.account_id,
            -res.amount,
            source.seq + 1,
            source_after,
            currency,
            res.source_balance_id,
            None,
        )
    ]
    clearing = _system(state, "exchange_clearing", currency)
    postings.append(
        Posting(
            clearing.account_id,
            res.amount,
            clearing.seq + 1,
            clearing.balance + res.amount,
            currency,
            None,
            "exchange_clearing",
        )
    )
    target_seq = target.seq
    if total:
        target_clearing = _system(state, "exchange_clearing", target_currency)
        postings.append(
            Posting(
                target_clearing.account_id,
                -total,
                target_clearing.seq + 1,
                target_clearing.balance - total,
                target_currency,
                None,
                "exchange_clearing",
            )
        )
    if paid:
        target_seq += 1
        postings.append(
            Posting(
                target.account_id,
                paid,
                target_seq,
                target.balance + paid,
                target_currency,
                res.target_balance_id,
                None,
            )
        )
    for kind, value in (
        ("markup_revenue", markup),
        ("affiliate_margin", affiliate),
        ("rounding", rounding),
    ):
        if value:
            account = _system(state, kind, target_currency)
            postings.append(
                Posting(
                    account.account_id,
                    value,
                    account.seq + 1,
                    account.balance + value,
                    target_currency,
                    None,
                    kind,
                )
            )
    entry = JournalEntry(
        entry_id=stable_id("entry", *idempotency_key(cmd)),
        kind="exchange",
        customer_id=cmd.customer_id,
        balance_id=res.source_balance_id,
        request_id=cmd.exchange_id,
        currency=currency,
        amount=res.amount,
        comment=f"exchange {cmd.exchange_id}, order {cmd.order_id}",
        postings=tuple(postings),
        order_id=cmd.order_id,
        exchange=ExchangeTerms(
            res.target_balance_id, target_currency, paid, markup, affiliate, rounding
        ),
    )
    source_state = _balance_state(
        res.source_balance_id,
        source,
        seq=source.seq + 1,
        balance=source_after,
        reserved=source.reserved - res.amount,
        holds=source.holds + 1,
    )
    target_state = _balance_state(
        res.target_balance_id, target, seq=target_seq, balance=target.balance + paid
    )
    released = ReservationReleased(
        cmd.customer_id,
        cmd.exchange_id,
        "settled",
        cmd.order_id,
        "",
        currency,
        res.amount,
        source_state,
        target_state,
        entry,
    )
    body = {
        "customer_id": cmd.customer_id,
        "exchange_id": cmd.exchange_id,
        "order_id": cmd.order_id,
        "status": "settled",
        "entry_id": str(entry.entry_id),
        "source_balance_id": res.source_balance_id,
        "amount": format_amount(res.amount, currency),
        "currency_code": currency,
        "target_balance_id": res.target_balance_id,
        "paid": format_amount(paid, target_currency),
        "markup_revenue": format_amount(markup, target_currency),
        "affiliate_margin": format_amount(affiliate, target_currency),
        "rounding": format_amount(rounding, target_currency),
        "target_currency_code": target_currency,
        "source_available_after": format_amount(source_state.available, currency),
        "target_available_after": format_amount(target_state.available, target_currency),
    }
    return _ok(201, body, released)


def _decide_void(state: PartitionState, cmd: ExchangeVoid) -> Decision:
    found = _open_reservation(state, cmd.customer_id, cmd.exchange_id)
    if isinstance(found, Decision):
        return found
    customer, res = found
    source = customer.balances[res.source_balance_id]
    source_state = _balance_state(
        res.source_balance_id,
        source,
        reserved=source.reserved - res.amount,
        holds=source.holds + 1,
    )
    released = ReservationReleased(
        cmd.customer_id,
        cmd.exchange_id,
        "voided",
        cmd.order_id,
        cmd.reason,
        res.currency,
        res.amount,
        source_state,
        None,
        None,
    )
    body = {
        "customer_id": cmd.customer_id,
        "exchange_id": cmd.exchange_id,
        "order_id": cmd.order_id,
        "status": "voided",
        "reason": cmd.reason,
        "source_balance_id": res.source_balance_id,
        "amount": format_amount(res.amount, res.currency),
        "currency_code": res.currency,
        "source_available_after": format_amount(source_state.available, res.currency),
    }
    return _ok(200, body, released)


def apply(state: PartitionState, decision: Decision, undo: UndoLog | None = None) -> None:
    """Update ``state`` with a decision's effects; every change goes through ``undo`` (a fresh
    log when none is given), so a caller can take the decision back exactly."""
    log = UndoLog() if undo is None else undo
    for effect in decision.effects:
        if isinstance(effect, JournalEntry):
            _post_entry(state, effect, log)
        elif isinstance(effect, NewCustomer):
            log.put(state.customers, effect.customer_id, Customer())
        elif isinstance(effect, NewAccount):
            log.put(
                state.customers[effect.customer_id].balances,
                effect.balance_id,
                Account(effect.account_id, effect.currency),
            )
        elif isinstance(effect, BlockChange):
            log.set(state.customers[effect.customer_id], "blocked", effect.blocked)
        elif isinstance(effect, ReservationMade):
            customer = state.customers[effect.customer_id]
            source = customer.balances[effect.source_balance_id]
            log.set(source, "reserved", source.reserved + effect.amount)
            log.set(source, "holds", source.holds + 1)
            log.put(
                customer.reservations,
                effect.exchange_id,
                Reservation(
                    effect.exchange_id,
                    effect.source_balance_id,
                    effect.target_balance_id,
                    effect.currency,
                    effect.amount,
                ),
            )
        else:
            customer = state.customers[effect.customer_id]
            if effect.entry is not None:
                _post_entry(state, effect.entry, log)
            reservation = log.pop(customer.reservations, effect.exchange_id)
            source = customer.balances[reservation.source_balance_id]
            log.set(source, "reserved", source.reserved - reservation.amount)
            log.set(source, "holds", source.holds + 1)


def _post_entry(state: PartitionState, entry: JournalEntry, log: UndoLog) -> None:
    """Move each posting's account to its sequence number and balance-after."""
    balances = state.customers[entry.customer_id].balances
    for posting in entry.postings:
        if posting.balance_id is not None:
            account = balances[posting.balance_id]
        else:
            assert posting.system_kind is not None
            account = state.system_account(posting.system_kind, posting.currency, log)
        assert posting.account_id == account.account_id, "posting on the wrong account"
        assert posting.seq == account.seq + 1, "posting out of sequence"
        log.set(account, "seq", posting.seq)
        log.set(account, "balance", posting.balance_after)
