"""The books in Postgres (schema ``accounting``): loading the sequencing state, writing one batch
of booked facts with the Kafka positions that produced it in one transaction, and the queries the
exports read."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime

import asyncpg

from ledger_books.books import BalanceKey, BalancePosition, Books, Delivered
from wallet_platform.schema import MigrationSet

BOOKS = MigrationSet(
    package="accounting.migrations",
    table="accounting.schema_migrations",
    lock_id=0x41434354,  # "ACCT": not the wallet's lock, so the two never wait for each other
    schema="accounting",
)
"""The accounting consumer's own migrations, recorded in its own schema."""


class PositionMoved(RuntimeError):
    """A partition's stored Kafka position is not the one this consumer read: another
    consumer booked it meanwhile (after a rebalance); the batch is rolled back."""


@dataclass(slots=True)
class BookingBatch:
    """What one transaction writes: the facts booked, their lines, and where the books stand."""

    facts: list[tuple[str, str, str, int, int, datetime]] = field(default_factory=list)
    lines: list[tuple[str, str, str, str, str, str, str, int, date, datetime]] = field(
        default_factory=list
    )
    accounts: dict[str, tuple[str, str, str, str, int]] = field(default_factory=dict)
    daily: dict[tuple[str, date], tuple[int, int, int]] = field(default_factory=dict)
    positions: dict[BalanceKey, tuple[int, int]] = field(default_factory=dict)
    # partition -> (the stored position this batch follows, or None; the new position)
    kafka: dict[int, tuple[int | None, int]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.facts or self.kafka)


def batch_of(
    booked: Sequence[Delivered],
    positions: dict[BalanceKey, BalancePosition],
    kafka: dict[int, tuple[int | None, int]],
) -> BookingBatch:
    """The rows for ``booked`` (in booking order), with the balances' positions as they stand
    after them and the Kafka positions to store."""
    batch = BookingBatch(kafka=dict(kafka))
    for d in booked:
        f = d.fact
        batch.facts.append(
            (f.event_id, f.type, f.customer_id, d.partition, d.offset, f.occurred_at)
        )
        for claim in f.claims:
            key = (claim.customer_id, claim.balance_id)
            p = positions[key]
            batch.positions[key] = (p.balance_seq, p.hold_seq)
        for line in f.lines:
            batch.lines.append(
                (
                    f.event_id,
                    f.entry_id,
                    f.type,
                    f.kind,
                    f.reference,
                    line.account_id,
                    line.currency,
                    line.amount,
                    f.day,
                    f.occurred_at,
                )
            )
            known = batch.accounts.get(line.account_id)
            delta = line.amount + (known[4] if known else 0)
            batch.accounts[line.account_id] = (
                line.account,
                line.customer_id,
                line.balance_id,
                line.currency,
                delta,
            )
            debits, credits, count = batch.daily.get((line.account_id, f.day), (0, 0, 0))
            if line.amount < 0:
                debits -= line.amount
            else:
                credits += line.amount
            batch.daily[(line.account_id, f.day)] = (debits, credits, count + 1)
    return batch


async def load_books(conn: asyncpg.Connection) -> tuple[Books, dict[int, int]]:
    """The sequencing state and the stored Kafka positions, read in one snapshot."""
    books = Books()
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        for r in await conn.fetch(
            """SELECT customer_id, balance_id, balance_seq, hold_seq
                 FROM accounting.balance_positions"""
        ):
            books.positions[(r["customer_id"], r["balance_id"])] = BalancePosition(
                r["balance_seq"], r["hold_seq"]
            )
        for r in await conn.fetch(
            "SELECT event_id FROM accounting.facts WHERE type LIKE 'customer.%'"
        ):
            books.seen.add(str(r["event_id"]))
        rows = await conn.fetch(
            "SELECT kafka_partition, next_offset FROM accounting.kafka_positions"
        )
    return books, {r["kafka_partition"]: r["next_offset"] for r in rows}


