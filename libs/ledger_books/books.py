"""The books' sequencing: book each fact once, in each balance's order, never past a gap.

Per balance the books hold the last ``balance_seq`` and ``hold_seq`` they booked. A fact is

- **booked** when every sequence number it claims is the next one (or, for a number it does not
  move, the held one);
- a **duplicate** when none of the numbers it moves is ahead of what is held (it was booked
  before: a republish, a re-read after a restart), or, for a fact without sequence numbers
  (``customer.*``), when its event id was seen;
- **parked** otherwise: it is ahead of the next expected number, so a fact before it is missing
  (a gap), or it contradicts what is held. Parked facts wait, per Kafka partition, in arrival
  order; each fact that is booked may make parked ones bookable, and those are booked at once,
  in order. A parked fact is never persisted: the caller stores a partition's Kafka position no
  further than its first parked fact (:meth:`Books.committable`), so after a restart the fact is
  read, and judged, again.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum

from ledger_books.reading import Claim, ReadFact

BalanceKey = tuple[str, str]  # (customer_id, balance_id)


class Verdict(Enum):
    """What the books do with one fact."""

    BOOK = "book"
    DUPLICATE = "duplicate"
    PARK = "park"


@dataclass(slots=True)
class BalancePosition:
    """The last sequence numbers booked for one balance; -1: nothing booked yet (not even
    ``balance.opened``)."""

    balance_seq: int = -1
    hold_seq: int = -1


@dataclass(frozen=True, slots=True)
class Delivered:
    """A fact as it arrived: where in Kafka, and what it says."""

    partition: int
    offset: int
    fact: ReadFact


@dataclass(slots=True)
class Offered:
    """What offering one fact did: the facts booked now (that one and any parked ones it
    released, in booking order), and whether it was a duplicate or was parked."""

    booked: list[Delivered] = field(default_factory=list)
    duplicate: bool = False
    parked: bool = False
    released: int = 0  # parked facts booked because of this one


def judge(fact: ReadFact, positions: dict[BalanceKey, BalancePosition], seen: set[str]) -> Verdict:
    """Book, drop or park ``fact`` given the positions held (pure; changes nothing)."""
    if not fact.claims:
        return Verdict.DUPLICATE if fact.event_id in seen else Verdict.BOOK
    ahead = 0  # claims past what is held
    following = 0  # ... of those, the ones that are exactly the next number
    for claim in fact.claims:
        held = _held(positions.get((claim.customer_id, claim.balance_id)), claim)
        if claim.value > held:
            ahead += 1
            following += claim.value == held + 1
    if ahead == 0:
        return Verdict.DUPLICATE
    if following == len(fact.claims):
        return Verdict.BOOK
    # A number more than one ahead (a fact before it is missing), or a fact booked in part
    # (which a consistent stream never shows): wait.
    return Verdict.PARK


def _held(position: BalancePosition | None, claim: Claim) -> int:
    if position is None:
        return -1
    return position.balance_seq if claim.counter == "balance_seq" else position.hold_seq


@dataclass(slots=True)
class Books:
    """The sequencing state of the books: positions per balance, the event ids of facts without
    sequence numbers, and the parked facts of each Kafka partition."""

    positions: dict[BalanceKey, BalancePosition] = field(default_factory=dict)
    seen: set[str] = field(default_factory=set)
    parked: dict[int, list[Delivered]] = field(default_factory=dict)

    def offer(self, delivered: Delivered) -> Offered:
        """Judge one arriving fact and book what can be booked now."""
        out = Offered()
        verdict = judge(delivered.fact, self.positions, self.seen)
        if verdict is Verdict.DUPLICATE:
            out.duplicate = True
        elif verdict is Verdict.PARK:
            self.parked.setdefault(delivered.partition, []).append(delivered)
            out.parked = True
        else:
            self._book(delivered, out)
            out.released = self._release(delivered.partition, out)
        return out

    def committable(self, partition: int, next_offset: int) -> int:
        """The Kafka position that may be stored for ``partition`` once everything before
        ``next_offset`` was offered: no further than its first parked fact, so that a restart
        reads the parked facts again."""
        parked = self.parked.get(partition)
        return min(next_offset, parked[0].offset) if parked else next_offset

    @property
    def parked_count(self) -> int:
        """Facts waiting behind a gap, all partitions."""
        return sum(len(p) for p in self.parked.values())

    def balances_behind_gaps(self) -> set[BalanceKey]:
        """Balances that have a fact parked (each waits for a missing fact)."""
        return {
            (c.customer_id, c.balance_id)
            for facts in self.parked.values()
            for d in facts
            for c in d.fact.claims
        }

    def forget_parked(self, partitions: Iterable[int]) -> None:
        """Drop the parked facts of ``partitions`` (after a rebalance or a reload: they are read
        again from the stored position)."""
        for partition in partitions:
            self.parked.pop(partition, None)

    def _book(self, delivered: Delivered, out: Offered) -> None:
        fact = delivered.fact
        for claim in fact.claims:
            position = self.positions.setdefault(
                (claim.customer_id, claim.balance_id), BalancePosition()
            )
            if claim.counter == "balance_seq":
                position.balance_seq = claim.value
            else:
                position.hold_seq = claim.value
        if not fact.claims:
            self.seen.add(fact.event_id)
        out.booked.append(delivered)

    def _release(self, partition: int, out: Offered) -> int:
        """Book the parked facts of ``partition`` that became bookable, again and again until
        none does (one may release the next); drop those that turned out duplicates."""
        waiting = self.parked.get(partition)
        released = 0
        progress = True
        while waiting and progress:
            progress = False
            for delivered in list(waiting):
                verdict = judge(delivered.fact, self.positions, self.seen)
                if verdict is Verdict.PARK:
                    continue
                waiting.remove(delivered)
                progress = True
                if verdict is Verdict.BOOK:
                    self._book(delivered, out)
                    released += 1
                break  # from the oldest parked fact again: booking keeps arrival order
        if not waiting:
            self.parked.pop(partition, None)
        return released
