"""The ledger's Postgres side: load a partition, look up stored outcomes, apply a batch.

Moves bytes and holds transactions; decides nothing (that is ``ledger_core.decide``).
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

from ledger_core.currencies import EXPONENTS
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
from ledger_core.state import (
    SYSTEM_KINDS,
    Account,
    Customer,
    PartitionState,
    Reservation,
    system_account_id,
)

FENCED = "LF001"


class Fenced(RuntimeError):
    """Another writer took a partition over: this writer's batch did not land."""


class Fault(enum.Enum):
    """What a failed database call means for the batch it carried, and what the writer does."""

    FENCED = "fenced"  # the offset check failed: another writer, or an earlier batch failed
    DUPLICATE = "duplicate"  # a key was stored before: decide again, looking keys up
    REFUSED = "refused"  # the same rows will always be refused: find the command, answer it
    TRANSIENT = "transient"  # rolled back, may pass later: retry with backoff
    CONNECTION = "connection"  # the connection broke: the commit may or may not have happened


# What a database call can fail with: the server's errors, the client's (a broken connection
# can surface as an InternalClientError, "another operation is in progress"), and the network's.
DB_ERRORS = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    OSError,
    TimeoutError,
)

# Server errors that say the connection is going away (shutdown, crash recovery, starting up).
_CONNECTION_STATES = frozenset({"57P01", "57P02", "57P03"})


def classify(exc: BaseException) -> Fault:
    """Tell a deterministic refusal from a transient fault.

    Refused: data exceptions (class 22: text Postgres can not hold, a number beyond its column),
    integrity violations other than a duplicate key (class 23), and the batch function's own
    invariants (``LI...``). They fail the same way on every retry. Everything else the server
    says (serialization failures, deadlocks, lack of resources, a cancelled statement, even an
    unexpected error such as a missing function) is retried with backoff: refusing commands
    because of a fault of our own would turn an outage into wrong answers.
    """
    if isinstance(exc, Fenced):
        return Fault.FENCED
    if isinstance(
        exc,
        asyncpg.PostgresConnectionError
        | asyncpg.InterfaceError
        | asyncpg.InternalClientError
        | OSError,
    ):
        return Fault.CONNECTION
    if isinstance(exc, TimeoutError):
        return Fault.CONNECTION
    state = str(getattr(exc, "sqlstate", "") or "")
    if state in _CONNECTION_STATES:
        return Fault.CONNECTION
    if state == "23505":
        return Fault.DUPLICATE
    if state[:2] in ("22", "23") or state.startswith("LI"):
        return Fault.REFUSED
    return Fault.TRANSIENT


@dataclass(slots=True)
class PartitionCursor:
    """Where a partition stands in Postgres, as this writer last saw it."""

    partition: int
    epoch: int
    next_offset: int
    outbox_seq: int
    published_seq: int


async def ensure_currencies(conn: asyncpg.Connection) -> None:
    """Load the currency table from ``ledger_core``; refuse if a stored exponent differs."""
    codes = sorted(EXPONENTS)
    await conn.execute(
        """INSERT INTO currencies (code, exponent) SELECT * FROM unnest($1::text[], $2::int[])
           ON CONFLICT (code) DO NOTHING""",
        codes,
        [EXPONENTS[c] for c in codes],
    )
    rows = await conn.fetch("SELECT code, exponent FROM currencies")
    wrong = [r["code"] for r in rows if EXPONENTS.get(r["code"], r["exponent"]) != r["exponent"]]
    if wrong:
        raise RuntimeError(f"stored currency exponents differ from the code for {wrong}")


async def take_over(conn: asyncpg.Connection, partition: int) -> PartitionCursor:
    """Become the writer of ``partition``: bump its epoch (fencing any previous writer) and
    make sure its system-account shards exist."""
    async with conn.transaction():
        await conn.execute(
            "INSERT INTO ledger_partitions (partition) VALUES ($1) ON CONFLICT DO NOTHING",
            partition,
        )
        row = await conn.fetchrow(
            """UPDATE ledger_partitions SET epoch = epoch + 1 WHERE partition = $1
               RETURNING epoch, next_offset, outbox_seq, published_seq""",
            partition,
        )
        codes = sorted(EXPONENTS)
        ids, kinds, currencies = [], [], []
        for kind in SYSTEM_KINDS:
            for code in codes:
                ids.append(system_account_id(kind, code, partition))
                kinds.append(kind)
                currencies.append(code)
        await conn.execute(
            """INSERT INTO accounts (account_id, partition, kind, currency)
               SELECT x.id, $1, x.kind, x.cur FROM unnest($2::uuid[], $3::text[], $4::text[])
                   AS x(id, kind, cur)
               ON CONFLICT DO NOTHING""",
            partition,
            ids,
            kinds,
            currencies,
        )
    assert row is not None
    return PartitionCursor(
        partition, row["epoch"], row["next_offset"], row["outbox_seq"], row["published_seq"]
    )


