"""The journal's hash chain on a real database: written with each batch, verified from the stored
rows, and a hand-altered row (append-only triggers disabled) found at its entry."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import pytest

from ledger import store
from ledger.chain import verify_chains
from ledger_core.batch_rows import BatchRows, PartitionCursor
from ledger_core.commands import (
    Command,
    CreateCustomer,
    ExchangeReserve,
    ExchangeSettle,
    MoneyCommand,
    OpenBalance,
)
from ledger_core.decide import apply, decide
from ledger_core.facts import facts_for
from ledger_core.state import PartitionState, UndoLog

pytestmark = pytest.mark.integration

AT = datetime(2026, 1, 1, 9, 0, 0, 250000, tzinfo=UTC)
PARTITION = 5


@pytest.fixture
async def conn(database: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(database)
    await store.ensure_currencies(connection)
    yield connection
    await connection.close()


class Writer:
    """The writer's batch building for one partition (decide, apply, chain, facts), no Kafka."""

    def __init__(self, cursor: PartitionCursor, state: PartitionState) -> None:
        self.cursor, self.state = cursor, state

    def batch(self, commands: list[Command], *, chained: bool = True) -> BatchRows:
        rows = BatchRows()
        undo = UndoLog()
        for cmd in commands:
            decision = decide(self.state, cmd, None)
            assert decision.outcome.status < 300, decision.outcome.body
            apply(self.state, decision, undo)
            offset = self.cursor.next_offset
            links = rows.add_effects(
                decision, PARTITION, offset, AT, self.cursor if chained else None, undo
            )
            for fact in facts_for(decision, PARTITION, int(AT.timestamp() * 1000), links):
                self.cursor.outbox_seq += 1
                rows.add_fact(
                    PARTITION, self.cursor.outbox_seq, fact.event_id, fact.key, fact.payload
                )
            rows.add_cursor(self.cursor, offset + 1)
            self.cursor.next_offset = offset + 1
            rows.cursors = rows.cursors[-1:]  # one cursor row per partition: the batch's last
        # The cursor row must expect the offset the batch started at.
        first = rows.cursors[0]
        rows.cursors = [first._replace(expected_offset=self.cursor.next_offset - len(commands))]
        return rows


async def writer(conn: asyncpg.Connection) -> Writer:
    cursor = await store.take_over(conn, PARTITION)
    return Writer(cursor, await store.load_partition(conn, PARTITION))


def money(kind: str, request: str, amount: str, balance: str = "usdt") -> MoneyCommand:
    currency = "USDT" if balance == "usdt" else "BTC"
    return MoneyCommand(kind, "ann", balance, request, amount, currency, f"{kind} {request}")


async def write_traffic(conn: asyncpg.Connection) -> Writer:
    w = await writer(conn)
    await store.apply_batch(
        conn,
        w.batch(
            [
                CreateCustomer("ann", "c"),
                OpenBalance("ann", "usdt", "USDT", "o1"),
                OpenBalance("ann", "btc", "BTC", "o2"),
                money("deposit", "d1", "100"),
                money("debit", "t1", "7.5"),
            ]
        ),
    )
    await store.apply_batch(
        conn,
        w.batch(
            [
                ExchangeReserve("ann", "x1", "usdt", "btc", "60", "USDT", "BTC", "to BTC"),
                ExchangeSettle("ann", "x1", "order-1", "BTC", "0.00119", "0.00000007", "0", "0"),
                money("credit", "t2", "2.25"),
            ]
        ),
    )
    return w


async def test_chain_written_with_batches_verifies(conn: asyncpg.Connection) -> None:
    w = await write_traffic(conn)
    report = await verify_chains(conn)
    assert report.intact, report.first_break
    (found,) = [p for p in report.partitions if p.partition == PARTITION]
    assert (found.entries, found.head_seq, found.head_hash) == (
        4,
        w.cursor.chain_seq,
        w.cursor.chain_hash,
    )
    # The head a new writer takes over is the stored one: it continues the chain.
    again = await store.take_over(conn, PARTITION)
    assert (again.chain_seq, again.chain_hash) == (4, w.cursor.chain_hash)


async def test_hand_altered_posting_is_caught_at_its_entry(conn: asyncpg.Connection) -> None:
    await write_traffic(conn)
    target = await conn.fetchrow(
        """SELECT e.entry_id, e.chain_seq, p.account_id, p.seq FROM journal_entries e
             JOIN postings p USING (entry_id)
            WHERE e.kind = 'exchange' ORDER BY p.amount LIMIT 1"""
    )
    await conn.execute("ALTER TABLE postings DISABLE TRIGGER postings_append_only")
    await conn.execute(
        "UPDATE postings SET balance_after = balance_after + 1 WHERE account_id = $1 AND seq = $2",
        target["account_id"],
        target["seq"],
    )
    report = await verify_chains(conn, [PARTITION])
    broken = report.first_break
    assert broken is not None
    assert (broken.chain_seq, broken.entry_id) == (target["chain_seq"], str(target["entry_id"]))
    assert "differ from what was hashed" in broken.reason
    assert f"posting of account {target['account_id']} seq {target['seq']}" in broken.reason
    assert "balance_after" in broken.reason
    assert broken.stored != broken.recomputed


