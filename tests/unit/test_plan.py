"""The ledger's batch plan in the pure core (``ledger_core.plan``): decisions in order, the rows
and facts of a batch, the cursors it moves and takes back, and the idempotency policy (priors in
and outside the batch, refusals of text, of positions and of amounts, answers left to verify).
No I/O: memory is built with ``decide``/``apply`` as the writer loads it."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

import ledger_core.plan
from ledger_core.batch_rows import PartitionCursor
from ledger_core.commands import (
    Command,
    CreateCustomer,
    MoneyCommand,
    MoneyKind,
    OpenBalance,
    fingerprint,
    idempotency_key,
)
from ledger_core.decide import Decision, StoredOutcome, apply, decide
from ledger_core.plan import (
    DATABASE,
    RANGE,
    TEXT,
    UNDECIDABLE,
    BatchPlan,
    Incoming,
    Key,
    Position,
    Refusal,
    Undecidable,
    answer_again,
    plan_batch,
)
from ledger_core.rows import CursorRow
from ledger_core.state import Account, PartitionState, UndoLog, system_account_id
from ledger_core.storable import NUMERIC_LIMIT

pytestmark = pytest.mark.unit

AT_MS = 1_767_270_605_123
AT = datetime(2026, 1, 1, 12, 30, 5, 123000, tzinfo=UTC)
HEAD = bytes(range(32))  # the chain head a partition's cursor starts at


@dataclass
class Memory:
    """A partition's memory, as the writer's ``Owned`` holds it."""

    state: PartitionState
    cursor: PartitionCursor


def memory(partition: int, customer: str, *, next_offset: int, outbox_seq: int) -> Memory:
    """``customer`` with a USD balance of 100.00; the cursor's chain head is seq 1, ``HEAD``."""
    state = PartitionState(partition)
    for cmd in (
        CreateCustomer(customer, "c"),
        OpenBalance(customer, "usd", "USD", "o"),
        money("deposit", customer, "fund", "100.00"),
    ):
        decision = decide(state, cmd, None)
        assert decision.outcome.status == 201, decision.outcome.body
        apply(state, decision)
    cursor = PartitionCursor(partition, 4, next_offset, outbox_seq, 3, chain_seq=1, chain_hash=HEAD)
    return Memory(state, cursor)


def money(
    kind: MoneyKind, customer: str, request: str, amount: str, comment: str = ""
) -> MoneyCommand:
    return MoneyCommand(kind, customer, "usd", request, amount, "USD", comment)


def at(partition: int, offset: int, cmd: Command) -> Incoming:
    return Incoming(partition, offset, AT_MS, cmd, idempotency_key(cmd))


def nothing_known(partition: int, key: Key) -> StoredOutcome | None:
    return None


def plan(
    memories: Mapping[int, Memory],
    commands: list[Incoming],
    *,
    known: Callable[[int, Key], StoredOutcome | None] = nothing_known,
    verified: bool = False,
    refusals: Mapping[Position, Refusal] | None = None,
) -> tuple[BatchPlan, UndoLog]:
    """Plan ``commands``; each partition's batch ends after its last command."""
    ends: dict[int, int] = {}
    for c in commands:
        ends[c.partition] = c.offset + 1
    undo = UndoLog()
    found = plan_batch(memories, commands, ends, known, undo, verified=verified, refusals=refusals)
    return found, undo


def balance(m: Memory, customer: str) -> int:
    return m.state.customers[customer].balances["usd"].balance


def error(decision: Decision) -> str:
    return str(orjson.loads(decision.outcome.body)["error"])


def stored(cmd: Command, status: int, body: bytes) -> StoredOutcome:
    return StoredOutcome(fingerprint(cmd), status, body)