async def load_partition(conn: asyncpg.Connection, partition: int) -> PartitionState:
    """Read a partition's customers and accounts, each account at its last posting, with the
    exchange reservations still open (and each balance's count of holds made and released)."""
    state = PartitionState(partition)
    for row in await conn.fetch(
        "SELECT customer_id, blocked FROM customers WHERE partition = $1", partition
    ):
        state.customers[row["customer_id"]] = Customer(blocked=row["blocked"])
    rows = await conn.fetch(
        """SELECT a.account_id, a.kind, a.customer_id, a.balance_id, a.currency,
                  coalesce(p.seq, 0) AS seq, coalesce(p.balance_after, 0) AS balance
             FROM accounts a
             LEFT JOIN LATERAL (SELECT seq, balance_after FROM postings
                                 WHERE account_id = a.account_id
                                 ORDER BY seq DESC LIMIT 1) p ON true
            WHERE a.partition = $1""",
        partition,
    )
    by_id: dict[uuid.UUID, Account] = {}
    for row in rows:
        account = Account(row["account_id"], row["currency"], int(row["balance"]), row["seq"])
        by_id[account.account_id] = account
        if row["kind"] == "customer":
            state.customers[row["customer_id"]].balances[row["balance_id"]] = account
        else:
            state.system[(row["kind"], row["currency"])] = account
    for row in await conn.fetch(
        """SELECT source_account, count(*) + count(released_at) AS holds
             FROM exchange_reservations WHERE partition = $1 GROUP BY source_account""",
        partition,
    ):
        by_id[row["source_account"]].holds = row["holds"]
    for row in await conn.fetch(
        """SELECT customer_id, exchange_id, source_balance_id, source_account,
                  target_balance_id, currency, amount
             FROM exchange_reservations WHERE partition = $1 AND status = 'open'""",
        partition,
    ):
        amount = int(row["amount"])
        by_id[row["source_account"]].reserved += amount
        state.customers[row["customer_id"]].reservations[row["exchange_id"]] = Reservation(
            row["exchange_id"],
            row["source_balance_id"],
            row["target_balance_id"],
            row["currency"],
            amount,
        )
    return state


async def unpublished_facts(
    conn: asyncpg.Connection, partition: int, after_seq: int
) -> list[asyncpg.Record]:
    """Outbox rows committed but not known to be on ledger.events (after a crash)."""
    rows: list[asyncpg.Record] = await conn.fetch(
        "SELECT seq, key, payload FROM outbox WHERE partition = $1 AND seq > $2 ORDER BY seq",
        partition,
        after_seq,
    )
    return rows


async def stored_outcomes(
    conn: asyncpg.Connection, keys: Sequence[tuple[str, str, str]]
) -> dict[tuple[str, str, str], StoredOutcome]:
    """Stored outcomes for the given idempotency keys (absent keys are simply missing)."""
    if not keys:
        return {}
    rows = await conn.fetch(
        """SELECT i.customer_id, i.scope, i.request_id, i.fingerprint, i.status, i.body
             FROM idempotency i
             JOIN unnest($1::text[], $2::text[], $3::text[]) AS k(c, s, r)
               ON i.customer_id = k.c AND i.scope = k.s AND i.request_id = k.r""",
        [k[0] for k in keys],
        [k[1] for k in keys],
        [k[2] for k in keys],
    )
    return {
        (r["customer_id"], r["scope"], r["request_id"]): StoredOutcome(
            bytes(r["fingerprint"]), r["status"], bytes(r["body"])
        )
        for r in rows
    }