async def test_an_altered_entry_and_a_relinked_chain_are_caught(conn: asyncpg.Connection) -> None:
    await write_traffic(conn)
    await conn.execute("ALTER TABLE journal_entries DISABLE TRIGGER journal_entries_append_only")
    await conn.execute("UPDATE journal_entries SET comment = 'edited' WHERE chain_seq = 2")
    broken = (await verify_chains(conn, [PARTITION])).first_break
    assert broken is not None and broken.chain_seq == 2
    assert "comment 'debit t1' -> 'edited'" in broken.reason

    # Rehashing the altered entry hides nothing: the next entry's link no longer holds.
    await conn.execute("UPDATE journal_entries SET comment = 'debit t1' WHERE chain_seq = 2")
    await conn.execute(
        "UPDATE journal_entries SET entry_hash = sha256('forged') WHERE chain_seq = 2"
    )
    broken = (await verify_chains(conn, [PARTITION])).first_break
    assert broken is not None and broken.chain_seq == 2  # its own hash no longer matches


async def test_a_removed_entry_is_caught(conn: asyncpg.Connection) -> None:
    await write_traffic(conn)
    for table in ("journal_entries", "postings", "exchange_reservations"):
        await conn.execute(f"ALTER TABLE {table} DISABLE TRIGGER USER")
    await conn.execute(
        """DELETE FROM postings WHERE entry_id IN
               (SELECT entry_id FROM journal_entries WHERE chain_seq IN (2, 4))"""
    )
    await conn.execute("DELETE FROM journal_entries WHERE chain_seq = 4")
    broken = (await verify_chains(conn, [PARTITION])).first_break
    assert broken is not None and broken.chain_seq == 2  # its postings went first
    await conn.execute(
        """UPDATE exchange_reservations SET entry_id = NULL
            WHERE entry_id IN (SELECT entry_id FROM journal_entries WHERE chain_seq = 2)"""
    )
    await conn.execute("DELETE FROM journal_entries WHERE chain_seq = 2")
    broken = (await verify_chains(conn, [PARTITION])).first_break
    assert broken is not None and broken.chain_seq == 3
    assert "chain_seq 2 is missing" in broken.reason


async def test_a_removed_last_entry_is_caught_by_the_head(conn: asyncpg.Connection) -> None:
    await write_traffic(conn)
    await conn.execute("ALTER TABLE journal_entries DISABLE TRIGGER USER")
    await conn.execute("ALTER TABLE postings DISABLE TRIGGER USER")
    await conn.execute(
        """DELETE FROM postings WHERE entry_id IN
               (SELECT entry_id FROM journal_entries WHERE chain_seq = 4)"""
    )
    await conn.execute("DELETE FROM journal_entries WHERE chain_seq = 4")
    broken = (await verify_chains(conn, [PARTITION])).first_break
    assert broken is not None and broken.chain_seq is None
    assert "head is chain_seq 4" in broken.reason


async def test_entries_from_before_the_chain_are_reported_and_one_inserted_later_is_caught(
    conn: asyncpg.Connection,
) -> None:
    w = await writer(conn)
    # An upgraded database: entries written before migration 0010 carry no chain.
    setup = [
        CreateCustomer("ann", "c"),
        OpenBalance("ann", "usdt", "USDT", "o1"),
        money("deposit", "d0", "50"),
    ]
    await store.apply_batch(conn, w.batch(setup, chained=False))
    await store.apply_batch(conn, w.batch([money("debit", "t1", "1")]))
    report = await verify_chains(conn, [PARTITION])
    assert report.intact, report.first_break
    assert (report.partitions[0].entries, report.partitions[0].unchained) == (1, 1)

    # An entry written around the chain after it started is not taken for an old one.
    await store.apply_batch(conn, w.batch([money("debit", "t2", "1")], chained=False))
    broken = (await verify_chains(conn, [PARTITION])).first_break
    assert broken is not None and "unchained entry at command offset 4" in broken.reason


async def test_a_batch_on_a_moved_chain_head_is_fenced(
    conn: asyncpg.Connection, database: str
) -> None:
    w = await write_traffic(conn)
    rows = w.batch([money("debit", "t3", "1")])
    # Same epoch and offset, but another chain head (a writer whose memory went astray): the
    # batch must not land, or the chain would fork.
    rows.cursors = [rows.cursors[0]._replace(expected_chain_seq=3)]
    with pytest.raises(store.Fenced, match="head is not at the writer's expected chain_seq"):
        await store.apply_batch(conn, rows)
    assert (await verify_chains(conn, [PARTITION])).intact