def test_a_batch_over_two_partitions_plans_rows_facts_chain_and_cursors() -> None:
    ann = memory(1, "ann", next_offset=10, outbox_seq=20)
    bob = memory(2, "bob", next_offset=30, outbox_seq=40)
    commands = [
        at(1, 10, money("deposit", "ann", "d1", "5.00", "in")),
        at(2, 30, money("debit", "bob", "t1", "2.50", "stake")),
        at(1, 11, money("debit", "ann", "t1", "1.25", "stake")),
    ]

    found, _ = plan({1: ann, 2: bob}, commands)
    rows = found.rows

    # Decisions in command order, each on the balance the one before left.
    bodies = [orjson.loads(d.outcome.body) for d in found.decisions]
    assert [d.outcome.status for d in found.decisions] == [201, 201, 201]
    assert [b["balance_current_amount"] for b in bodies] == ["105.00", "97.50", "103.75"]
    assert (balance(ann, "ann"), balance(bob, "bob")) == (10375, 9750)
    # One entry of two balanced postings per command, at its place in the log and its time.
    assert [
        (e.partition, e.command_offset, e.kind, e.request_id, e.amount) for e in rows.entries
    ] == [
        (1, 10, "deposit", "d1", 500),
        (2, 30, "debit", "t1", 250),
        (1, 11, "debit", "t1", 125),
    ]
    assert {e.created_at for e in rows.entries} == {AT}
    assert len(rows.postings) == 6
    for e in rows.entries:
        assert sum(p.amount for p in rows.postings if p.entry_id == e.entry_id) == 0
    # Every outcome stored under its key, with its entry.
    assert [(o.customer_id, o.request_id, o.status, o.entry_id) for o in rows.outcomes] == [
        (c.command.customer_id, c.command.request_id, 201, e.entry_id)
        for c, e in zip(commands, rows.entries, strict=True)
    ]
    assert found.outcomes == {
        c.key: (c.partition, stored(c.command, 201, d.outcome.body))
        for c, d in zip(commands, found.decisions, strict=True)
    }
    # Each partition's entries chained after its head, the first link on the head's hash.
    first, _, second = rows.entries
    assert (first.chain_seq, first.prev_hash) == (2, HEAD)
    assert (second.chain_seq, second.prev_hash) == (3, first.entry_hash)
    assert (rows.entries[1].chain_seq, rows.entries[1].prev_hash) == (2, HEAD)
    assert rows.chain_from == {1: 1, 2: 1}
    # Facts per partition at consecutive outbox seqs after the cursor's, carrying the links.
    assert {p: [(seq, key) for seq, key, _ in facts] for p, facts in found.facts.items()} == {
        1: [(21, "ann"), (22, "ann")],
        2: [(41, "bob")],
    }
    assert [(f.partition, f.seq, f.key, f.payload) for f in rows.facts] == [
        (1, 21, *found.facts[1][0][1:]),
        (2, 41, *found.facts[2][0][1:]),
        (1, 22, *found.facts[1][1][1:]),
    ]
    for fact, entry in zip(rows.facts, rows.entries, strict=True):
        payload = orjson.loads(fact.payload)
        assert (payload["type"], payload["event_id"], payload["entry_id"]) == (
            "entry.posted",
            fact.event_id,
            str(entry.entry_id),
        )
        assert (payload["chain_seq"], payload["prev_hash"], payload["entry_hash"]) == (
            entry.chain_seq,
            entry.prev_hash.hex() if entry.prev_hash else None,
            entry.entry_hash.hex() if entry.entry_hash else None,
        )
    # One conditional cursor row per partition: from where it was to the batch's end.
    assert second.entry_hash is not None and rows.entries[1].entry_hash is not None
    assert rows.cursors == [
        CursorRow(1, 10, 12, 4, 22, 3, 1, 3, second.entry_hash),
        CursorRow(2, 30, 31, 4, 41, 3, 1, 2, rows.entries[1].entry_hash),
    ]
    # Memory moved with the batch.
    assert (ann.cursor.next_offset, ann.cursor.outbox_seq, ann.cursor.chain_seq) == (12, 22, 3)
    assert ann.cursor.chain_hash == second.entry_hash
    assert (bob.cursor.next_offset, bob.cursor.outbox_seq, bob.cursor.chain_seq) == (31, 41, 2)
    assert (found.to_verify, found.refused, found.refused_by) == ([], [], [])


