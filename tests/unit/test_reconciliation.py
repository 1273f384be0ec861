"""The reconciler's comparisons, on rows made by hand: each finds the first thing that differs,
and tells a lag (normal) from a difference."""

from __future__ import annotations

import dataclasses

import pytest

from reconciler.comparison import (
    BookedAccount,
    KindTotal,
    OutboxPosition,
    ProjectedBalance,
    StallWatch,
    StoredOffset,
    UnpublishedWatch,
    books_difference,
    compare_projection,
    first_missing_fact,
    offsets_difference,
    trial_balance_difference,
)

pytestmark = pytest.mark.unit


def balance(
    customer: str = "c1", balance_id: str = "c1_USD", **changes: object
) -> ProjectedBalance:
    """A projected balance equal to the ledger's at seq 3 (ledger at seq 3 too)."""
    row = ProjectedBalance(
        customer_id=customer,
        balance_id=balance_id,
        projected=True,
        currency="USD",
        amount=700,
        seq=3,
        reserved=0,
        hold_seq=0,
        account_id=f"acc-{balance_id}",
        ledger_currency="USD",
        ledger_seq=3,
        ledger_amount_at_seq=700,
        ledger_holds=0,
        ledger_held=0,
    )
    return dataclasses.replace(row, **changes)  # type: ignore[arg-type]


def booked(account_id: str = "a1", **changes: object) -> BookedAccount:
    """A customer account booked to seq 2, equal to the ledger's balance after posting 2."""
    row = BookedAccount(
        account_id=account_id,
        account="customer",
        customer_id="c1",
        balance_id="c1_USD",
        currency="USD",
        balance=500,
        booked_seq=2,
        ledger_known=True,
        ledger_seq=5,
        ledger_amount_at_seq=500,
    )
    return dataclasses.replace(row, **changes)  # type: ignore[arg-type]


def test_trial_balance_that_sums_to_zero_per_currency_has_no_difference() -> None:
    totals = [
        KindTotal("USD", "customer", 900),
        KindTotal("USD", "trading", -400),
        KindTotal("USD", "settlement", -500),
        KindTotal("BTC", "customer", 0),
    ]
    assert trial_balance_difference(totals) is None


def test_trial_balance_names_the_first_currency_that_does_not_sum_to_zero_with_its_kinds() -> None:
    totals = [
        KindTotal("USD", "customer", 901),
        KindTotal("USD", "settlement", -900),
        KindTotal("EUR", "customer", 5),
        KindTotal("EUR", "trading", -5),
    ]
    d = trial_balance_difference(totals)
    assert d is not None
    assert d.as_dict() == {
        "reason": "currency_does_not_sum_to_zero",
        "currency": "USD",
        "kind_customer": "901",
        "kind_settlement": "-900",
        "expected": "0",
        "found": "1",
    }


def test_a_projection_behind_the_ledger_is_a_lag_not_a_difference() -> None:
    behind = balance(seq=2, amount=400, ledger_seq=5, ledger_amount_at_seq=400)
    unseen = balance("c2", "c2_USD", projected=False, seq=0, amount=0, ledger_seq=1)
    result = compare_projection([behind, unseen, balance("c3", "c3_USD")])
    assert result.difference is None
    assert result.max_lag == 3
    assert result.behind == {("c1", "c1_USD"): 2, ("c2", "c2_USD"): -1}


def test_a_drifted_projection_balance_is_compared_at_its_own_seq_and_the_first_one_named() -> None:
    rows = [
        balance("c9", "c9_USD", amount=1),
        balance("c2", "c2_USD", seq=2, amount=401, ledger_seq=4, ledger_amount_at_seq=400),
        balance("c1", "c1_USD"),
    ]
    d = compare_projection(rows).difference
    assert d is not None
    assert d.as_dict() == {
        "reason": "amount_differs",
        "customer_id": "c2",
        "balance_id": "c2_USD",
        "account_id": "acc-c2_USD",
        "seq": 2,
        "expected": "400",
        "found": "401",
    }


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"seq": 4, "ledger_amount_at_seq": None}, "projection_ahead_of_ledger"),
        ({"account_id": None, "ledger_currency": None, "ledger_seq": 0}, "balance_not_in_ledger"),
        ({"currency": "EUR"}, "currency_differs"),
        ({"seq": 0, "amount": 5}, "amount_differs"),
        ({"hold_seq": 3, "ledger_holds": 2}, "holds_ahead_of_ledger"),
        ({"hold_seq": 2, "ledger_holds": 2, "reserved": 10, "ledger_held": 20}, "reserved_differs"),
        ({"hold_seq": 0, "reserved": 10}, "reserved_differs"),
    ],
)
def test_a_projection_that_cannot_be_the_ledger_at_any_position_differs(
    changes: dict[str, object], reason: str
) -> None:
    d = compare_projection([balance(**changes)]).difference
    assert d is not None and d.reason == reason


