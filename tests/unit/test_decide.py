"""The ledger's decision function against a simple reference model (no I/O).

Random command sequences, with duplicates, retries and conflicting reuse of request ids, are fed
both to ``decide``/``apply`` and to a deliberately naive model; every outcome must agree, customer
balances never go negative, every currency sums to zero, and replaying the same commands from
scratch yields the same ledger, byte for byte.
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
    MoneyCommand,
    OpenBalance,
    SetBlocked,
    fingerprint,
    idempotency_key,
)
from ledger_core.decide import Decision, JournalEntry, StoredOutcome, apply, decide
from ledger_core.money import parse_amount
from ledger_core.state import PartitionState

pytestmark = pytest.mark.unit

CUSTOMERS = ["ann", "ben"]
BALANCES = {"usd": "USD", "btc": "BTC"}
REQUEST_IDS = ["r1", "r2", "r3", "r4", "r5"]


@dataclass
class Model:
    """What the ledger should do, written as plainly as possible."""

    customers: dict[str, bool] = field(default_factory=dict)
    balances: dict[tuple[str, str], tuple[str, int]] = field(default_factory=dict)
    system: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    seen: dict[tuple[str, str, str], tuple[bytes, int]] = field(default_factory=dict)

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
        if amount + delta < 0:
            return 402
        self.balances[(cmd.customer_id, cmd.balance_id)] = (currency, amount + delta)
        self.system[currency] -= delta
        return 201


amounts = st.sampled_from(["0.01", "1", "2.50", "10", "0.00000001", "0.5"])


@st.composite
def commands(draw: st.DrawFn) -> Command:
    customer = draw(st.sampled_from(CUSTOMERS))
    request_id = draw(st.sampled_from(REQUEST_IDS))
    kind = draw(st.sampled_from(["create", "open", "money", "money", "money", "block"]))
    if kind == "create":
        return CreateCustomer(customer, request_id)
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
    """Command sequences with retries: sometimes the previous command again, exactly."""
    out: list[Command] = []
    for _ in range(draw(st.integers(min_value=1, max_value=60))):
        if out and draw(st.integers(0, 4)) == 0:
            out.append(draw(st.sampled_from(out)))
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
        assert all(total == 0 for total in totals(state).values())
        for entry in (e for e in decision.effects if isinstance(e, JournalEntry)):
            assert sum(p.amount for p in entry.postings) == 0

    for (customer, balance), (_, amount) in model.balances.items():
        assert state.customers[customer].balances[balance].balance == amount


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
