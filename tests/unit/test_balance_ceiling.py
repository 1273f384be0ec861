"""The per-currency ceiling of customer balances, as ``decide`` enforces it (no I/O).

An amount above the ceiling is refused by the request parser already; these tests cover the
credits, deposits and settlements that are each acceptable alone but would lift a balance above
it, so that no balance_after can leave the ledger's NUMERIC(40, 0) columns.
"""

from __future__ import annotations

import orjson
import pytest

from ledger_core.commands import (
    Command,
    CreateCustomer,
    ExchangeReserve,
    ExchangeSettle,
    MoneyCommand,
    MoneyKind,
    OpenBalance,
    fingerprint,
)
from ledger_core.decide import Decision, StoredOutcome, apply, decide
from ledger_core.money import ceiling, format_amount
from ledger_core.state import PartitionState

pytestmark = pytest.mark.unit

TOP_USD = format_amount(ceiling("USD"), "USD")  # 999999999999999.99


class Ledger:
    """``decide`` then ``apply``, as the writer runs them (stored outcomes are not needed here:
    every request id is new)."""

    def __init__(self) -> None:
        self.state = PartitionState(partition=0)
        self.sent = 0
        for cmd in (
            CreateCustomer("ann", "c"),
            OpenBalance("ann", "usd", "USD", "o1"),
            OpenBalance("ann", "btc", "BTC", "o2"),
        ):
            assert self.send(cmd).outcome.status == 201

    def send(self, cmd: Command) -> Decision:
        decision = decide(self.state, cmd, None)
        apply(self.state, decision)
        return decision

    def move(
        self, kind: MoneyKind, amount: str, balance: str = "usd", currency: str = "USD"
    ) -> Decision:
        self.sent += 1
        return self.send(
            MoneyCommand(kind, "ann", balance, f"r{self.sent}", amount, currency, "test")
        )

    def balance(self, balance: str = "usd") -> int:
        return self.state.customers["ann"].balances[balance].balance


def error(decision: Decision) -> str:
    code: str = orjson.loads(decision.outcome.body)["error"]
    return code


@pytest.mark.parametrize("kind", ["credit", "deposit"])
def test_a_balance_may_reach_its_ceiling_but_not_pass_it(kind: MoneyKind) -> None:
    ledger = Ledger()
    assert ledger.move("deposit", TOP_USD).outcome.status == 201
    assert ledger.balance() == ceiling("USD")

    refused = ledger.move(kind, "0.01")

    assert (refused.outcome.status, error(refused)) == (400, "amount_too_large")
    assert refused.record and not refused.effects
    assert ledger.balance() == ceiling("USD")


def test_a_credit_refused_for_the_ceiling_stays_refused_when_retried() -> None:
    ledger = Ledger()
    ledger.move("deposit", TOP_USD)
    credit = MoneyCommand("credit", "ann", "usd", "payout", "5.00", "USD", "option closed")
    refused = ledger.send(credit)
    assert error(refused) == "amount_too_large" and refused.record
    stored = StoredOutcome(fingerprint(credit), refused.outcome.status, refused.outcome.body)
    assert ledger.move("debit", "10.00").outcome.status == 201

    again = decide(ledger.state, credit, stored)

    assert (again.outcome.status, again.outcome.body) == (400, refused.outcome.body)
    assert not again.effects
    # A new request for the same amount passes now.
    assert ledger.move("credit", "5.00").outcome.status == 201


def test_debits_and_withdrawals_are_never_refused_for_the_ceiling() -> None:
    ledger = Ledger()
    ledger.move("deposit", TOP_USD)
    assert ledger.move("debit", "0.01").outcome.status == 201
    assert ledger.move("withdrawal", "0.01").outcome.status == 201


def test_a_settlement_that_would_lift_the_target_above_its_ceiling_is_refused() -> None:
    ledger = Ledger()
    ledger.move("deposit", "100.00")
    ledger.move("deposit", format_amount(ceiling("BTC"), "BTC"), "btc", "BTC")
    reserve = ExchangeReserve("ann", "x1", "usd", "btc", "60.00", "USD", "BTC", "USD -> BTC")
    assert ledger.send(reserve).outcome.status == 201
    settle = ExchangeSettle("ann", "x1", "order-1", "BTC", "0.001", "0", "0", "0")

    refused = ledger.send(settle)

    assert (refused.outcome.status, error(refused)) == (400, "amount_too_large")
    assert not refused.effects
    assert "x1" in ledger.state.customers["ann"].reservations  # still held, for a person to look
    assert ledger.balance("btc") == ceiling("BTC")
