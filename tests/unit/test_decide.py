"""The ledger's decision function against a simple reference model (no I/O).

Random command sequences, with duplicates, retries and conflicting reuse of request ids, are fed
both to ``decide``/``apply`` and to a deliberately naive model; every outcome must agree, customer
balances never go negative, every currency sums to zero, and replaying the same commands from
scratch yields the same ledger, byte for byte. Exchanges are part of the mix: reservations hold
funds (debits may spend only the available amount), settlements post in two currencies, voids
release.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger_core.commands import (
    Command,
    CreateCustomer,
    ExchangeReserve,
    ExchangeSettle,
    ExchangeVoid,
    MoneyCommand,
    OpenBalance,
    SetBlocked,
    fingerprint,
    idempotency_key,
)
from ledger_core.decide import (
    Decision,
    JournalEntry,
    ReservationReleased,
    StoredOutcome,
    apply,
    decide,
)
from ledger_core.money import AmountError, parse_amount, parse_amount_or_zero
from ledger_core.state import PartitionState

pytestmark = pytest.mark.unit

CUSTOMERS = ["ann", "ben"]
BALANCES = {"usd": "USD", "btc": "BTC"}
REQUEST_IDS = ["r1", "r2", "r3", "r4", "r5"]
EXCHANGE_IDS = ["x1", "x2"]


@dataclass
class Model:
    """What the ledger should do, written as plainly as possible."""

    customers: dict[str, bool] = field(default_factory=dict)
    balances: dict[tuple[str, str], tuple[str, int]] = field(default_factory=dict)
    system: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    seen: dict[tuple[str, str, str], tuple[bytes, int]] = field(default_factory=dict)
    reserved: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    # (customer, exchange id) -> (source, target, amount) while open
    holds: dict[tuple[str, str], tuple[str, str, int]] = field(default_factory=dict)

    def expect(self, cmd: Command) -> int:
        key = idempotency_key(cmd)
        if key in self.seen:
            fp, status = self.seen[key]
            return status if fp == fingerprint(cmd) else 409
        status = self._fresh(cmd)
        if status not in (400,):
            self.seen[key] = (fingerprint(cmd), status)
        return status

    def _fresh(self, cmd: Command) -> int:
        if isinstance(cmd, CreateCustomer):
            if cmd.customer_id in self.customers:
                return 409
            self.customers[cmd.customer_id] = False
            return 201
        if cmd.customer_id not in self.customers:
            return 404
        if isinstance(cmd, SetBlocked):
            self.customers[cmd.customer_id] = cmd.blocked
            return 200
        if isinstance(cmd, OpenBalance):
            if (cmd.customer_id, cmd.balance_id) in self.balances:
                return 409
            self.balances[(cmd.customer_id, cmd.balance_id)] = (cmd.currency, 0)
            return 201
        if isinstance(cmd, ExchangeReserve):
            return self._reserve(cmd)
        if isinstance(cmd, ExchangeSettle | ExchangeVoid):
            return self._release(cmd)
        assert isinstance(cmd, MoneyCommand)
        if self.customers[cmd.customer_id] and cmd.kind in ("debit", "credit"):
            return 451
        if (cmd.customer_id, cmd.balance_id) not in self.balances:
            return 404
        currency, amount = self.balances[(cmd.customer_id, cmd.balance_id)]
        if currency != cmd.currency:
            return 400
        delta = parse_amount(cmd.amount, currency) * (
            1 if cmd.kind in ("credit", "deposit") else -1
        )
        if amount + delta - self.reserved[(cmd.customer_id, cmd.balance_id)] < 0:
            return 402  # only the available amount may be spent
        self.balances[(cmd.customer_id, cmd.balance_id)] = (currency, amount + delta)
        self.system[currency] -= delta
        return 201

    def _reserve(self, cmd: ExchangeReserve) -> int:
        c = cmd.customer_id
        if self.customers[c]:
            return 451
        if cmd.source_balance_id == cmd.target_balance_id:
            return 400
        source = self.balances.get((c, cmd.source_balance_id))
        target = self.balances.get((c, cmd.target_balance_id))
        if source is None or target is None:
            return 404
        if (source[0], target[0]) != (cmd.currency, cmd.target_currency) or source[0] == target[0]:
            return 400
        try:
            amount = parse_amount(cmd.amount, cmd.currency)
        except AmountError:
            return 400
        if amount > source[1] - self.reserved[(c, cmd.source_balance_id)]:
            return 402
        self.reserved[(c, cmd.source_balance_id)] += amount
        self.holds[(c, cmd.exchange_id)] = (cmd.source_balance_id, cmd.target_balance_id, amount)
        return 201

    def _release(self, cmd: ExchangeSettle | ExchangeVoid) -> int:
        c = cmd.customer_id
        hold = self.holds.get((c, cmd.exchange_id))
        if hold is None:
            return 409
        source, target, amount = hold
        if isinstance(cmd, ExchangeVoid):
            del self.holds[(c, cmd.exchange_id)]
            self.reserved[(c, source)] -= amount
            return 200
        target_currency, target_amount = self.balances[(c, target)]
        if cmd.target_currency != target_currency:
            return 400
        try:
            paid, *_margins = (
                parse_amount_or_zero(a, target_currency)
                for a in (cmd.paid, cmd.markup_revenue, cmd.affiliate_margin, cmd.rounding)
            )
        except AmountError:
            return 400
        del self.holds[(c, cmd.exchange_id)]
        self.reserved[(c, source)] -= amount
        source_currency, source_amount = self.balances[(c, source)]
        self.balances[(c, source)] = (source_currency, source_amount - amount)
        self.balances[(c, target)] = (target_currency, target_amount + paid)
        self.system[source_currency] += amount
        self.system[target_currency] -= paid
        return 201


amounts = st.sampled_from(["0.01", "1", "2.50", "10", "0.00000001", "0.5"])


@st.composite
def commands(draw: st.DrawFn) -> Command:
    customer = draw(st.sampled_from(CUSTOMERS))
    request_id = draw(st.sampled_from(REQUEST_IDS))
    kind = draw(
        st.sampled_from(
            ["create", "open", "money", "money", "money", "block", "reserve", "settle", "void"]
        )
    )
    if kind == "create":
        return CreateCustomer(customer, request_id)
    exchange_id = draw(st.sampled_from(EXCHANGE_IDS))
    if kind == "reserve":
        source, target = draw(st.permutations(sorted(BALANCES)))
        if draw(st.integers(0, 9)) == 0:
            target = source
        amount = draw(amounts)
        if BALANCES[source] == "USD" and "." in amount and len(amount.split(".")[-1]) > 2:
            amount = "1"
        return ExchangeReserve(
            customer, exchange_id, source, target, amount, BALANCES[source], BALANCES[target], "x"
        )
    if kind == "settle":
        target_currency = draw(st.sampled_from(["USD", "BTC", "BTC", "USD", "EUR"]))
        parts = [draw(st.sampled_from(["0", "1", "0.01", "0.00000001"])) for _ in range(4)]
        return ExchangeSettle(customer, exchange_id, "order", target_currency, *parts)
    if kind == "void":
        return ExchangeVoid(customer, exchange_id, "order", draw(st.sampled_from(["a", "b"])))
    balance = draw(st.sampled_from(sorted(BALANCES)))
    if kind == "open":
        return OpenBalance(customer, balance, BALANCES[balance], request_id)
    if kind == "block":
        return SetBlocked(customer, draw(st.booleans()), request_id)
    currency = draw(st.sampled_from([BALANCES[balance]] * 4 + ["EUR"]))
    amount = draw(amounts)
    if currency in ("USD", "EUR") and len(amount.split(".")[-1]) > 2 and "." in amount:
        amount = "1"
    money_kind = draw(st.sampled_from(["debit", "credit", "deposit", "withdrawal"]))
    return MoneyCommand(money_kind, customer, balance, request_id, amount, currency, "c")


@st.composite
def histories(draw: st.DrawFn) -> list[Command]:
    """Command sequences with retries: sometimes the previous command again, exactly. Half of
    them start with funded customers holding both balances, so exchanges get somewhere."""
    out: list[Command] = []
    if draw(st.booleans()):
        for customer in CUSTOMERS:
            out.append(CreateCustomer(customer, "setup"))
            for balance, currency in sorted(BALANCES.items()):
                out.append(OpenBalance(customer, balance, currency, "setup"))
                out.append(MoneyCommand("deposit", customer, balance, "setup", "10", currency, "c"))
    for _ in range(draw(st.integers(min_value=1, max_value=60))):
        reserves = [c for c in out if isinstance(c, ExchangeReserve)]
        if out and draw(st.integers(0, 4)) == 0:
            out.append(draw(st.sampled_from(out)))
        elif reserves and draw(st.integers(0, 3)) == 0:
            # What the orchestrator does: settle or void an exchange it reserved.
            r = draw(st.sampled_from(reserves))
            if draw(st.booleans()):
                paid = "0.01" if r.target_currency == "USD" else "0.00000001"
                parts = [paid, *(draw(st.sampled_from(["0", "1", paid])) for _ in range(3))]
                out.append(
                    ExchangeSettle(r.customer_id, r.exchange_id, "o", r.target_currency, *parts)
                )
            else:
                out.append(ExchangeVoid(r.customer_id, r.exchange_id, "o", "refunded"))
        else:
            out.append(draw(commands()))
    return out


def run(history: list[Command]) -> tuple[PartitionState, list[Decision]]:
    state = PartitionState(partition=0)
    stored: dict[tuple[str, str, str], StoredOutcome] = {}
    decisions = []
    for cmd in history:
        decision = decide(state, cmd, stored.get(idempotency_key(cmd)))
        apply(state, decision)
        if decision.record:
            stored[idempotency_key(cmd)] = StoredOutcome(
                fingerprint(cmd), decision.outcome.status, decision.outcome.body
            )
        decisions.append(decision)
    return state, decisions


def totals(state: PartitionState) -> dict[str, int]:
    sums: dict[str, int] = defaultdict(int)
    for customer in state.customers.values():
        for account in customer.balances.values():
            sums[account.currency] += account.balance
    for account in state.system.values():
        sums[account.currency] += account.balance
    return dict(sums)


def entry_currency_sums(decision: Decision) -> list[int]:
    """Each effect's postings summed per entry and currency (every sum must be zero)."""
    sums = []
    for effect in decision.effects:
        if isinstance(effect, JournalEntry):
            sums.append(sum(p.amount for p in effect.postings))
        elif isinstance(effect, ReservationReleased) and effect.entry is not None:
            by_currency: dict[str, int] = defaultdict(int)
            for leg in effect.entry.postings:
                by_currency[leg.currency] += leg.amount
            sums += by_currency.values()
    return sums


