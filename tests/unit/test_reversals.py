"""Reversals in the pure core: the decision, its link to the original entry, idempotency (one
reversal per entry, ever), the wire form, the fact and how the books read it (no I/O)."""

from __future__ import annotations

import dataclasses

import orjson
import pytest

from ledger_books.reading import read_fact
from ledger_core.commands import (
    CreateCustomer,
    Envelope,
    MoneyCommand,
    OpenBalance,
    Reversal,
    SetBlocked,
    decode,
    encode,
    fingerprint,
    idempotency_key,
)
from ledger_core.decide import Decision, JournalEntry, StoredOutcome, apply, decide
from ledger_core.facts import facts_for
from ledger_core.state import PartitionState, stable_id

pytestmark = pytest.mark.unit

PARTITION = 2


def ledger(*commands: MoneyCommand | SetBlocked) -> tuple[PartitionState, dict[str, str]]:
    """Ann with a USD balance after ``commands``; the entry id of each money command by its
    request id."""
    state = PartitionState(PARTITION)
    entries: dict[str, str] = {}
    for cmd in (CreateCustomer("ann", "c"), OpenBalance("ann", "usd", "USD", "o"), *commands):
        decision = decide(state, cmd, None)
        assert decision.outcome.status in (200, 201), decision.outcome.body
        apply(state, decision)
        if decision.entry_id is not None:
            entries[cmd.request_id] = str(decision.entry_id)
    return state, entries


def deposit(rid: str, amount: str) -> MoneyCommand:
    return MoneyCommand("deposit", "ann", "usd", rid, amount, "USD", "in")


def withdrawal(rid: str, amount: str) -> MoneyCommand:
    return MoneyCommand("withdrawal", "ann", "usd", rid, amount, "USD", "out")


def reversal(
    entry_id: str, kind: str = "deposit_reversal", amount: str = "100.00", reference: str = "fix-1"
) -> Reversal:
    assert kind in ("deposit_reversal", "withdrawal_reversal")
    return Reversal(
        "deposit_reversal" if kind == "deposit_reversal" else "withdrawal_reversal",
        "ann",
        "usd",
        entry_id,
        amount,
        "USD",
        "wrong account",
        reference,
    )


def balance(state: PartitionState) -> int:
    return state.customers["ann"].balances["usd"].balance


def test_a_deposits_reversal_takes_the_amount_back_out_linked_to_the_original() -> None:
    state, entries = ledger(deposit("d1", "100"), deposit("d2", "30"))
    cmd = reversal(entries["d1"])
    decision = decide(state, cmd, None)
    assert decision.outcome.status == 201 and decision.record
    (entry,) = decision.effects
    assert isinstance(entry, JournalEntry)
    assert (entry.kind, entry.request_id, entry.postings[1].system_kind) == (
        "deposit_reversal",
        entries["d1"],
        "settlement",
    )
    assert [p.amount for p in entry.postings] == [-10000, 10000]
    assert idempotency_key(cmd) == ("ann", "reversal:usd", entries["d1"])
    assert entry.entry_id == stable_id("entry", "ann", "reversal:usd", entries["d1"])
    body = orjson.loads(decision.outcome.body)
    assert body["reverses"] == entries["d1"] and body["entry_id"] == str(entry.entry_id)
    assert (body["request_id"], body["balance_current_amount"]) == ("fix-1", "30.00")
    apply(state, decision)
    assert balance(state) == 3000


def test_a_withdrawals_reversal_puts_the_amount_back() -> None:
    state, entries = ledger(deposit("d1", "100"), withdrawal("w1", "40"))
    decision = decide(state, reversal(entries["w1"], "withdrawal_reversal", "40.00"), None)
    assert decision.outcome.status == 201
    apply(state, decision)
    assert balance(state) == 10000


def test_a_reversal_that_would_make_the_balance_negative_is_refused_and_not_stored() -> None:
    state, entries = ledger(deposit("d1", "100"), withdrawal("w1", "80"))
    decision = decide(state, reversal(entries["d1"]), None)
    assert decision.outcome.status == 402
    assert orjson.loads(decision.outcome.body)["error"] == "insufficient_funds"
    # Not stored: the key is the entry's, and the entry must stay reversible once funds allow.
    assert (decision.record, decision.effects) == (False, ())


def test_a_blocked_customers_deposit_can_still_be_reversed() -> None:
    state, entries = ledger(deposit("d1", "100"), SetBlocked("ann", True, "b"))
    assert decide(state, reversal(entries["d1"]), None).outcome.status == 201


def stored(decision: Decision, cmd: Reversal) -> StoredOutcome:
    return StoredOutcome(fingerprint(cmd), decision.outcome.status, decision.outcome.body)


def test_the_same_reversal_again_replays_and_a_second_one_of_the_entry_is_refused() -> None:
    state, entries = ledger(deposit("d1", "100"))
    first = reversal(entries["d1"])
    decision = decide(state, first, None)
    apply(state, decision)
    prior = stored(decision, first)
    again = decide(state, first, prior)
    assert (again.outcome.status, again.outcome.body, again.outcome.replayed) == (
        201,
        decision.outcome.body,
        True,
    )
    assert again.effects == ()
    # Another operator request (another requestId, or another comment) under the same key.
    for second in (
        reversal(entries["d1"], reference="fix-2"),
        dataclasses.replace(first, comment="other reason"),
    ):
        assert idempotency_key(second) == idempotency_key(first)
        refused = decide(state, second, prior)
        assert refused.outcome.status == 409 and refused.effects == () and not refused.record
        assert orjson.loads(refused.outcome.body)["error"] == "request_id_reused"
    assert balance(state) == 0


def test_a_reversal_survives_the_wire_and_its_fingerprint_covers_the_reference() -> None:
    cmd = reversal("0b7f9d7e-0000-5000-8000-000000000001")
    decoded, envelope = decode(encode(cmd, Envelope("c-1", 3)))
    assert (decoded, envelope) == (cmd, Envelope("c-1", 3))
    assert fingerprint(reversal(cmd.entry_id, amount="100")) == fingerprint(cmd)
    assert fingerprint(reversal(cmd.entry_id, reference="fix-2")) != fingerprint(cmd)


def test_the_reversal_fact_is_booked_against_settlement() -> None:
    state, entries = ledger(deposit("d1", "100"))
    decision = decide(state, reversal(entries["d1"]), None)
    (fact,) = facts_for(decision, PARTITION, 1_767_225_600_000)
    payload = orjson.loads(fact.payload)
    assert (payload["type"], payload["kind"], payload["request_id"]) == (
        "entry.posted",
        "deposit_reversal",
        entries["d1"],
    )
    read = read_fact(fact.payload)
    assert read is not None and read.kind == "deposit_reversal"
    assert [(x.account, x.side, x.amount) for x in read.lines] == [
        ("customer", "debit", -10000),
        ("settlement", "credit", 10000),
    ]
    state, entries = ledger(deposit("d1", "100"), withdrawal("w1", "5"))
    back = decide(state, reversal(entries["w1"], "withdrawal_reversal", "5"), None)
    read = read_fact(facts_for(back, PARTITION, 1_767_225_600_000)[0].payload)
    assert read is not None
    assert [(x.account, x.side) for x in read.lines] == [
        ("customer", "credit"),
        ("settlement", "debit"),
    ]
