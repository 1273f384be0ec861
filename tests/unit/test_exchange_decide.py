"""Exchanges in the pure core: reserve, settle, void, the available amount, and their facts."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import jsonschema
import orjson
import pytest

from ledger_core.commands import (
    Command,
    CreateCustomer,
    Envelope,
    ExchangeReserve,
    ExchangeSettle,
    ExchangeVoid,
    MoneyCommand,
    OpenBalance,
    SetBlocked,
    decode,
    encode,
    fingerprint,
    idempotency_key,
)
from ledger_core.decide import (
    Decision,
    ReservationMade,
    ReservationReleased,
    StoredOutcome,
    apply,
    decide,
)
from ledger_core.facts import facts_for
from ledger_core.state import PartitionState
from projection.model import ReadModel

pytestmark = pytest.mark.unit

SCHEMA = orjson.loads(
    (Path(__file__).parents[2] / "docs" / "events" / "ledger-event-v1.schema.json").read_bytes()
)


class Ledger:
    """decide + apply + the idempotency table, as the writer runs them (no I/O)."""

    def __init__(self) -> None:
        self.state = PartitionState(partition=2)
        self.stored: dict[tuple[str, str, str], StoredOutcome] = {}
        self.facts: list[bytes] = []

    def send(self, cmd: Command) -> Decision:
        key = idempotency_key(cmd)
        decision = decide(self.state, cmd, self.stored.get(key))
        apply(self.state, decision)
        if decision.record:
            self.stored[key] = StoredOutcome(
                fingerprint(cmd), decision.outcome.status, decision.outcome.body
            )
        self.facts += [f.payload for f in facts_for(decision, 2, 1_700_000_000_000)]
        return decision

    def customer(self, usdt: str = "100", customer: str = "ann") -> None:
        assert self.send(CreateCustomer(customer, "c")).outcome.status == 201
        for balance, currency in (("usdt", "USDT"), ("btc", "BTC")):
            assert self.send(OpenBalance(customer, balance, currency, "o")).outcome.status == 201
        assert self.send(deposit(customer, usdt)).outcome.status == 201

    def account(self, balance: str, customer: str = "ann"):  # type: ignore[no-untyped-def]
        return self.state.customers[customer].balances[balance]

    def totals(self) -> dict[str, int]:
        sums: dict[str, int] = defaultdict(int)
        for customer in self.state.customers.values():
            for account in customer.balances.values():
                sums[account.currency] += account.balance
        for account in self.state.system.values():
            sums[account.currency] += account.balance
        return dict(sums)


def deposit(customer: str, amount: str, request_id: str = "d") -> MoneyCommand:
    return MoneyCommand("deposit", customer, "usdt", request_id, amount, "USDT", "funding")


def reserve(exchange_id: str = "x1", amount: str = "60", customer: str = "ann") -> ExchangeReserve:
    return ExchangeReserve(
        customer, exchange_id, "usdt", "btc", amount, "USDT", "BTC", "USDT/TRC20 -> BTC/BTC"
    )


def settle(
    exchange_id: str = "x1", paid: str = "0.00119", customer: str = "ann", **amounts: str
) -> ExchangeSettle:
    return ExchangeSettle(
        customer,
        exchange_id,
        "order-1",
        "BTC",
        paid,
        amounts.get("markup", "0.00000007"),
        amounts.get("affiliate", "0.00000024"),
        amounts.get("rounding", "0.00000001"),
    )


def body(decision: Decision) -> dict[str, object]:
    result: dict[str, object] = orjson.loads(decision.outcome.body)
    return result


@pytest.fixture
def ledger() -> Ledger:
    ledger = Ledger()
    ledger.customer()
    return ledger


def test_a_reservation_lowers_the_available_amount_at_once_and_not_the_balance(
    ledger: Ledger,
) -> None:
    decision = ledger.send(reserve(amount="60"))
    assert decision.outcome.status == 201
    assert body(decision)["source_available_after"] == "40.000000"
    usdt = ledger.account("usdt")
    assert (usdt.balance, usdt.reserved, usdt.available, usdt.holds) == (
        100_000000,
        60_000000,
        40_000000,
        1,
    )
    assert [type(e) for e in decision.effects] == [ReservationMade]  # no posting yet
    assert ledger.totals() == {"USDT": 0, "BTC": 0}


def test_a_debit_may_spend_only_the_available_amount(ledger: Ledger) -> None:
    ledger.send(reserve(amount="60"))
    refused = ledger.send(
        MoneyCommand("withdrawal", "ann", "usdt", "w1", "40.000001", "USDT", "out")
    )
    allowed = ledger.send(MoneyCommand("withdrawal", "ann", "usdt", "w2", "40", "USDT", "out"))
    assert refused.outcome.status == 402 and not refused.effects
    assert allowed.outcome.status == 201
    # Quadcode's debit answer carries the available amount, as GET balance does.
    assert body(allowed)["balance_current_amount"] == "0.000000"
    assert ledger.account("usdt").balance == 60_000000


def test_two_exchanges_racing_for_the_same_funds_one_is_refused(ledger: Ledger) -> None:
    first = ledger.send(reserve("x1", "70"))
    second = ledger.send(reserve("x2", "70"))
    assert first.outcome.status == 201
    assert (second.outcome.status, second.outcome.error) == (402, "insufficient_funds")
    assert second.record and not second.effects
    assert list(ledger.state.customers["ann"].reservations) == ["x1"]


def test_settle_posts_both_legs_with_the_rounding_remainder_on_the_rounding_account(
    ledger: Ledger,
) -> None:
    ledger.send(reserve(amount="60"))
    decision = ledger.send(
        settle(paid="0.00119", markup="0.00000007", affiliate="0.00000024", rounding="0.00000002")
    )
    assert decision.outcome.status == 201
    (released,) = decision.effects
    assert isinstance(released, ReservationReleased) and released.entry is not None
    entry = released.entry
    assert (entry.kind, entry.order_id, entry.request_id) == ("exchange", "order-1", "x1")
    assert entry.exchange is not None and entry.exchange.target_currency == "BTC"
    legs = {(p.balance_id or p.system_kind, p.currency): p.amount for p in entry.postings}
    assert legs == {
        ("usdt", "USDT"): -60_000000,
        ("exchange_clearing", "USDT"): 60_000000,
        ("exchange_clearing", "BTC"): -(119000 + 7 + 24 + 2),
        ("btc", "BTC"): 119000,
        ("markup_revenue", "BTC"): 7,
        ("affiliate_margin", "BTC"): 24,
        ("rounding", "BTC"): 2,
    }
    for currency in ("USDT", "BTC"):
        assert sum(p.amount for p in entry.postings if p.currency == currency) == 0
    usdt, btc = ledger.account("usdt"), ledger.account("btc")
    assert (usdt.balance, usdt.reserved, usdt.seq, usdt.holds) == (40_000000, 0, 2, 2)
    assert (btc.balance, btc.seq) == (119000, 1)
    assert ledger.state.system[("rounding", "BTC")].balance == 2
    assert ledger.totals() == {"USDT": 0, "BTC": 0}
    assert decision.entry_id == entry.entry_id
    assert body(decision)["target_available_after"] == "0.00119000"


def test_zero_margins_are_left_out_of_the_entry(ledger: Ledger) -> None:
    ledger.send(reserve(amount="60"))
    decision = ledger.send(settle(markup="0", affiliate="0", rounding="0"))
    (released,) = decision.effects
    assert isinstance(released, ReservationReleased) and released.entry is not None
    assert len(released.entry.postings) == 4
    assert ledger.totals() == {"USDT": 0, "BTC": 0}


def test_void_releases_the_reservation_and_moves_nothing(ledger: Ledger) -> None:
    ledger.send(reserve(amount="60"))
    decision = ledger.send(ExchangeVoid("ann", "x1", "order-1", "refunded by Swapgate"))
    assert decision.outcome.status == 200 and decision.entry_id is None
    usdt = ledger.account("usdt")
    assert (usdt.balance, usdt.reserved, usdt.seq, usdt.holds) == (100_000000, 0, 1, 2)
    assert ledger.state.customers["ann"].reservations == {}
    assert not ledger.state.system.get(("exchange_clearing", "USDT"))


@pytest.mark.parametrize(
    "second",
    [ExchangeVoid("ann", "x1", "order-1", "late"), settle(paid="0.5")],
    ids=["void-after-settle", "settle-again-with-other-amounts"],
)
def test_a_finished_reservation_can_not_be_released_again(ledger: Ledger, second: Command) -> None:
    ledger.send(reserve(amount="60"))
    assert ledger.send(settle()).outcome.status == 201
    refused = ledger.send(second)
    assert refused.outcome.status == 409 and not refused.effects
    assert refused.outcome.error in ("exchange_not_open", "request_id_reused")
    assert ledger.account("btc").balance == 119000


def test_settle_or_void_of_an_unknown_exchange_is_refused(ledger: Ledger) -> None:
    for cmd in (settle("nope"), ExchangeVoid("ann", "nope", "", "x")):
        decision = ledger.send(cmd)
        assert (decision.outcome.status, decision.outcome.error) == (409, "exchange_not_open")
        assert decision.record and not decision.effects


def test_exchange_commands_replay_byte_for_byte(ledger: Ledger) -> None:
    first = [ledger.send(reserve()), ledger.send(settle())]
    again = [ledger.send(reserve()), ledger.send(settle())]
    for original, replay in zip(first, again, strict=True):
        assert replay.outcome.replayed and replay.outcome.body == original.outcome.body
        assert not replay.effects
    # Same exchange id, different amount: refused, nothing written.
    reused = ledger.send(reserve(amount="1"))
    assert (reused.outcome.status, reused.outcome.error) == (409, "request_id_reused")
    assert ledger.account("usdt").balance == 40_000000


def test_a_blocked_customer_can_not_start_an_exchange_but_one_started_still_settles(
    ledger: Ledger,
) -> None:
    ledger.send(reserve("x1", "10"))
    ledger.send(SetBlocked("ann", True, "b"))
    assert ledger.send(reserve("x2", "10")).outcome.status == 451
    assert ledger.send(settle("x1")).outcome.status == 201


@pytest.mark.parametrize(
    ("cmd", "code", "status"),
    [
        (
            ExchangeReserve("ann", "x", "usdt", "usdt", "1", "USDT", "USDT", ""),
            "invalid_field",
            400,
        ),
        (
            ExchangeReserve("ann", "x", "usdt", "btc", "1", "BTC", "BTC", ""),
            "currency_mismatch",
            400,
        ),
        (
            ExchangeReserve("ann", "x", "usdt", "btc", "1", "USDT", "ETH", ""),
            "currency_mismatch",
            400,
        ),
        (
            ExchangeReserve("ann", "x", "usdt", "btc", "0.0000001", "USDT", "BTC", ""),
            "invalid_amount",
            400,
        ),
        (
            ExchangeReserve("ann", "x", "usdt", "eth", "1", "USDT", "ETH", ""),
            "balance_not_found",
            404,
        ),
        (
            ExchangeReserve("bob", "x", "usdt", "btc", "1", "USDT", "BTC", ""),
            "customer_not_found",
            404,
        ),
        (
            ExchangeReserve("ann", "x", "usdt", "btc", "100.000001", "USDT", "BTC", ""),
            "insufficient_funds",
            402,
        ),
    ],
)
def test_bad_reservations_are_refused_and_change_nothing(
    ledger: Ledger, cmd: ExchangeReserve, code: str, status: int
) -> None:
    decision = ledger.send(cmd)
    assert (decision.outcome.status, decision.outcome.error) == (status, code)
    assert not decision.effects and decision.record == (status != 400)
    assert ledger.account("usdt").reserved == 0


def test_bad_settle_amounts_are_refused_without_releasing(ledger: Ledger) -> None:
    ledger.send(reserve())
    for cmd in (
        settle(paid="0.000000001"),
        settle(paid="-1"),
        ExchangeSettle("ann", "x1", "o", "ETH", "1", "0", "0", "0"),
    ):
        decision = ledger.send(cmd)
        assert decision.outcome.status == 400 and not decision.record and not decision.effects
    assert "x1" in ledger.state.customers["ann"].reservations


def test_exchange_commands_survive_the_wire() -> None:
    for cmd in (reserve(), settle(), ExchangeVoid("ann", "x1", "", "no order")):
        assert decode(encode(cmd, Envelope("id", 3))) == (cmd, Envelope("id", 3))


def test_exchange_facts_match_the_schema_and_drive_the_read_model(ledger: Ledger) -> None:
    ledger.send(reserve("x1", "60"))
    ledger.send(reserve("x2", "30"))
    ledger.send(settle("x1"))
    ledger.send(ExchangeVoid("ann", "x2", "order-2", "refunded"))
    validator = jsonschema.Draft202012Validator(SCHEMA, format_checker=jsonschema.FormatChecker())
    for payload in ledger.facts:
        validator.validate(orjson.loads(payload))
    types = [orjson.loads(p)["type"] for p in ledger.facts]
    assert types[-4:] == [
        "exchange.reserved",
        "exchange.reserved",
        "exchange.settled",
        "exchange.voided",
    ]
    settled = orjson.loads(ledger.facts[-2])
    assert settled["order_id"] == "order-1" and settled["entry_id"]
    assert [b["balance_id"] for b in settled["balances"]] == ["usdt", "btc"]

    # In order, duplicated, and with an older copy replayed after the newer facts: one result.
    once, twice = ReadModel(), ReadModel()
    for payload in ledger.facts:
        once.apply(payload)
    for payload in ledger.facts + ledger.facts[::-1] + ledger.facts:
        twice.apply(payload)
    assert once == twice
    assert (once.balances[("ann", "usdt")].amount, once.balances[("ann", "usdt")].reserved) == (
        40_000000,
        0,
    )
    assert once.balances[("ann", "btc")].amount == 119000
    assert orjson.loads(once.balance_body("ann", "usdt")[1])["amount"] == "40.000000"


def test_the_read_model_answers_the_available_amount_while_funds_are_held(ledger: Ledger) -> None:
    ledger.send(reserve("x1", "60"))
    model = ReadModel()
    for payload in ledger.facts:
        model.apply(payload)
    assert orjson.loads(model.balance_body("ann", "usdt")[1])["amount"] == "40.000000"


def test_replays_whose_stored_outcome_is_not_in_memory_can_not_hold_or_post_twice(
    ledger: Ledger,
) -> None:
    """The writer decides a request it has no outcome for in memory as new, and relies on two
    nets: answers that store nothing are checked against Postgres, and a stored answer trips the
    idempotency table's primary key (the batch is then decided again, looked up)."""
    ledger.send(reserve("x1", "60"))
    # The reserve again, its outcome evicted: no second hold, and an answer that is verified.
    again = decide(ledger.state, reserve("x1", "60"), None)
    assert (again.outcome.status, again.record, again.effects) == (409, False, ())
    ledger.send(settle("x1"))
    # The settle again: refused and recorded, which the stored 201's primary key catches.
    again = decide(ledger.state, settle("x1"), None)
    assert (again.outcome.status, again.record, again.effects) == (409, True, ())
    assert again.outcome.error == "exchange_not_open"
