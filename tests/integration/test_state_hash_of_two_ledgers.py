"""The state hash on real databases: two ledgers written from the same commands (at different
times) hash equal, and one changed posting, balance, outcome or block changes the hash."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg
import pytest

from ledger import store
from ledger.state_hash import state_hash
from ledger_core.batch_rows import PartitionCursor
from ledger_core.commands import (
    Command,
    CreateCustomer,
    MoneyCommand,
    OpenBalance,
    SetBlocked,
    idempotency_key,
)
from ledger_core.plan import Incoming, plan_batch
from ledger_core.state import PartitionState, UndoLog
from wallet_stack import create_database, drop_database, dsn_for

pytestmark = pytest.mark.integration

COMMANDS: list[Command] = [
    CreateCustomer("amy", "c1"),
    OpenBalance("amy", "amy_USD", "USD", "o1"),
    MoneyCommand("deposit", "amy", "amy_USD", "d1", "10.00", "USD", "funding"),
    MoneyCommand("debit", "amy", "amy_USD", "r1", "2.50", "USD", "stake"),
    MoneyCommand("debit", "amy", "amy_USD", "r2", "99.00", "USD", "too much"),  # a stored 402
    MoneyCommand("credit", "amy", "amy_USD", "r3", "4.00", "USD", "payout"),
    CreateCustomer("bob", "c2"),
    SetBlocked("bob", True, "b1"),
]


@dataclass
class Memory:
    """A partition's memory, as the writer holds it."""

    cursor: PartitionCursor
    state: PartitionState


async def write_ledger(dsn: str, at: datetime, partition: int = 3) -> None:
    """Apply ``COMMANDS`` as the writer would, one batch planned by ``plan_batch``, stamped
    with ``at``."""
    conn = await asyncpg.connect(dsn)
    try:
        await store.ensure_currencies(conn)
        memory = Memory(
            await store.take_over(conn, partition), await store.load_partition(conn, partition)
        )
        at_ms = int(at.timestamp() * 1000)
        commands = [
            Incoming(partition, offset, at_ms, cmd, idempotency_key(cmd))
            for offset, cmd in enumerate(COMMANDS)
        ]
        plan = plan_batch(
            {partition: memory},
            commands,
            {partition: len(COMMANDS)},
            lambda p, key: None,
            UndoLog(),
            verified=True,
        )
        await store.apply_batch(conn, plan.rows)
    finally:
        await conn.close()


@pytest.fixture
async def two_ledgers(database: str, pg_template: str) -> AsyncIterator[tuple[str, str]]:
    other = await create_database(pg_template)
    try:
        await write_ledger(database, datetime(2026, 1, 1, tzinfo=UTC))
        await write_ledger(dsn_for(other), datetime(2026, 6, 30, 12, tzinfo=UTC))
        yield database, dsn_for(other)
    finally:
        await drop_database(other)


async def hash_of(dsn: str) -> str:
    conn = await asyncpg.connect(dsn)
    try:
        return (await state_hash(conn)).digest
    finally:
        await conn.close()


async def alter(dsn: str, sql: str) -> None:
    """Change a ledger by hand, past its append-only triggers."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "ALTER TABLE postings DISABLE TRIGGER USER;"
            "ALTER TABLE journal_entries DISABLE TRIGGER USER;" + sql
        )
    finally:
        await conn.close()


async def test_two_ledgers_of_the_same_commands_hash_equal_whatever_their_times(
    two_ledgers: tuple[str, str],
) -> None:
    first, second = two_ledgers
    conn = await asyncpg.connect(first)
    try:
        result = await state_hash(conn)
    finally:
        await conn.close()

    assert result.digest == await hash_of(second)
    # What it covered: two customers, one balance and the two shards posted to, three entries
    # of two postings each, every command's stored outcome, and the facts of all but the 402.
    assert result.counts == {
        "customers": 2,
        "accounts": 3,
        "entries": 3,
        "postings": 6,
        "reservations": 0,
        "outcomes": 8,
        "facts": 7,
    }
    assert result.offsets == {3: len(COMMANDS)}


async def test_writer_bookkeeping_does_not_change_the_hash(two_ledgers: tuple[str, str]) -> None:
    first, second = two_ledgers
    await alter(
        second,
        "UPDATE ledger_partitions SET epoch = epoch + 7, published_seq = 5;"
        "UPDATE journal_entries SET created_at = now();",
    )

    assert await hash_of(first) == await hash_of(second)


@pytest.mark.parametrize(
    "change",
    [
        # One posting's amount (and its counterpart's, so the entry still balances).
        "UPDATE postings SET amount = amount * 2 WHERE entry_id = (SELECT entry_id FROM "
        "journal_entries WHERE request_id = 'r1')",
        # A balance: the last posting's balance-after.
        "UPDATE postings SET balance_after = balance_after + 1 WHERE (account_id, seq) = "
        "(SELECT account_id, max(seq) FROM postings p JOIN accounts a USING (account_id) "
        "WHERE a.kind = 'customer' GROUP BY account_id)",
        # A stored outcome's body, and one's status.
        "UPDATE idempotency SET body = body || '\\x20'::bytea WHERE request_id = 'r2'",
        "UPDATE idempotency SET status = 400 WHERE request_id = 'r2'",
        # A block, an entry's comment, a fact's id.
        "UPDATE customers SET blocked = false WHERE customer_id = 'bob'",
        "UPDATE journal_entries SET comment = 'edited' WHERE request_id = 'r3'",
        "UPDATE outbox SET event_id = gen_random_uuid() WHERE seq = 1",
    ],
    ids=["posting", "balance", "outcome-body", "outcome-status", "block", "comment", "fact"],
)
async def test_one_changed_row_changes_the_hash(two_ledgers: tuple[str, str], change: str) -> None:
    first, second = two_ledgers
    await alter(second, change)

    assert await hash_of(first) != await hash_of(second)
