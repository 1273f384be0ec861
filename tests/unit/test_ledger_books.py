"""The accounting consumer's pure core: facts to general-ledger lines, each booked once, in each
balance's order, never past a gap (``libs/ledger_books``)."""

from __future__ import annotations

import random
from collections import defaultdict

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger_books.books import Books, Delivered, Verdict, judge
from ledger_books.reading import ReadFact, UnreadableFact, read_fact
from ledger_core.commands import (
    Command,
    CreateCustomer,
    ExchangeReserve,
    ExchangeSettle,
    ExchangeVoid,
    MoneyCommand,
    OpenBalance,
    SetBlocked,
)
from ledger_core.decide import apply, decide
from ledger_core.facts import facts_for
from ledger_core.state import PartitionState

pytestmark = pytest.mark.unit

PARTITION = 4


def history() -> list[Command]:
    """Every fact type: customers, balances, callbacks, deposits, withdrawals, exchanges."""
    return [
        CreateCustomer("ann", "1"),
        OpenBalance("ann", "usdt", "USDT", "2"),
        OpenBalance("ann", "btc", "BTC", "3"),
        MoneyCommand("deposit", "ann", "usdt", "4", "100", "USDT", "in"),
        MoneyCommand("debit", "ann", "usdt", "5", "10", "USDT", "stake"),
        MoneyCommand("credit", "ann", "usdt", "6", "18.5", "USDT", "payout"),
        CreateCustomer("bob", "7"),
        OpenBalance("bob", "usd", "USD", "8"),
        MoneyCommand("deposit", "bob", "usd", "9", "50", "USD", "in"),
        ExchangeReserve("ann", "x1", "usdt", "btc", "60", "USDT", "BTC", "swap"),
        MoneyCommand("withdrawal", "bob", "usd", "10", "20", "USD", "out"),
        ExchangeSettle(
            "ann", "x1", "o1", "BTC", "0.00119", "0.00000007", "0.00000024", "0.00000001"
        ),
        ExchangeReserve("ann", "x2", "usdt", "btc", "5", "USDT", "BTC", "swap"),
        ExchangeVoid("ann", "x2", "o2", "refunded"),
        SetBlocked("ann", True, "11"),
        MoneyCommand("withdrawal", "ann", "usdt", "12", "1", "USDT", "out"),
    ]


def run_ledger() -> tuple[list[bytes], PartitionState]:
    state = PartitionState(PARTITION)
    facts: list[bytes] = []
    for i, cmd in enumerate(history()):
        decision = decide(state, cmd, None)
        assert decision.outcome.status in (200, 201), (cmd, decision.outcome.body)
        apply(state, decision)
        facts += [f.payload for f in facts_for(decision, PARTITION, 1_767_225_600_000 + i)]
    return facts, state


FACTS, STATE = run_ledger()


def ledger_balances() -> dict[str, int]:
    """The reference: every account's balance in the ledger's own state (non-zero ones)."""
    out = {}
    for customer in STATE.customers.values():
        for account in customer.balances.values():
            out[str(account.account_id)] = account.balance
    for account in STATE.system.values():
        out[str(account.account_id)] = account.balance
    return {k: v for k, v in out.items() if v}


def delivered(payloads: list[bytes]) -> list[Delivered]:
    out = []
    for offset, payload in enumerate(payloads):
        fact = read_fact(payload)
        assert fact is not None
        out.append(Delivered(PARTITION, offset, fact))
    return out


def book_all(books: Books, stream: list[Delivered]) -> list[Delivered]:
    booked: list[Delivered] = []
    for d in stream:
        booked += books.offer(d).booked
    return booked


def balances_of(booked: list[Delivered]) -> dict[str, int]:
    sums: dict[str, int] = defaultdict(int)
    for d in booked:
        for line in d.fact.lines:
            sums[line.account_id] += line.amount
    return {k: v for k, v in sums.items() if v}


def of_type(kind: str) -> list[ReadFact]:
    return [f for f in (read_fact(p) for p in FACTS) if f is not None and f.type == kind]


