"""Taking a batch back: the writer applies a batch to memory before Postgres has it, and rolls
memory back with the batch's undo log when Postgres refuses it. The rollback must be exact, for
every kind of command, including a batch that repeats itself and one decided on top of another
(pipelining)."""

from __future__ import annotations

import copy

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_decide import histories, run

from ledger_core.commands import Command, fingerprint, idempotency_key
from ledger_core.decide import StoredOutcome, apply, decide
from ledger_core.state import PartitionState, UndoLog

pytestmark = pytest.mark.unit


def picture(state: PartitionState) -> object:
    """Everything in the state, as plain values. Dict order is left out: nothing decides by it,
    and a rollback puts a removed entry back at the end."""
    return (
        sorted(
            (
                cid,
                c.blocked,
                sorted(
                    (b, a.account_id, a.currency, a.balance, a.seq, a.reserved, a.holds)
                    for b, a in c.balances.items()
                ),
                sorted(c.reservations.items()),
            )
            for cid, c in state.customers.items()
        ),
        sorted((k, a.balance, a.seq, a.reserved, a.holds) for k, a in state.system.items()),
    )


def decide_batch(state: PartitionState, batch: list[Command], undo: UndoLog) -> None:
    stored: dict[tuple[str, str, str], StoredOutcome] = {}
    for cmd in batch:
        decision = decide(state, cmd, stored.get(idempotency_key(cmd)))
        apply(state, decision, undo)
        if decision.record:
            stored[idempotency_key(cmd)] = StoredOutcome(
                fingerprint(cmd), decision.outcome.status, decision.outcome.body
            )


@settings(max_examples=200, deadline=None)
@given(histories(), histories(), st.integers(min_value=0, max_value=40))
def test_rolling_a_batch_back_restores_memory_exactly(
    first: list[Command], second: list[Command], cut: int
) -> None:
    state, _ = run(first[:cut])
    before = copy.deepcopy(picture(state))
    undo = UndoLog()
    decide_batch(state, first[cut:] + second, undo)
    undo.rollback()
    assert picture(state) == before
    assert len(undo) == 0


@settings(max_examples=100, deadline=None)
@given(histories(), histories(), histories())
def test_two_pipelined_batches_roll_back_newest_first(
    history: list[Command], one: list[Command], two: list[Command]
) -> None:
    state, _ = run(history)
    before = copy.deepcopy(picture(state))
    first, second = UndoLog(), UndoLog()
    decide_batch(state, one, first)
    middle = copy.deepcopy(picture(state))
    decide_batch(state, two, second)
    second.rollback()
    assert picture(state) == middle
    first.rollback()
    assert picture(state) == before
