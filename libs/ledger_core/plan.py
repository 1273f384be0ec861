"""The ledger's write path as one pure plan: a batch of commands in, everything to write and send
out.

:func:`plan_batch` takes the partitions' memory (state and cursor), the batch's commands and
what is known of earlier outcomes, and returns a :class:`BatchPlan`: each command's decision
(the reply), the rows of ``ledger_apply_batch``, the facts for ``ledger.events`` and which
answers still need a look-up. It applies every decision to memory through an undo log, so the
caller can take the whole batch back if Postgres does not take it. No I/O: the writer
(``ledger.writer``) is the chain around it, decode → look up → plan → write → reply and publish,
and a replay runs the same plan.

The idempotency policy lives here, in one place:

- a command's prior outcome is the one stored earlier in this batch under its key, else what the
  caller knows (``known``: batches in flight, outcomes in memory, keys looked up in Postgres);
- text Postgres can not hold is refused from the request alone and not stored (the key itself
  may be that text), like any 400;
- a command Postgres refused before (``refusals``, found by narrowing a refused batch down) is
  answered ``command_refused``, stored, unless a prior outcome exists;
- amounts beyond what the columns hold are refused, stored;
- answers that store nothing (a 400 decided without a prior) can not trip the idempotency
  table's primary key, so, unless every key was looked up first (``verified``), they are
  listed in :attr:`BatchPlan.to_verify`: the caller looks those keys up and
  :func:`answer_again` decides them against what it found.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import NamedTuple, Protocol

from ledger_core.batch_rows import BatchRows, PartitionCursor
from ledger_core.commands import Command, fingerprint
from ledger_core.decide import Decision, StoredOutcome, apply, decide, refuse
from ledger_core.facts import facts_for
from ledger_core.state import PartitionState, UndoLog
from ledger_core.storable import out_of_range, unstorable_text

# An idempotency key: (customer_id, scope, request_id).
Key = tuple[str, str, str]
# A command's place in the log: (partition, offset).
Position = tuple[int, int]
# A fact as published: (outbox seq, Kafka key, JSON payload).
PlannedFact = tuple[int, str, bytes]

COMMAND_REFUSED = "command_refused"


class PartitionMemory(Protocol):
    """What the plan needs of a partition: its state and where it stands in Postgres."""

    @property
    def state(self) -> PartitionState: ...

    @property
    def cursor(self) -> PartitionCursor: ...


class Incoming(NamedTuple):
    """One command of a batch, with its place in the log and its Kafka timestamp."""

    partition: int
    offset: int
    timestamp_ms: int
    command: Command
    key: Key


# Why a command was refused before deciding it, for the writer's metrics.
TEXT, DATABASE, RANGE, UNDECIDABLE = "text", "database", "range", "undecidable"


@dataclass(frozen=True, slots=True)
class Refusal:
    """A command found to be one Postgres always refuses, or one ``decide`` failed on:
    answered ``command_refused``."""

    reason: str
    record: bool = True  # store the answer (unless storing it is what fails)
    cause: str = DATABASE  # or UNDECIDABLE


class Undecidable(Exception):
    """A command could not be decided (a bug, or input ``decide`` can not handle). Memory was
    rolled back; the caller records a :class:`Refusal` for ``position`` and plans again."""

    def __init__(self, position: Position, cause: BaseException) -> None:
        super().__init__(f"command at {position} could not be decided: {cause!r}")
        self.position = position
        self.cause = cause


@dataclass(slots=True)
class BatchPlan:
    """Everything one batch writes and sends, in command order."""

    rows: BatchRows = field(default_factory=BatchRows)
    decisions: list[Decision] = field(default_factory=list)  # the replies, one per command
    # The facts per partition, in outbox order.
    facts: dict[int, list[PlannedFact]] = field(default_factory=dict)
    # Outcomes this batch stores, by key, with their partition.
    outcomes: dict[Key, tuple[int, StoredOutcome]] = field(default_factory=dict)
    # Commands (indexes) whose answer stores nothing and was decided without a prior.
    to_verify: list[int] = field(default_factory=list)
    # Commands answered command_refused (copied to the dead-letter topic), and refusals made
    # before deciding, by cause (TEXT, DATABASE, RANGE, UNDECIDABLE).
    refused: list[int] = field(default_factory=list)
    refused_by: list[str] = field(default_factory=list)


def plan_batch(
    partitions: Mapping[int, PartitionMemory],
    commands: Sequence[Incoming],
    ends: Mapping[int, int],
    known: Callable[[int, Key], StoredOutcome | None],
    undo: UndoLog,
    *,
    verified: bool,
    refusals: Mapping[Position, Refusal] | None = None,
) -> BatchPlan:
    """Decide ``commands`` in order against memory and plan their batch.

    ``ends``: per partition, the offset after the batch's last command (the cursor rows move
    there). ``known(partition, key)``: a prior outcome from outside this batch, if any.
    ``verified``: every key unknown to memory was looked up before (nothing to verify after).
    Memory (states and cursors) moves through ``undo``; raises :class:`Undecidable` after
    rolling it back if a command could not be decided.
    """
    plan = BatchPlan()
    rows = plan.rows
    refusals = refusals or {}
    for index, (partition, offset, timestamp_ms, cmd, key) in enumerate(commands):
        memory = partitions[partition]
        try:
            decision, prior = _decide_one(
                plan, memory.state, cmd, key, (partition, offset), known, refusals
            )
            if decision.outcome.error == COMMAND_REFUSED:
                plan.refused.append(index)
            elif prior is None and not verified and not decision.record:
                # A refusal of the text itself is the request's own fault: no look-up for it.
                plan.to_verify.append(index)
            apply(memory.state, decision, undo)
            at = datetime.fromtimestamp(timestamp_ms / 1000, tz=UTC)
            cursor = memory.cursor
            # Entries are chained here, after the partition's head (moved through ``undo``).
            links = rows.add_effects(decision, partition, offset, at, cursor, undo)
            if decision.record:
                outcome = StoredOutcome(
                    fingerprint(cmd), decision.outcome.status, decision.outcome.body
                )
                plan.outcomes[key] = (partition, outcome)
                rows.add_outcome(key, outcome, decision.entry_id, partition, at)
            facts = facts_for(decision, partition, timestamp_ms, links) if decision.effects else ()
            if facts:
                planned = plan.facts.setdefault(partition, [])
                for fact in facts:
                    seq = cursor.outbox_seq + 1
                    undo.set(cursor, "outbox_seq", seq)
                    rows.add_fact(partition, seq, fact.event_id, fact.key, fact.payload)
                    planned.append((seq, fact.key, fact.payload))
        except Exception as exc:
            undo.rollback()
            raise Undecidable((partition, offset), exc) from exc
        plan.decisions.append(decision)
    for partition, end in ends.items():
        cursor = partitions[partition].cursor
        rows.add_cursor(cursor, end)
        # Optimistic: the next batch expects this one's end. If this one fails, the next one's
        # conditional offset update fails too, and both are taken back.
        undo.set(cursor, "next_offset", end)
    return plan


def answer_again(
    plan: BatchPlan,
    partitions: Mapping[int, PartitionMemory],
    commands: Sequence[Incoming],
    stored: Mapping[Key, StoredOutcome],
) -> None:
    """Decide the plan's :attr:`~BatchPlan.to_verify` answers again against the outcomes the
    caller found stored under their keys. Such decisions have no effects, so only their
    answers change (to the stored one, or a 409 for a different request)."""
    for index in plan.to_verify:
        incoming = commands[index]
        prior = stored.get(incoming.key)
        if prior is not None:
            state = partitions[incoming.partition].state
            plan.decisions[index] = decide(state, incoming.command, prior)


def _decide_one(
    plan: BatchPlan,
    state: PartitionState,
    cmd: Command,
    key: Key,
    position: Position,
    known: Callable[[int, Key], StoredOutcome | None],
    refusals: Mapping[Position, Refusal],
) -> tuple[Decision, StoredOutcome | None]:
    """One command's decision, and the prior outcome it was decided against."""
    mine = plan.outcomes.get(key)
    prior = mine[1] if mine is not None else known(position[0], key)
    problem = unstorable_text(cmd)
    if problem is not None:
        # Decided by the request alone, like any 400: not stored (its key may be the text
        # Postgres can not hold), and the same answer on every retry.
        plan.refused_by.append(TEXT)
        return refuse(problem, record=False), prior
    refusal = refusals.get(position)
    if refusal is not None and prior is None:
        plan.refused_by.append(refusal.cause)
        return refuse(refusal.reason, record=refusal.record), None
    decision = decide(state, cmd, prior)
    problem = out_of_range(decision)
    if problem is not None:
        plan.refused_by.append(RANGE)
        return refuse(problem, record=True), prior
    return decision, prior