@settings(max_examples=300, deadline=None)
@given(histories())
def test_decide_agrees_with_the_reference_model(history: list[Command]) -> None:
    model = Model()
    state = PartitionState(partition=0)
    stored: dict[tuple[str, str, str], StoredOutcome] = {}
    first_body: dict[tuple[str, str, str], bytes] = {}
    for cmd in history:
        key = idempotency_key(cmd)
        decision = decide(state, cmd, stored.get(key))
        apply(state, decision)
        if decision.record:
            stored[key] = StoredOutcome(
                fingerprint(cmd), decision.outcome.status, decision.outcome.body
            )
            first_body.setdefault(key, decision.outcome.body)

        assert decision.outcome.status == model.expect(cmd), cmd
        if decision.outcome.replayed:
            assert decision.outcome.body == first_body[key]
            assert not decision.effects
        if decision.outcome.status >= 400:
            assert not decision.effects
        for customer in state.customers.values():
            for account in customer.balances.values():
                assert account.balance >= 0
                assert 0 <= account.reserved <= account.balance  # available never negative
        assert all(total == 0 for total in totals(state).values())
        assert all(total == 0 for total in entry_currency_sums(decision))

    for (customer, balance), (_, amount) in model.balances.items():
        account = state.customers[customer].balances[balance]
        assert (account.balance, account.reserved) == (amount, model.reserved[(customer, balance)])
    open_holds = {(c, x) for c, customer in state.customers.items() for x in customer.reservations}
    assert open_holds == set(model.holds)