def test_reserved_amounts_are_not_compared_while_the_projection_lags_the_holds() -> None:
    row = balance(hold_seq=1, ledger_holds=2, reserved=10, ledger_held=0)
    assert compare_projection([row]).difference is None


def test_a_lagging_balance_stalls_only_when_its_projection_seq_stands_still_past_the_bound() -> (
    None
):
    watch = StallWatch(bound=60)
    key = ("c1", "c1_USD")
    assert watch.observe({key: 2}, now=0) == (key, 0)
    assert watch.observe({key: 2}, now=30) == (key, 30)
    assert watch.observe({key: 3}, now=50) == (key, 0)  # it moved: the clock starts again
    assert watch.observe({key: 3}, now=111) == (key, 61)
    assert watch.observe({}, now=112) == (("", ""), 0.0)  # caught up: forgotten
    assert watch.observe({key: 3}, now=113) == (key, 0)


def test_books_equal_to_the_ledger_as_of_what_they_booked_have_no_difference() -> None:
    shard = booked(
        "a2", account="trading", customer_id="", balance_id="", balance=-20, booked_seq=1
    )
    rows = [booked(), dataclasses.replace(shard, ledger_amount_at_seq=-20)]
    assert books_difference(rows) is None


def test_a_drifted_book_names_the_account_with_the_ledger_balance_at_the_booked_seq() -> None:
    d = books_difference([booked("a2", customer_id="c2"), booked("a1", balance=499)])
    assert d is not None
    assert d.as_dict() == {
        "reason": "balance_differs",
        "account_id": "a1",
        "account": "customer",
        "customer_id": "c1",
        "balance_id": "c1_USD",
        "currency": "USD",
        "seq": 2,
        "expected": "500",
        "found": "499",
    }


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"booked_seq": 6, "ledger_amount_at_seq": None}, "books_ahead_of_ledger"),
        ({"ledger_known": False, "ledger_seq": 0}, "account_not_in_ledger"),
        ({"booked_seq": None}, "no_booked_position"),
        ({"booked_seq": 0, "balance": 1}, "balance_differs"),
    ],
)
def test_books_that_cannot_be_the_ledger_at_any_position_differ(
    changes: dict[str, object], reason: str
) -> None:
    d = books_difference([booked(**changes)])
    assert d is not None and d.reason == reason


def test_an_unpublished_gap_is_overdue_only_when_its_first_fact_stays_unpublished_past_the_bound() -> (
    None
):
    watch = UnpublishedWatch(bound=30)
    assert watch.observe([OutboxPosition(0, 10, 8)], now=0) == []
    # Under load published_seq moves with every batch: the gap is a new one each time.
    assert watch.observe([OutboxPosition(0, 14, 12)], now=25) == []
    assert watch.observe([OutboxPosition(0, 16, 12)], now=50) == []
    overdue = watch.observe([OutboxPosition(0, 16, 12), OutboxPosition(1, 3, 3)], now=56)
    assert [(o.partition, o.first_seq, o.last_seq, o.age) for o in overdue] == [(0, 13, 16, 31)]


def test_a_gap_found_on_the_topic_is_not_looked_for_again_until_new_facts_come() -> None:
    watch = UnpublishedWatch(bound=1)
    watch.observe([OutboxPosition(2, 5, 4)], now=0)
    assert len(watch.observe([OutboxPosition(2, 5, 4)], now=2)) == 1
    watch.found_on_topic(2, 5)
    assert watch.observe([OutboxPosition(2, 5, 4)], now=3) == []
    assert watch.observe([OutboxPosition(2, 6, 4)], now=4) == []  # fact 6 is new
    assert watch.observe([OutboxPosition(2, 6, 4)], now=6)[0].first_seq == 6


def test_the_first_fact_missing_from_the_topic_is_named_by_its_outbox_seq() -> None:
    gap = [(5, b"five"), (6, b"six"), (7, b"seven")]
    assert first_missing_fact(gap, {b"five", b"seven", b"older"}) == 6
    assert first_missing_fact(gap, {b"five", b"six", b"seven"}) is None


def test_a_stored_offset_beyond_the_end_of_its_partition_differs() -> None:
    ok = StoredOffset("projection", "ledger.events", 0, 10, 10)
    beyond = StoredOffset("ledger", "ledger.commands", 3, 12, 7)
    gone = StoredOffset("projection", "ledger.events", 9, 0, None)
    assert offsets_difference([ok]) is None
    d = offsets_difference([ok, gone, beyond])
    assert d is not None and d.as_dict() == {
        "reason": "stored_offset_beyond_log_end",
        "reader": "ledger",
        "topic": "ledger.commands",
        "partition": 3,
        "expected": "<= 7",
        "found": "12",
    }
    d = offsets_difference([ok, gone])
    assert d is not None and d.reason == "partition_not_in_kafka"