async def write_batch(conn: asyncpg.Connection, batch: BookingBatch) -> None:
    """Store a batch and its Kafka positions in one transaction; raises :class:`PositionMoved`
    (and stores nothing) if a partition's stored position is not the expected one."""
    facts, lines = batch.facts, batch.lines
    accounts = list(batch.accounts.items())
    daily = list(batch.daily.items())
    positions = list(batch.positions.items())
    async with conn.transaction():
        for partition, (expected, new) in sorted(batch.kafka.items()):
            if expected is None:
                status = await conn.execute(
                    """INSERT INTO accounting.kafka_positions (kafka_partition, next_offset)
                       VALUES ($1, $2) ON CONFLICT DO NOTHING""",
                    partition,
                    new,
                )
            else:
                status = await conn.execute(
                    """UPDATE accounting.kafka_positions SET next_offset = $2
                        WHERE kafka_partition = $1 AND next_offset = $3""",
                    partition,
                    new,
                    expected,
                )
            if not status.endswith(" 1"):
                raise PositionMoved(f"partition {partition}: stored position is not {expected}")
        if facts:
            await conn.execute(
                """INSERT INTO accounting.facts
                          (event_id, type, customer_id, kafka_partition, kafka_offset, occurred_at)
                   SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::int[],
                                        $5::bigint[], $6::timestamptz[])""",
                *_columns(facts, 6),
            )
        if accounts:
            await conn.execute(
                """INSERT INTO accounting.accounts
                          (account_id, account, customer_id, balance_id, currency, balance)
                   SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[],
                                        $5::text[], $6::numeric[])
                   ON CONFLICT (account_id) DO UPDATE
                      SET balance = accounts.balance + excluded.balance""",
                [a for a, _ in accounts],
                *_columns([row for _, row in accounts], 5),
            )
        if lines:
            await conn.execute(
                """INSERT INTO accounting.gl_lines
                          (event_id, entry_id, fact_type, kind, reference, account_id, currency,
                           amount, day, occurred_at)
                   SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[],
                                        $5::text[], $6::uuid[], $7::text[], $8::numeric[],
                                        $9::date[], $10::timestamptz[])""",
                *_columns(lines, 10),
            )
        if daily:
            await conn.execute(
                """INSERT INTO accounting.daily_movements (account_id, day, debits, credits, lines)
                   SELECT * FROM unnest($1::uuid[], $2::date[], $3::numeric[], $4::numeric[],
                                        $5::bigint[])
                   ON CONFLICT (account_id, day) DO UPDATE
                      SET debits = daily_movements.debits + excluded.debits,
                          credits = daily_movements.credits + excluded.credits,
                          lines = daily_movements.lines + excluded.lines""",
                [k[0] for k, _ in daily],
                [k[1] for k, _ in daily],
                *_columns([v for _, v in daily], 3),
            )
        if positions:
            await conn.execute(
                """INSERT INTO accounting.balance_positions
                          (customer_id, balance_id, balance_seq, hold_seq)
                   SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[])
                   ON CONFLICT (customer_id, balance_id) DO UPDATE
                      SET balance_seq = excluded.balance_seq, hold_seq = excluded.hold_seq""",
                [k[0] for k, _ in positions],
                [k[1] for k, _ in positions],
                *_columns([v for _, v in positions], 2),
            )


def _columns(rows: Sequence[tuple[object, ...]], width: int) -> list[list[object]]:
    return [[row[i] for row in rows] for i in range(width)]


async def trial_balance(conn: asyncpg.Connection, as_of: date | None) -> list[asyncpg.Record]:
    """Per currency and account (kind), the sums of debits and credits and the balance (+ a
    credit balance) of every line up to and including ``as_of`` (all lines if None)."""
    rows: list[asyncpg.Record] = await conn.fetch(
        """SELECT a.currency, a.account, sum(m.debits) AS debits, sum(m.credits) AS credits,
                  sum(m.credits - m.debits) AS balance
             FROM accounting.daily_movements m
             JOIN accounting.accounts a USING (account_id)
            WHERE $1::date IS NULL OR m.day <= $1
            GROUP BY a.currency, a.account
            ORDER BY a.currency, a.account""",
        as_of,
    )
    return rows


async def account_balances(conn: asyncpg.Connection) -> dict[str, int]:
    """Every account's balance in the books (minor units, + credit), by ledger account id."""
    rows = await conn.fetch("SELECT account_id, balance FROM accounting.accounts")
    return {str(r["account_id"]): int(r["balance"]) for r in rows}


async def lines_between(conn: asyncpg.Connection, first: date, last: date) -> list[asyncpg.Record]:
    """The general-ledger lines of the days ``first`` to ``last`` (inclusive), in booking order."""
    rows: list[asyncpg.Record] = await conn.fetch(
        """SELECT l.day, l.occurred_at, l.event_id, l.entry_id, l.fact_type, l.kind, l.reference,
                  a.account, l.account_id, a.customer_id, a.balance_id, l.currency, l.amount
             FROM accounting.gl_lines l
             JOIN accounting.accounts a USING (account_id)
            WHERE l.day BETWEEN $1 AND $2
            ORDER BY l.day, l.line_id""",
        first,
        last,
    )
    return rows


async def daily_balances_between(
    conn: asyncpg.Connection, first: date, last: date
) -> list[asyncpg.Record]:
    """Per account and day with movements in ``first``..``last``: the day's debits and credits
    and the closing balance (a running sum over every earlier day too)."""
    rows: list[asyncpg.Record] = await conn.fetch(
        """SELECT * FROM (
               SELECT m.day, a.account, m.account_id, a.customer_id, a.balance_id, a.currency,
                      m.debits, m.credits,
                      sum(m.credits - m.debits) OVER (PARTITION BY m.account_id ORDER BY m.day)
                          AS closing
                 FROM accounting.daily_movements m
                 JOIN accounting.accounts a USING (account_id)
                WHERE m.day <= $2) d
            WHERE d.day >= $1
            ORDER BY d.day, d.currency, d.account, d.customer_id, d.balance_id, d.account_id""",
        first,
        last,
    )
    return rows