def test_a_partition_with_no_commands_in_the_batch_still_moves_its_cursor() -> None:
    # Its records were all undecodable (dead-lettered): the offsets still move past them.
    ann = memory(1, "ann", next_offset=10, outbox_seq=20)
    undo = UndoLog()

    found = plan_batch({1: ann}, [], {1: 13}, nothing_known, undo, verified=False)

    assert found.rows.cursors == [CursorRow(1, 10, 13, 4, 20, 3, 1, 1, HEAD)]
    assert ann.cursor.next_offset == 13
    assert (found.decisions, found.rows.entries, found.rows.outcomes) == ([], [], [])


def test_rolling_the_undo_log_back_puts_state_and_cursor_back_exactly() -> None:
    ann = memory(1, "ann", next_offset=10, outbox_seq=20)
    state_before = copy.deepcopy(ann.state)
    cursor_before = dataclasses.replace(ann.cursor)
    commands = [
        # A new customer, a balance in a new currency (a new system account on first use), and
        # money moved on both customers.
        at(1, 10, CreateCustomer("cy", "c")),
        at(1, 11, OpenBalance("cy", "btc", "BTC", "o")),
        at(1, 12, MoneyCommand("deposit", "cy", "btc", "d1", "0.5", "BTC", "")),
        at(1, 13, money("debit", "ann", "t1", "30.00")),
    ]

    found, undo = plan({1: ann}, commands)
    assert [d.outcome.status for d in found.decisions] == [201, 201, 201, 201]
    assert ann.state != state_before and ann.cursor != cursor_before
    undo.rollback()

    assert ann.state == state_before
    assert ann.cursor == cursor_before
    assert (ann.cursor.next_offset, ann.cursor.outbox_seq) == (10, 20)
    assert (ann.cursor.chain_seq, ann.cursor.chain_hash) == (1, HEAD)


def test_the_same_request_twice_in_a_batch_gets_the_first_answer_and_adds_nothing() -> None:
    ann = memory(1, "ann", next_offset=10, outbox_seq=20)
    deposit = money("deposit", "ann", "d1", "5.00")

    found, _ = plan({1: ann}, [at(1, 10, deposit), at(1, 11, deposit)])

    first, again = found.decisions
    assert (again.outcome.status, again.outcome.body) == (201, first.outcome.body)
    assert again.outcome.replayed and not again.record and not again.effects
    assert balance(ann, "ann") == 10500
    assert (len(found.rows.entries), len(found.rows.outcomes), len(found.rows.facts)) == (1, 1, 1)
    assert found.to_verify == []  # answered from its prior: nothing to look up


def test_a_different_request_under_a_key_used_in_the_batch_gets_request_id_reused() -> None:
    ann = memory(1, "ann", next_offset=10, outbox_seq=20)
    commands = [
        at(1, 10, money("deposit", "ann", "d1", "5.00")),
        at(1, 11, money("deposit", "ann", "d1", "7.00")),
    ]

    found, _ = plan({1: ann}, commands)

    reused = found.decisions[1]
    assert (reused.outcome.status, error(reused)) == (409, "request_id_reused")
    assert not reused.record and not reused.effects
    assert balance(ann, "ann") == 10500
    assert [o.request_id for o in found.rows.outcomes] == ["d1"]
    assert found.outcomes[commands[0].key][1].body == found.decisions[0].outcome.body
    assert found.to_verify == []


def test_a_prior_known_outside_the_batch_is_answered_with_no_rows_but_the_cursor() -> None:
    ann = memory(1, "ann", next_offset=10, outbox_seq=20)
    deposit = money("deposit", "ann", "d1", "5.00")
    answer = b'{"stored":"earlier"}'
    asked: list[tuple[int, Key]] = []

    def known(partition: int, key: Key) -> StoredOutcome | None:
        asked.append((partition, key))
        return stored(deposit, 201, answer)

    found, _ = plan({1: ann}, [at(1, 10, deposit)], known=known)

    (decision,) = found.decisions
    assert (decision.outcome.status, decision.outcome.body) == (201, answer)
    assert decision.outcome.replayed
    assert asked == [(1, idempotency_key(deposit))]
    assert balance(ann, "ann") == 10000
    rows = found.rows
    assert (rows.entries, rows.postings, rows.outcomes, rows.facts) == ([], [], [], [])
    assert rows.cursors == [CursorRow(1, 10, 11, 4, 20, 3, 1, 1, HEAD)]
    assert (found.facts, found.outcomes, found.to_verify) == ({}, {}, [])