def test_a_customer_debit_is_a_debit_of_the_customer_and_a_credit_of_trading() -> None:
    stake = next(f for f in of_type("entry.posted") if f.kind == "debit")
    assert [(x.account, x.side, x.amount, x.currency) for x in stake.lines] == [
        ("customer", "debit", -10_000_000, "USDT"),
        ("trading", "credit", 10_000_000, "USDT"),
    ]


def test_a_deposit_credits_the_customer_and_debits_settlement() -> None:
    deposit = next(f for f in of_type("entry.posted") if f.reference == "9")
    assert [(x.account, x.side, x.amount) for x in deposit.lines] == [
        ("customer", "credit", 5000),
        ("settlement", "debit", -5000),
    ]
    assert deposit.lines[0].customer_id == "bob" and deposit.lines[0].balance_id == "usd"


def test_a_settled_exchange_books_both_currencies_and_the_margins() -> None:
    (settled,) = of_type("exchange.settled")
    assert sorted((x.currency, x.account, x.side, x.amount) for x in settled.lines) == [
        ("BTC", "affiliate_margin", "credit", 24),
        ("BTC", "customer", "credit", 119_000),
        ("BTC", "exchange_clearing", "debit", -119_032),
        ("BTC", "markup_revenue", "credit", 7),
        ("BTC", "rounding", "credit", 1),
        ("USDT", "customer", "debit", -60_000_000),
        ("USDT", "exchange_clearing", "credit", 60_000_000),
    ]


@pytest.mark.parametrize(
    "kind", ["customer.created", "balance.opened", "exchange.reserved", "exchange.voided"]
)
def test_facts_that_move_no_money_book_no_lines(kind: str) -> None:
    assert all(f.lines == () for f in of_type(kind))


def test_booking_every_fact_in_order_gives_the_ledgers_balances() -> None:
    books = Books()
    booked = book_all(books, delivered(FACTS))
    assert len(booked) == len(FACTS)
    assert balances_of(booked) == ledger_balances()
    assert books.parked_count == 0


def test_the_same_facts_twice_are_booked_once() -> None:
    books = Books()
    stream = delivered(FACTS + FACTS)
    outcomes = [books.offer(d) for d in stream]
    assert sum(len(o.booked) for o in outcomes) == len(FACTS)
    assert sum(o.duplicate for o in outcomes) == len(FACTS)
    assert balances_of([b for o in outcomes for b in o.booked]) == ledger_balances()


def test_a_fact_after_a_gap_is_parked_until_the_missing_fact_arrives() -> None:
    stream = delivered(FACTS)
    missing = next(i for i, d in enumerate(stream) if d.fact.reference == "5")  # ann's stake
    books = Books()
    booked = book_all(books, stream[:missing] + stream[missing + 1 :])
    # Ann's later facts wait; bob's are booked.
    assert books.parked_count > 0
    assert ("ann", "usdt") in books.balances_behind_gaps()
    assert ("bob", "usd") not in books.balances_behind_gaps()
    assert {d.fact.customer_id for d in booked if d.offset > missing} >= {"bob"}
    assert all(
        d.offset < missing
        for d in booked
        if any(c.customer_id == "ann" and c.counter == "balance_seq" for c in d.fact.claims)
    ), "no posting of ann's booked past the gap (holds book nothing and follow their own counter)"
    waiting = books.parked_count
    # The missing fact arrives again (a republish, at a later offset): all heal, in order.
    late = Delivered(PARTITION, len(stream), stream[missing].fact)
    healed = books.offer(late)
    assert healed.booked[0].fact.event_id == stream[missing].fact.event_id
    assert healed.released == waiting == len(healed.booked) - 1
    assert books.parked_count == 0
    assert balances_of(booked + healed.booked) == ledger_balances()