@settings(max_examples=100, deadline=None)
@given(histories())
def test_replaying_the_same_commands_gives_the_same_ledger(history: list[Command]) -> None:
    state_a, decisions_a = run(history)
    state_b, decisions_b = run(history)
    assert decisions_a == decisions_b
    assert state_a == state_b


def test_replayed_debit_returns_original_402() -> None:
    state, decisions = run(
        [
            CreateCustomer("c", "1"),
            OpenBalance("c", "b", "USD", "2"),
            MoneyCommand("debit", "c", "b", "r", "5.00", "USD", "x"),
            MoneyCommand("deposit", "c", "b", "d", "50.00", "USD", "x"),
            MoneyCommand("debit", "c", "b", "r", "5.00", "USD", "x"),
        ]
    )
    assert decisions[2].outcome.status == 402
    assert decisions[4].outcome == decisions[2].outcome.__class__(
        402, decisions[2].outcome.body, replayed=True
    )
    assert state.customers["c"].balances["b"].balance == 5000


def test_debit_posts_from_customer_to_trading_shard() -> None:
    state, decisions = run(
        [
            CreateCustomer("c", "1"),
            OpenBalance("c", "b", "USD", "2"),
            MoneyCommand("deposit", "c", "b", "d", "10.00", "USD", "x"),
            MoneyCommand("debit", "c", "b", "r", "2.00", "USD", "x"),
        ]
    )
    entry = decisions[3].effects[0]
    assert isinstance(entry, JournalEntry)
    customer_posting, trading_posting = entry.postings
    assert (customer_posting.amount, customer_posting.balance_after, customer_posting.seq) == (
        -200,
        800,
        2,
    )
    assert trading_posting.account_id == state.system[("trading", "USD")].account_id
    assert (trading_posting.amount, trading_posting.seq) == (200, 1)
    assert orjson.loads(decisions[3].outcome.body)["balance_current_amount"] == "8.00"