def test_text_postgres_can_not_hold_is_refused_from_the_request_and_not_stored() -> None:
    ann = memory(1, "ann", next_offset=10, outbox_seq=20)

    found, _ = plan({1: ann}, [at(1, 10, money("deposit", "ann", "d1", "5.00", "a\x00b"))])

    (decision,) = found.decisions
    assert (decision.outcome.status, error(decision)) == (400, "command_refused")
    assert b"comment holds a NUL character" in decision.outcome.body
    assert not decision.record and not decision.effects
    assert (found.refused, found.refused_by, found.to_verify) == ([0], [TEXT], [])
    assert (found.rows.outcomes, found.outcomes) == ([], {})
    assert balance(ann, "ann") == 10000


def test_a_position_postgres_refused_before_is_answered_command_refused_and_stored() -> None:
    ann = memory(1, "ann", next_offset=10, outbox_seq=20)
    commands = [
        at(1, 10, money("deposit", "ann", "d1", "5.00")),
        at(1, 11, money("debit", "ann", "t1", "1.00")),
    ]

    found, _ = plan({1: ann}, commands, refusals={(1, 11): Refusal("a check failed")})

    refused = found.decisions[1]
    assert (refused.outcome.status, error(refused)) == (400, "command_refused")
    assert b"a check failed" in refused.outcome.body
    assert refused.record and not refused.effects
    assert (found.refused, found.refused_by, found.to_verify) == ([1], [DATABASE], [])
    assert [(o.request_id, o.status, o.body) for o in found.rows.outcomes] == [
        ("d1", 201, found.decisions[0].outcome.body),
        ("t1", 400, refused.outcome.body),
    ]
    assert balance(ann, "ann") == 10500  # the deposit before it still lands


def test_a_refused_position_whose_command_has_a_prior_gets_the_prior() -> None:
    ann = memory(1, "ann", next_offset=10, outbox_seq=20)
    debit = money("debit", "ann", "t1", "1.00")
    earlier = b'{"stored":"earlier"}'

    found, _ = plan(
        {1: ann},
        [at(1, 10, debit)],
        known=lambda partition, key: stored(debit, 201, earlier),
        refusals={(1, 10): Refusal("a check failed")},
    )

    (decision,) = found.decisions
    assert (decision.outcome.status, decision.outcome.body) == (201, earlier)
    assert (found.refused, found.refused_by, found.rows.outcomes) == ([], [], [])


def test_a_refusal_not_to_record_stores_nothing() -> None:
    ann = memory(1, "ann", next_offset=10, outbox_seq=20)

    found, _ = plan(
        {1: ann},
        [at(1, 10, money("debit", "ann", "t1", "1.00"))],
        refusals={(1, 10): Refusal("storing the answer fails", record=False)},
    )

    (decision,) = found.decisions
    assert error(decision) == "command_refused" and not decision.record
    assert (found.refused, found.refused_by, found.to_verify) == ([0], [DATABASE], [])
    assert (found.rows.outcomes, found.outcomes) == ([], {})


def test_a_refusal_of_a_command_decide_failed_on_is_counted_as_undecidable() -> None:
    ann = memory(1, "ann", next_offset=10, outbox_seq=20)

    found, _ = plan(
        {1: ann},
        [at(1, 10, money("debit", "ann", "t1", "1.00"))],
        refusals={(1, 10): Refusal("it could not be decided (KeyError)", cause=UNDECIDABLE)},
    )

    (decision,) = found.decisions
    assert error(decision) == "command_refused" and decision.record
    assert (found.refused, found.refused_by) == ([0], [UNDECIDABLE])