def test_the_committable_position_stops_at_the_first_parked_fact() -> None:
    stream = delivered(FACTS)
    missing = next(i for i, d in enumerate(stream) if d.fact.reference == "5")
    books = Books()
    book_all(books, stream[:missing] + stream[missing + 1 :])
    first_parked = books.parked[PARTITION][0].offset
    assert first_parked == missing + 1
    assert books.committable(PARTITION, len(stream)) == first_parked
    assert books.committable(PARTITION + 1, 99) == 99


def test_a_restart_reads_the_parked_facts_again_and_books_nothing_twice() -> None:
    stream = delivered(FACTS)
    missing = next(i for i, d in enumerate(stream) if d.fact.reference == "5")
    gapped = (
        stream[:missing]
        + [  # the topic as the consumer saw it: one fact lost
            Delivered(PARTITION, d.offset, d.fact) for d in stream[missing + 1 :]
        ]
    )
    before = Books()
    booked = book_all(before, gapped)
    resume_at = before.committable(PARTITION, len(stream))
    # What a restart has: the stored positions, not the parked facts.
    after = Books(positions=before.positions, seen=before.seen)
    booked += book_all(after, [d for d in gapped if d.offset >= resume_at])
    assert after.parked_count == before.parked_count  # parked again, none booked twice
    booked += after.offer(Delivered(PARTITION, len(stream), stream[missing].fact)).booked
    assert len({d.fact.event_id for d in booked}) == len(booked) == len(FACTS)
    assert balances_of(booked) == ledger_balances()


def test_facts_of_a_balance_out_of_order_are_booked_in_sequence_order() -> None:
    stream = delivered(FACTS)
    ann = [i for i, d in enumerate(stream) if d.fact.reference in ("5", "6")]  # stake, payout
    i, j = ann
    swapped = list(stream)
    swapped[i], swapped[j] = stream[j], stream[i]
    books = Books()
    booked = book_all(books, swapped)
    order = [d.fact.reference for d in booked if d.fact.reference in ("5", "6")]
    assert order == ["5", "6"]
    assert balances_of(booked) == ledger_balances()


@settings(max_examples=60, deadline=None)
@given(st.randoms(use_true_random=False), st.integers(min_value=0, max_value=len(FACTS)))
def test_any_arrival_order_with_duplicates_ends_in_the_ledgers_balances(
    rnd: random.Random, duplicates: int
) -> None:
    payloads = FACTS + [rnd.choice(FACTS) for _ in range(duplicates)]
    rnd.shuffle(payloads)
    books = Books()
    booked = book_all(books, delivered(payloads))
    assert books.parked_count == 0
    assert sorted(d.fact.event_id for d in booked) == sorted(
        orjson.loads(p)["event_id"] for p in FACTS
    )
    assert balances_of(booked) == ledger_balances()


def test_a_fact_that_moves_a_balance_it_never_saw_opened_is_parked() -> None:
    deposit = next(f for f in of_type("entry.posted") if f.reference == "4")
    assert judge(deposit, {}, set()) is Verdict.PARK


def test_a_customer_fact_is_a_duplicate_by_its_event_id() -> None:
    (created, *_) = of_type("customer.created")
    books = Books()
    assert books.offer(Delivered(0, 0, created)).booked
    assert books.offer(Delivered(0, 1, created)).duplicate


def test_unknown_types_and_schema_versions_are_ignored() -> None:
    body = orjson.loads(FACTS[0])
    assert read_fact({**body, "type": "customer.renamed"}) is None
    assert read_fact({**body, "schema": "ledger.event/v2"}) is None


def test_a_fact_whose_postings_do_not_balance_is_unreadable() -> None:
    raw = next(p for p in FACTS if orjson.loads(p)["type"] == "entry.posted")
    body = orjson.loads(raw)
    body["postings"][1]["amount"] = "-1.000000"
    with pytest.raises(UnreadableFact):
        read_fact(body)
    with pytest.raises(UnreadableFact):
        read_fact(b"[]")
    with pytest.raises(UnreadableFact):
        read_fact({**orjson.loads(raw), "kind": "gift"})
