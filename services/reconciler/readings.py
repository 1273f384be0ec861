"""What the reconciler reads: the ledger's, the projection's and the books' rows in Postgres
(read-only, in REPEATABLE READ snapshots where several tables must agree), and end offsets and
the last records of partitions in Kafka. Each query's cost is in ``docs/reconciliation.md``.
Moves bytes only; ``reconciler.comparison`` decides what differs."""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from typing import Final

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition

from reconciler.comparison import (
    BookedAccount,
    KindTotal,
    OutboxPosition,
    ProjectedBalance,
    StoredOffset,
)
from wallet_platform import kafka_admin
from wallet_platform.kafka import make_consumer

# Every connection of the reconciler is read-only and bounded: it can neither change a row by
# mistake nor hold a snapshot open for long. The name shows it in pg_stat_activity.
SERVER_SETTINGS: Final = {
    "application_name": "reconciler",
    "default_transaction_read_only": "on",
    "statement_timeout": "30000",
}


async def connect(dsn: str) -> asyncpg.Connection:
    """A read-only connection of the reconciler's own (one attempt; the next round retries)."""
    return await asyncpg.connect(dsn, timeout=5.0, server_settings=SERVER_SETTINGS)


# The last balance of every account: one probe of the postings primary key (account_id, seq)
# per account, backwards from its last posting.
_TRIAL_BALANCE = """
    SELECT a.currency, a.kind, sum(l.balance_after) AS total
      FROM accounts a
      CROSS JOIN LATERAL (SELECT balance_after FROM postings p
                           WHERE p.account_id = a.account_id
                           ORDER BY seq DESC LIMIT 1) l
     GROUP BY a.currency, a.kind"""


async def kind_totals(conn: asyncpg.Connection) -> list[KindTotal]:
    """Per currency and account kind, the sum of the accounts' last balances (one snapshot, so
    a batch the writer commits meanwhile is either wholly in it or not at all)."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        rows = await conn.fetch(_TRIAL_BALANCE)
    return [KindTotal(r["currency"], r["kind"], int(r["total"])) for r in rows]


# Every customer balance of the ledger and of the projection, side by side: per balance the
# ledger's posting at the projection's seq and its last posting (two probes of the postings
# primary key; LIMIT 1 keeps each a per-row probe the planner cannot turn into a scan), and,
# only for a balance the projection saw a hold on, the holds of its customer (the
# exchange_reservations primary key starts with customer_id).
_PROJECTED_BALANCES = """
    SELECT coalesce(v.customer_id, a.customer_id) AS customer_id,
           coalesce(v.balance_id, a.balance_id) AS balance_id,
           v.customer_id IS NOT NULL AS projected, v.currency, coalesce(v.amount, 0) AS amount,
           coalesce(v.seq, 0) AS seq, coalesce(v.reserved, 0) AS reserved,
           coalesce(v.hold_seq, 0) AS hold_seq,
           a.account_id::text AS account_id, a.currency AS ledger_currency,
           coalesce(last.seq, 0) AS ledger_seq, at_seq.balance_after AS ledger_amount_at_seq,
           h.holds AS ledger_holds, h.held AS ledger_held
      FROM balance_view v
      FULL JOIN (SELECT account_id, customer_id, balance_id, currency FROM accounts
                  WHERE kind = 'customer') a
        ON (a.customer_id, a.balance_id) = (v.customer_id, v.balance_id)
      LEFT JOIN LATERAL (SELECT seq FROM postings p WHERE p.account_id = a.account_id
                          ORDER BY seq DESC LIMIT 1) last ON true
      LEFT JOIN LATERAL (SELECT balance_after FROM postings p
                          WHERE p.account_id = a.account_id AND p.seq = v.seq
                          LIMIT 1) at_seq ON true
      LEFT JOIN LATERAL (SELECT count(*) + count(r.released_at) AS holds,
                                coalesce(sum(r.amount) FILTER (WHERE r.status = 'open'), 0)
                                    AS held
                           FROM exchange_reservations r
                          WHERE v.hold_seq > 0 AND r.customer_id = a.customer_id
                            AND r.source_account = a.account_id) h ON true"""


async def projected_balances(conn: asyncpg.Connection) -> list[ProjectedBalance]:
    """The projection's balances and the ledger's, read in one snapshot."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        rows = await conn.fetch(_PROJECTED_BALANCES)
    return [
        ProjectedBalance(
            customer_id=r["customer_id"],
            balance_id=r["balance_id"],
            projected=r["projected"],
            currency=r["currency"] or "",
            amount=int(r["amount"]),
            seq=r["seq"],
            reserved=int(r["reserved"]),
            hold_seq=r["hold_seq"],
            account_id=r["account_id"],
            ledger_currency=r["ledger_currency"],
            ledger_seq=r["ledger_seq"],
            ledger_amount_at_seq=_int_or_none(r["ledger_amount_at_seq"]),
            ledger_holds=int(r["ledger_holds"] or 0),
            ledger_held=int(r["ledger_held"] or 0),
        )
        for r in rows
    ]


