"""Following the journal's hash chain through the facts a consumer receives (pure, no I/O).

Every entry fact (``entry.posted``, ``exchange.settled``) carries its place in its ledger
partition's chain: ``chain_seq``, ``prev_hash`` and ``entry_hash`` (``docs/tamper-evidence.md``).
:class:`ChainFollower` recomputes each fact's ``entry_hash`` from the fact itself (so a fact
altered on its way, or an entry altered before it was published, does not pass) and checks that
consecutive entries of a partition link: ``prev_hash`` is the hash of the entry before. The
chains are kept per ledger partition (the fact's ``partition``): ``ledger.events`` has the
commands' partitions and key, so a chain arrives in one Kafka partition, in order.

Duplicates (a republish, a re-read) are at or behind the head and pass; a fact ahead of the next
place is a gap, which the books handle (they park), so the head waits for the missing fact. The
heads live in memory: after a restart the first entry fact of each partition is taken as it
comes, and the links are checked from there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import orjson

from ledger_core.chain import GENESIS, chain_entry_of_fact, entry_hash


class Link(Enum):
    """What one entry fact did to its partition's chain."""

    LINKED = "linked"  # the next place, linked to the head (or the chain's first entry)
    ANCHORED = "anchored"  # the first fact seen of a partition, mid-chain (after a restart)
    DUPLICATE = "duplicate"  # at or behind the head
    GAP = "gap"  # ahead of the next place: facts before it are missing
    UNCHAINED = "unchained"  # an entry written before the chain existed
    BROKEN = "broken"


@dataclass(frozen=True, slots=True)
class ChainCheck:
    """The verdict on one entry fact."""

    link: Link
    partition: int
    chain_seq: int | None
    entry_id: str
    reason: str = ""


@dataclass(slots=True)
class ChainFollower:
    """The head of each ledger partition's chain as received, and the breaks found."""

    heads: dict[int, tuple[int, bytes]] = field(default_factory=dict)
    breaks: list[ChainCheck] = field(default_factory=list)

    @property
    def intact(self) -> bool:
        """No break seen since this follower started."""
        return not self.breaks

    def offer_payload(self, payload: bytes) -> ChainCheck | None:
        """:meth:`offer` for a raw fact; facts that carry no entry hash are not even parsed."""
        if b'"entry_hash"' not in payload:
            return None
        return self.offer(orjson.loads(payload))

    def offer(self, body: dict[str, Any]) -> ChainCheck | None:
        """Check one fact; None for a fact that carries no journal entry."""
        try:
            entry = chain_entry_of_fact(body)
        except (KeyError, TypeError, ValueError) as exc:
            return self._broken(body, None, f"the entry fact can not be read: {exc!r}")
        if entry is None:
            return None
        partition, entry_id = entry.partition, str(entry.entry_id)
        if "chain_seq" not in body:
            return ChainCheck(Link.UNCHAINED, partition, None, entry_id)
        try:
            seq = int(body["chain_seq"])
            prev_hash = bytes.fromhex(body["prev_hash"])
            carried = bytes.fromhex(body["entry_hash"])
            recomputed = entry_hash(entry, seq, prev_hash)
        except (KeyError, TypeError, ValueError) as exc:
            return self._broken(body, None, f"malformed chain fields: {exc!r}")
        if recomputed != carried:
            return self._broken(
                body, seq, f"entry_hash {carried.hex()} is not the fact's ({recomputed.hex()})"
            )
        head = self.heads.get(partition)
        if head is None:
            self.heads[partition] = (seq, carried)
            first = seq == 1 and prev_hash == GENESIS
            return ChainCheck(Link.LINKED if first else Link.ANCHORED, partition, seq, entry_id)
        head_seq, head_hash = head
        if seq <= head_seq:
            if seq == head_seq and carried != head_hash:
                return self._broken(body, seq, "a second entry at the head's place (a fork)")
            return ChainCheck(Link.DUPLICATE, partition, seq, entry_id)
        if seq > head_seq + 1:
            return ChainCheck(Link.GAP, partition, seq, entry_id, f"expected {head_seq + 1}")
        if prev_hash != head_hash:
            return self._broken(body, seq, "prev_hash is not the previous entry's hash")
        self.heads[partition] = (seq, carried)
        return ChainCheck(Link.LINKED, partition, seq, entry_id)

    def _broken(self, body: dict[str, Any], seq: int | None, reason: str) -> ChainCheck:
        check = ChainCheck(
            Link.BROKEN, int(body.get("partition", -1)), seq, str(body.get("entry_id")), reason
        )
        self.breaks.append(check)
        return check
