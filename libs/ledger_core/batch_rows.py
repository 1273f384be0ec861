"""One batch's rows, built from decisions: what ``ledger_apply_batch`` writes, as plain tuples.

Pure: the planner (:mod:`ledger_core.plan`) builds a :class:`BatchRows` and the store
(``ledger.store.apply_batch``) only sends it. Entries are chained here, after their partition's
chain head held in its :class:`PartitionCursor`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime

from ledger_core.chain import GENESIS, ChainEntry, ChainLink, ChainPosting, link_after, micros
from ledger_core.decide import (
    BlockChange,
    Decision,
    JournalEntry,
    NewAccount,
    NewCustomer,
    ReservationMade,
    ReservationReleased,
    StoredOutcome,
)
from ledger_core.rows import (
    AccountRow,
    BlockRow,
    CursorRow,
    CustomerRow,
    EntryRow,
    FactRow,
    OutcomeRow,
    PostingRow,
    ReleaseRow,
    ReservationRow,
)
from ledger_core.state import UndoLog


@dataclass(slots=True)
class PartitionCursor:
    """Where a partition stands in Postgres, as this writer last saw it."""

    partition: int
    epoch: int
    next_offset: int
    outbox_seq: int
    published_seq: int
    # The head of the partition's entry chain: the last chained entry's seq and hash.
    chain_seq: int = 0
    chain_hash: bytes = GENESIS


@dataclass(slots=True)
class BatchRows:
    """The rows of one call of ``ledger_apply_batch``: one list per input, one tuple per row
    (the tuples' fields are the SQL row types' attributes, see ``ledger_core.rows``)."""

    cursors: list[CursorRow] = field(default_factory=list)
    customers: list[CustomerRow] = field(default_factory=list)
    blocks: dict[str, BlockRow] = field(default_factory=dict)  # the last change per customer
    accounts: list[AccountRow] = field(default_factory=list)
    entries: list[EntryRow] = field(default_factory=list)
    postings: list[PostingRow] = field(default_factory=list)
    outcomes: list[OutcomeRow] = field(default_factory=list)
    facts: list[FactRow] = field(default_factory=list)
    reservations: list[ReservationRow] = field(default_factory=list)
    releases: list[ReleaseRow] = field(default_factory=list)
    # Each partition's chain head (seq) before this batch's first entry: the cursor row's
    # condition, so a batch never lands on a head another batch moved (no fork).
    chain_from: dict[int, int] = field(default_factory=dict)

    def add_effects(
        self,
        decision: Decision,
        partition: int,
        offset: int,
        at: datetime,
        cursor: PartitionCursor | None = None,
        undo: UndoLog | None = None,
    ) -> dict[uuid.UUID, ChainLink]:
        """Rows for a decision's effects (customers, accounts, blocks, entries, postings,
        exchange reservations and their releases). With ``cursor``, each entry is chained after
        the cursor's chain head, which moves (through ``undo``, taken back if the batch fails);
        returns each entry's link, for its fact. Without, entries are written unchained."""
        links: dict[uuid.UUID, ChainLink] = {}
        for effect in decision.effects:
            if isinstance(effect, JournalEntry):
                link = self._add_entry(effect, partition, offset, at, cursor, undo)
                if link is not None:
                    links[effect.entry_id] = link
            elif isinstance(effect, ReservationMade):
                self.reservations.append(
                    ReservationRow(
                        effect.customer_id,
                        effect.exchange_id,
                        partition,
                        effect.source_balance_id,
                        effect.source.account_id,
                        effect.target_balance_id,
                        effect.target_account_id,
                        effect.currency,
                        effect.amount,
                        effect.comment,
                        offset,
                        at,
                    )
                )
            elif isinstance(effect, ReservationReleased):
                link = self._add_release(effect, partition, offset, at, cursor, undo)
                if link is not None and effect.entry is not None:
                    links[effect.entry.entry_id] = link
            elif isinstance(effect, NewCustomer):
                self.customers.append(CustomerRow(effect.customer_id, partition, at))
            elif isinstance(effect, NewAccount):
                self.accounts.append(
                    AccountRow(
                        effect.account_id,
                        partition,
                        "customer",
                        effect.customer_id,
                        effect.balance_id,
                        effect.currency,
                    )
                )
            else:
                assert isinstance(effect, BlockChange)
                self.blocks[effect.customer_id] = BlockRow(effect.customer_id, effect.blocked, at)
        return links

    def _add_entry(
        self,
        entry: JournalEntry,
        partition: int,
        offset: int,
        at: datetime,
        cursor: PartitionCursor | None,
        undo: UndoLog | None,
    ) -> ChainLink | None:
        """An entry's row and its postings' rows, chained after the cursor's head if given."""
        # What the entry's row and its hash both hold, in the order both list them.
        described = (
            entry.kind,
            entry.customer_id,
            entry.balance_id,
            entry.request_id,
            entry.currency,
            entry.amount,
            entry.comment,
        )
        link = None
        if cursor is not None:
            postings = [
                ChainPosting(p.account_id, p.seq, p.amount, p.balance_after, p.currency)
                for p in entry.postings
            ]
            chained = ChainEntry(
                partition, entry.entry_id, *described, entry.order_id, micros(at), postings
            )
            link = self._chain(cursor, undo, chained)
        self.entries.append(
            EntryRow(
                entry.entry_id,
                partition,
                offset,
                *described,
                at,
                entry.order_id,
                *_chain_columns(link),
            )
        )
        # A customer's posting may not go negative. A single-currency entry states no currency
        # per posting (NULL: the entry's); an exchange entry states each posting's.
        stated = entry.exchange is not None
        for p in entry.postings:
            self.postings.append(
                PostingRow(
                    entry.entry_id,
                    p.account_id,
                    p.seq,
                    p.amount,
                    p.balance_after,
                    p.balance_id is not None,
                    p.currency if stated else None,
                )
            )
        return link

    def _chain(self, cursor: PartitionCursor, undo: UndoLog | None, entry: ChainEntry) -> ChainLink:
        """Link ``entry`` after the cursor's chain head and make it the head."""
        self.chain_from.setdefault(cursor.partition, cursor.chain_seq)
        link = link_after(cursor.chain_seq, cursor.chain_hash, entry)
        if undo is None:
            cursor.chain_seq, cursor.chain_hash = link.seq, link.entry_hash
        else:
            undo.set(cursor, "chain_seq", link.seq)
            undo.set(cursor, "chain_hash", link.entry_hash)
        return link

    def _add_release(
        self,
        effect: ReservationReleased,
        partition: int,
        offset: int,
        at: datetime,
        cursor: PartitionCursor | None,
        undo: UndoLog | None,
    ) -> ChainLink | None:
        entry = effect.entry
        link = None
        if entry is not None:
            link = self._add_entry(entry, partition, offset, at, cursor, undo)
        self.releases.append(
            ReleaseRow(
                effect.customer_id,
                effect.exchange_id,
                effect.outcome,
                effect.order_id,
                effect.reason,
                None if entry is None else entry.entry_id,
                offset,
                at,
            )
        )
        return link

    def add_outcome(
        self,
        key: tuple[str, str, str],
        outcome: StoredOutcome,
        entry_id: uuid.UUID | None,
        partition: int,
        at: datetime,
    ) -> None:
        """The stored outcome of a command, under its idempotency key."""
        self.outcomes.append(
            OutcomeRow(
                *key, outcome.fingerprint, outcome.status, outcome.body, entry_id, partition, at
            )
        )

    def add_fact(self, partition: int, seq: int, event_id: str, key: str, payload: bytes) -> None:
        """A fact for the outbox, at the partition's outbox sequence ``seq``."""
        self.facts.append(FactRow(partition, seq, event_id, key, payload))

    def add_cursor(self, cursor: PartitionCursor, next_offset: int) -> None:
        """The conditional offset move for a partition (fences zombies)."""
        self.cursors.append(
            CursorRow(
                cursor.partition,
                cursor.next_offset,
                next_offset,
                cursor.epoch,
                cursor.outbox_seq,
                cursor.published_seq,
                self.chain_from.get(cursor.partition, cursor.chain_seq),
                cursor.chain_seq,
                cursor.chain_hash,
            )
        )


def _chain_columns(link: ChainLink | None) -> tuple[int | None, bytes | None, bytes | None]:
    """An entry row's chain columns (all None for an unchained entry)."""
    if link is None:
        return None, None, None
    return link.seq, link.prev_hash, link.entry_hash