def _int_or_none(value: object) -> int | None:
    return None if value is None else int(value)  # type: ignore[call-overload]


async def books_installed(conn: asyncpg.Connection) -> bool:
    """Whether the reference consumer's books exist in this database."""
    found: bool = await conn.fetchval(
        """SELECT to_regclass('accounting.accounts') IS NOT NULL
              AND to_regclass('accounting.balance_positions') IS NOT NULL
              AND to_regclass('accounting.daily_movements') IS NOT NULL"""
    )
    return found


# Per account the books know: its balance and how far it is booked. A customer balance's
# position is one probe of balance_positions' primary key; a system shard's number of lines is a
# range of daily_movements' primary key (account_id, day): one row per day it moved.
_BOOKED_ACCOUNTS = """
    SELECT a.account_id::text AS account_id, a.account, a.customer_id, a.balance_id, a.currency,
           a.balance,
           CASE WHEN a.account = 'customer'
                THEN (SELECT bp.balance_seq FROM accounting.balance_positions bp
                       WHERE (bp.customer_id, bp.balance_id) = (a.customer_id, a.balance_id))
                ELSE (SELECT sum(m.lines) FROM accounting.daily_movements m
                       WHERE m.account_id = a.account_id)::bigint
           END AS booked_seq
      FROM accounting.accounts a"""

# The ledger's side of each booked account: whether it exists, its last posting, and its balance
# after the booked posting (postings are append-only, so this needs no snapshot shared with the
# books: the posting at a seq never changes).
_LEDGER_AT = """
    SELECT x.account_id::text AS account_id, acc.account_id IS NOT NULL AS known,
           coalesce(last.seq, 0) AS ledger_seq, p.balance_after
      FROM unnest($1::uuid[], $2::bigint[]) AS x(account_id, seq)
      LEFT JOIN accounts acc ON acc.account_id = x.account_id
      LEFT JOIN LATERAL (SELECT p.balance_after FROM postings p
                          WHERE p.account_id = x.account_id AND p.seq = x.seq LIMIT 1) p ON true
      LEFT JOIN LATERAL (SELECT q.seq FROM postings q WHERE q.account_id = x.account_id
                          ORDER BY q.seq DESC LIMIT 1) last ON true"""


async def booked_accounts(
    books: asyncpg.Connection, ledger: asyncpg.Connection
) -> list[BookedAccount]:
    """The books' accounts (one snapshot of the books), each with the ledger's side as of what
    the books booked for it. The books are read first: the ledger can only have grown since."""
    async with books.transaction(isolation="repeatable_read", readonly=True):
        booked = await books.fetch(_BOOKED_ACCOUNTS)
    ids = [uuid.UUID(r["account_id"]) for r in booked]
    seqs = [r["booked_seq"] for r in booked]
    ledger_side = {r["account_id"]: r for r in await ledger.fetch(_LEDGER_AT, ids, seqs)}
    accounts = []
    for r in booked:
        side = ledger_side[r["account_id"]]
        accounts.append(
            BookedAccount(
                account_id=r["account_id"],
                account=r["account"],
                customer_id=r["customer_id"],
                balance_id=r["balance_id"],
                currency=r["currency"],
                balance=int(r["balance"]),
                booked_seq=r["booked_seq"],
                ledger_known=side["known"],
                ledger_seq=side["ledger_seq"],
                ledger_amount_at_seq=_int_or_none(side["balance_after"]),
            )
        )
    return accounts