def test_an_amount_beyond_the_columns_is_refused_and_stored() -> None:
    ann = memory(1, "ann", next_offset=10, outbox_seq=20)
    # The trading shard one short of NUMERIC(40,0): a debit's counter-posting would overflow it.
    ann.state.system[("trading", "USD")] = Account(
        system_account_id("trading", "USD", 1), "USD", balance=NUMERIC_LIMIT - 1, seq=7
    )

    found, _ = plan({1: ann}, [at(1, 10, money("debit", "ann", "t1", "1.00"))])

    (decision,) = found.decisions
    assert (decision.outcome.status, error(decision)) == (400, "command_refused")
    assert b"NUMERIC(40,0)" in decision.outcome.body
    assert decision.record and not decision.effects
    assert (found.refused, found.refused_by) == ([0], [RANGE])
    assert [(o.request_id, o.body) for o in found.rows.outcomes] == [("t1", decision.outcome.body)]
    assert (found.rows.entries, found.rows.facts) == ([], [])
    assert balance(ann, "ann") == 10000


def test_an_unstored_answer_decided_without_a_prior_is_verified_unless_all_keys_were() -> None:
    ann = memory(1, "ann", next_offset=10, outbox_seq=20)
    commands = [
        at(1, 10, MoneyCommand("debit", "ann", "usd", "t1", "1.00", "EUR", "")),  # 400
        at(1, 11, money("debit", "nobody", "t2", "1.00")),  # 404, stored
        at(1, 12, money("debit", "ann", "t3", "1.00")),  # 201, stored
    ]

    unverified, undo = plan({1: ann}, commands)
    undo.rollback()
    verified, _ = plan({1: ann}, commands, verified=True)

    assert [d.outcome.status for d in unverified.decisions] == [400, 404, 201]
    assert unverified.to_verify == [0]
    assert verified.to_verify == []


def test_answer_again_takes_the_stored_answers_for_listed_keys_and_leaves_others() -> None:
    ann = memory(1, "ann", next_offset=10, outbox_seq=20)
    retried = MoneyCommand("debit", "ann", "usd", "t1", "1.00", "EUR", "")
    reused = MoneyCommand("debit", "ann", "usd", "t2", "1.00", "EUR", "")
    unseen = MoneyCommand("debit", "ann", "usd", "t3", "1.00", "EUR", "")
    fresh = money("debit", "ann", "t4", "1.00")
    commands = [at(1, 10 + i, c) for i, c in enumerate((retried, reused, unseen, fresh))]
    found, _ = plan({1: ann}, commands)
    assert found.to_verify == [0, 1, 2]
    before = list(found.decisions)
    earlier = b'{"stored":"earlier"}'
    in_postgres = {
        commands[0].key: stored(retried, 402, earlier),
        # Stored for another body under the same key (the EUR request reused it).
        commands[1].key: stored(money("debit", "ann", "t2", "9.00"), 201, b"{}"),
        # Not listed: its answer stands whatever is found.
        commands[3].key: stored(fresh, 201, b"{}"),
    }

    answer_again(found, {1: ann}, commands, in_postgres)

    again = found.decisions
    assert (again[0].outcome.status, again[0].outcome.body) == (402, earlier)
    assert (again[1].outcome.status, error(again[1])) == (409, "request_id_reused")
    assert again[2] is before[2] and again[3] is before[3]
    assert not any(d.effects for d in again[:3])


def test_a_command_decide_fails_on_is_undecidable_at_its_position_and_memory_rolls_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ann = memory(1, "ann", next_offset=10, outbox_seq=20)
    state_before = copy.deepcopy(ann.state)
    cursor_before = dataclasses.replace(ann.cursor)
    broken = RuntimeError("a bug")

    def decide_or_fail(state: PartitionState, cmd: Command, prior: StoredOutcome | None) -> Any:
        if cmd.request_id == "boom":
            raise broken
        return decide(state, cmd, prior)

    monkeypatch.setattr(ledger_core.plan, "decide", decide_or_fail)
    commands = [
        at(1, 10, CreateCustomer("cy", "c")),
        at(1, 11, money("deposit", "ann", "d1", "5.00")),
        at(1, 12, money("debit", "ann", "boom", "1.00")),
    ]
    undo = UndoLog()

    with pytest.raises(Undecidable) as raised:
        plan_batch({1: ann}, commands, {1: 13}, nothing_known, undo, verified=False)

    assert (raised.value.position, raised.value.cause) == ((1, 12), broken)
    assert ann.state == state_before
    assert ann.cursor == cursor_before
    assert len(undo) == 0