@dataclass(slots=True)
class BatchRows:
    """Column arrays for one call of ``ledger_apply_batch``."""

    lp: list[list[int]] = field(default_factory=lambda: [[] for _ in range(6)])
    customers: list[list[object]] = field(default_factory=lambda: [[] for _ in range(3)])
    blocks: dict[str, tuple[bool, datetime]] = field(default_factory=dict)
    accounts: list[list[object]] = field(default_factory=lambda: [[] for _ in range(6)])
    entries: list[list[object]] = field(default_factory=lambda: [[] for _ in range(12)])
    postings: list[list[object]] = field(default_factory=lambda: [[] for _ in range(7)])
    outcomes: list[list[object]] = field(default_factory=lambda: [[] for _ in range(9)])
    outbox: list[list[object]] = field(default_factory=lambda: [[] for _ in range(5)])
    reservations: list[list[object]] = field(default_factory=lambda: [[] for _ in range(12)])
    releases: list[list[object]] = field(default_factory=lambda: [[] for _ in range(8)])

    @staticmethod
    def add(columns: Sequence[list[Any]], values: Iterable[object]) -> None:
        for column, value in zip(columns, values, strict=True):
            column.append(value)

    def add_effects(self, decision: Decision, partition: int, offset: int, at: datetime) -> None:
        """Rows for a decision's effects (customers, accounts, blocks, entries, postings,
        exchange reservations and their releases)."""
        for effect in decision.effects:
            if isinstance(effect, JournalEntry):
                self.add(
                    self.entries,
                    (
                        effect.entry_id,
                        partition,
                        offset,
                        effect.kind,
                        effect.customer_id,
                        effect.balance_id,
                        effect.request_id,
                        effect.currency,
                        effect.amount,
                        effect.comment,
                        at,
                        None,
                    ),
                )
                for i, p in enumerate(effect.postings):
                    # The first posting is the customer's: it may not go negative. A single-
                    # currency entry states no currency per posting (NULL: the entry's).
                    self.add(
                        self.postings,
                        (
                            effect.entry_id,
                            p.account_id,
                            p.seq,
                            p.amount,
                            p.balance_after,
                            i == 0,
                            None,
                        ),
                    )
            elif isinstance(effect, ReservationMade):
                self.add(
                    self.reservations,
                    (
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
                    ),
                )
            elif isinstance(effect, ReservationReleased):
                self._add_release(effect, partition, offset, at)
            elif isinstance(effect, NewCustomer):
                self.add(self.customers, (effect.customer_id, partition, at))
            elif isinstance(effect, NewAccount):
                self.add(
                    self.accounts,
                    (
                        effect.account_id,
                        partition,
                        "customer",
                        effect.customer_id,
                        effect.balance_id,
                        effect.currency,
                    ),
                )
            else:
                assert isinstance(effect, BlockChange)
                self.blocks[effect.customer_id] = (effect.blocked, at)

    def _add_release(
        self, effect: ReservationReleased, partition: int, offset: int, at: datetime
    ) -> None:
        entry = effect.entry
        if entry is not None:
            self.add(
                self.entries,
                (
                    entry.entry_id,
                    partition,
                    offset,
                    entry.kind,
                    entry.customer_id,
                    entry.source_balance_id,
                    entry.exchange_id,
                    entry.currency,
                    entry.amount,
                    entry.comment,
                    at,
                    entry.order_id,
                ),
            )
            for p in entry.postings:
                self.add(
                    self.postings,
                    (
                        entry.entry_id,
                        p.account_id,
                        p.seq,
                        p.amount,
                        p.balance_after,
                        p.balance_id is not None,
                        p.currency,
                    ),
                )
        self.add(
            self.releases,
            (
                effect.customer_id,
                effect.exchange_id,
                effect.outcome,
                effect.order_id,
                effect.reason,
                None if entry is None else entry.entry_id,
                offset,
                at,
            ),
        )

    def add_outcome(
        self,
        key: tuple[str, str, str],
        outcome: StoredOutcome,
        entry_id: uuid.UUID | None,
        partition: int,
        at: datetime,
    ) -> None:
        self.add(
            self.outcomes,
            (*key, outcome.fingerprint, outcome.status, outcome.body, entry_id, partition, at),
        )

    def add_cursor(self, cursor: PartitionCursor, next_offset: int) -> None:
        """The conditional offset move for a partition (fences zombies)."""
        self.add(
            self.lp,
            (
                cursor.partition,
                cursor.next_offset,
                next_offset,
                cursor.epoch,
                cursor.outbox_seq,
                cursor.published_seq,
            ),
        )


_APPLY = "SELECT ledger_apply_batch(" + ", ".join(f"${i}" for i in range(1, 72)) + ")"


async def apply_batch(conn: asyncpg.Connection, rows: BatchRows) -> None:
    """Write one batch in one statement (one transaction); raise :class:`Fenced` if fenced."""
    block_ids = list(rows.blocks)
    args = [
        *rows.lp,
        *rows.customers,
        block_ids,
        [rows.blocks[c][0] for c in block_ids],
        [rows.blocks[c][1] for c in block_ids],
        *rows.accounts,
        *rows.entries,
        *rows.postings,
        *rows.outcomes,
        *rows.outbox,
        *rows.reservations,
        *rows.releases,
    ]
    try:
        await conn.execute(_APPLY, *args)
    except asyncpg.PostgresError as exc:
        if getattr(exc, "sqlstate", None) == FENCED:
            raise Fenced(str(exc)) from exc
        raise


async def save_published(conn: asyncpg.Connection, cursor: PartitionCursor) -> None:
    """Record how far facts are known published (only while this writer owns the partition)."""
    await conn.execute(
        """UPDATE ledger_partitions SET published_seq = greatest(published_seq, $2)
            WHERE partition = $1 AND epoch = $3""",
        cursor.partition,
        cursor.published_seq,
        cursor.epoch,
    )


async def stored_epoch(conn: asyncpg.Connection, partition: int) -> int | None:
    """The epoch of the writer that owns ``partition`` now, as Postgres knows it."""
    epoch: int | None = await conn.fetchval(
        "SELECT epoch FROM ledger_partitions WHERE partition = $1", partition
    )
    return epoch