async def outbox_positions(conn: asyncpg.Connection) -> list[OutboxPosition]:
    """Per ledger partition, its last fact committed and the last one recorded published."""
    rows = await conn.fetch("SELECT partition, outbox_seq, published_seq FROM ledger_partitions")
    return [OutboxPosition(r["partition"], r["outbox_seq"], r["published_seq"]) for r in rows]


async def outbox_facts(
    conn: asyncpg.Connection, partition: int, first: int, last: int, limit: int
) -> list[tuple[int, bytes]]:
    """Facts ``first``..``last`` of a partition's outbox (at most ``limit``), in seq order: a
    range of the outbox primary key."""
    rows = await conn.fetch(
        """SELECT seq, payload FROM outbox WHERE partition = $1 AND seq BETWEEN $2 AND $3
            ORDER BY seq LIMIT $4""",
        partition,
        first,
        last,
        limit,
    )
    return [(r["seq"], bytes(r["payload"])) for r in rows]


async def stored_offsets(conn: asyncpg.Connection, table: str) -> dict[int, int]:
    """The offsets a reader stored: ``ledger_partitions``, ``projection_offsets`` or
    ``accounting.kafka_positions`` (each a table of one row per partition)."""
    sql = {
        "ledger_partitions": "SELECT partition AS p, next_offset AS o FROM ledger_partitions",
        "projection_offsets": "SELECT partition AS p, next_offset AS o FROM projection_offsets",
        "accounting.kafka_positions": """SELECT kafka_partition AS p, next_offset AS o
                                           FROM accounting.kafka_positions""",
    }[table]
    return {r["p"]: r["o"] for r in await conn.fetch(sql)}


def stored_against_ends(
    reader: str, topic: str, stored: dict[int, int], ends: dict[int, int]
) -> list[StoredOffset]:
    """Pair each stored offset with its partition's end offset."""
    return [StoredOffset(reader, topic, p, o, ends.get(p)) for p, o in stored.items()]


TAIL_TIMEOUT: Final = 10.0
"""Seconds a read of a partition's last records may take."""


class TopicReader:
    """A Kafka client of the reconciler's own, in no consumer group: end offsets, and the last
    records of one partition."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self.consumer: AIOKafkaConsumer = make_consumer(bootstrap, "reconciler")

    async def start(self) -> None:
        """Connect (the caller waited for Kafka)."""
        await self.consumer.start()

    async def stop(self) -> None:
        """Disconnect."""
        await self.consumer.stop()

    async def end_offsets(self, names: Sequence[str]) -> dict[str, dict[int, int]]:
        """Every partition's end offset (the offset the next record will get), per topic. The
        partitions are asked of the broker each time: a recreated topic shows as it is now."""
        counts = await kafka_admin.partition_counts(self.bootstrap)
        wanted = [TopicPartition(t, p) for t in names for p in range(counts.get(t, 0))]
        found = await self.consumer.end_offsets(wanted) if wanted else {}
        ends: dict[str, dict[int, int]] = {t: {} for t in names}
        for tp, offset in found.items():
            ends[tp.topic][tp.partition] = offset
        return ends

    async def last_records(self, topic: str, partition: int, count: int) -> set[bytes]:
        """The values of (up to) the last ``count`` records of one partition."""
        tp = TopicPartition(topic, partition)
        begin = (await self.consumer.beginning_offsets([tp]))[tp]
        end = (await self.consumer.end_offsets([tp]))[tp]
        self.consumer.assign([tp])
        self.consumer.seek(tp, max(begin, end - count))
        values: set[bytes] = set()
        deadline = time.monotonic() + TAIL_TIMEOUT
        while await self.consumer.position(tp) < end:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic}[{partition}]: last {count} records not read in time")
            batches = await self.consumer.getmany(tp, timeout_ms=500)
            values.update(bytes(m.value) for m in batches.get(tp, ()) if m.value is not None)
        self.consumer.unsubscribe()  # no fetching in the background between rounds
        return values
