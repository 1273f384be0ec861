"""The journal's hash chain end to end: live traffic through the real ledger process (callbacks
while the ledger is SIGKILLed and restarted, deposits, a reversal, an exchange settled and one
voided), then ``python -m ledger.chain verify`` passes, the facts on ``ledger.events`` carry a
chain a consumer can follow, a replay rebuilds the same chains, and a posting altered by hand is
caught at its entry."""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
from aiokafka import TopicPartition

from callback_load import CallbackLoad, assert_booked_exactly_once, plan_calls
from ledger_books.chain import ChainFollower
from ledger_core.commands import (
    ExchangeReserve,
    ExchangeSettle,
    ExchangeVoid,
    OpenBalance,
    Reversal,
)
from wallet_clients import Operator, Wallet
from wallet_platform import kafka_admin, topics
from wallet_platform.kafka import make_consumer
from wallet_stack import Stack, create_database, drop_database, dsn_for

pytestmark = pytest.mark.e2e


async def fetch(dsn: str, sql: str, *args: object) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        rows: list[asyncpg.Record] = await conn.fetch(sql, *args)
        return rows
    finally:
        await conn.close()


async def heads(dsn: str) -> dict[int, tuple[int, str]]:
    rows = await fetch(
        dsn, "SELECT partition, chain_seq, chain_hash FROM ledger_partitions WHERE chain_seq > 0"
    )
    return {r["partition"]: (r["chain_seq"], bytes(r["chain_hash"]).hex()) for r in rows}


@pytest.fixture(scope="module")
async def traffic(stack: Stack, operator: Operator, wallet: Wallet) -> None:
    """Callbacks with a SIGKILL of the ledger in the middle, a reversal, two exchanges."""
    accounts = [await operator.customer_with_balance("USD", "20.00") for _ in range(4)]
    calls = plan_calls(accounts, 200)
    load = CallbackLoad(wallet, calls, concurrency=16)

    async def killer() -> None:
        await load.answered_at_least(60)
        stack.ledger.signal(signal.SIGKILL)
        stack.ledger.wait(10)
        await asyncio.sleep(0.5)
        stack.ledger.start()

    async with asyncio.timeout(180):
        answers, _ = await asyncio.gather(load.run(), killer())
    await assert_booked_exactly_once(stack, calls, answers)

    customer, balance = accounts[0]
    request_id = uuid.uuid4().hex
    await operator.deposit(customer, balance, "3.00")
    (deposit,) = await fetch(
        stack.dsn,
        """SELECT entry_id FROM journal_entries WHERE customer_id = $1 AND kind = 'deposit'
            ORDER BY command_offset DESC LIMIT 1""",
        customer,
    )
    reversal = Reversal(
        "deposit_reversal",
        customer,
        balance,
        str(deposit["entry_id"]),
        "3.00",
        "USD",
        "wrong deposit",
        request_id,
    )
    assert (await operator.send(reversal)).status == 201

    usdt_customer, usdt = await operator.customer_with_balance("USDT", "100")
    btc = f"{usdt_customer}_BTC"
    opened = OpenBalance(usdt_customer, btc, "BTC", uuid.uuid4().hex)
    assert (await operator.send(opened)).status == 201
    for exchange_id in ("x-settled", "x-voided"):
        reserve = ExchangeReserve(usdt_customer, exchange_id, usdt, btc, "5", "USDT", "BTC", "q")
        assert (await operator.send(reserve)).status == 201
    settle = ExchangeSettle(
        usdt_customer, "x-settled", "order-1", "BTC", "0.00119", "0.00000007", "0.00000024", "0"
    )
    assert (await operator.send(settle)).status == 201
    void = ExchangeVoid(usdt_customer, "x-voided", "order-2", "refunded")
    assert (await operator.send(void)).status == 200


async def test_the_chain_verifies_after_a_kill_callbacks_a_reversal_and_an_exchange(
    traffic: None, stack: Stack
) -> None:
    code, output = stack.run_tool("ledger.chain", "verify")

    assert code == 0, output
    assert "chain intact" in output
    kinds = {r["kind"] for r in await fetch(stack.dsn, "SELECT DISTINCT kind FROM journal_entries")}
    assert {"debit", "credit", "deposit", "deposit_reversal", "exchange"} <= kinds
    # Every entry is chained, each partition's chain is 1..n without a gap or a fork (the
    # writer's restart continued from the stored head), and the head is the last entry.
    per_partition = await fetch(
        stack.dsn,
        """SELECT partition, count(*) AS entries, count(chain_seq) AS chained,
                  count(DISTINCT chain_seq) AS places, max(chain_seq) AS last
             FROM journal_entries GROUP BY partition""",
    )
    stored_heads = await heads(stack.dsn)
    for row in per_partition:
        assert row["entries"] == row["chained"] == row["places"] == row["last"], dict(row)
        assert stored_heads[row["partition"]][0] == row["last"]


async def test_a_consumer_follows_the_chain_through_the_facts_on_the_topic(
    traffic: None, stack: Stack
) -> None:
    consumer = make_consumer(stack.kafka, "test-chain-follower")
    await consumer.start()
    follower = ChainFollower()
    try:
        topic = topics.topic_name(topics.EVENTS, stack.prefix)
        count = (await kafka_admin.partition_counts(stack.kafka))[topic]
        partitions = [TopicPartition(topic, p) for p in range(count)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        async with asyncio.timeout(60):
            while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
                for messages in (await consumer.getmany(timeout_ms=500)).values():
                    for msg in messages:
                        follower.offer_payload(msg.value)
    finally:
        await consumer.stop()

    assert follower.intact, follower.breaks
    received = {p: (seq, digest.hex()) for p, (seq, digest) in follower.heads.items()}
    assert received == await heads(stack.dsn)


@pytest.fixture
async def fresh(pg_template: str) -> AsyncIterator[str]:
    name = await create_database(pg_template)
    yield dsn_for(name)
    await drop_database(name)


async def test_a_replay_into_a_fresh_ledger_rebuilds_the_same_chains(
    traffic: None, stack: Stack, fresh: str
) -> None:
    code, output = stack.run_tool("ledger.replay", "--into-dsn", fresh)

    assert code == 0, output
    # The entries' times are the commands' Kafka timestamps: the same in a replay of the topic.
    assert await heads(fresh) == await heads(stack.dsn)


async def test_a_hand_altered_posting_is_caught_at_its_entry(
    traffic: None, stack: Stack, fresh: str
) -> None:
    (target,) = await fetch(
        stack.dsn,
        """SELECT e.partition, e.chain_seq, e.entry_id, p.account_id, p.seq
             FROM journal_entries e JOIN postings p USING (entry_id)
            WHERE e.kind = 'exchange' ORDER BY p.amount LIMIT 1""",
    )
    conn = await asyncpg.connect(stack.dsn)
    try:
        # Last in this module: the stack's ledger is tampered with from here on.
        await conn.execute("ALTER TABLE postings DISABLE TRIGGER postings_append_only")
        await conn.execute(
            "UPDATE postings SET amount = amount - 1 WHERE account_id = $1 AND seq = $2",
            target["account_id"],
            target["seq"],
        )
    finally:
        await conn.close()

    code, output = stack.run_tool("ledger.chain", "verify", "--partition", str(target["partition"]))

    assert code == 1, output
    expected = (
        f"partition {target['partition']} BROKEN at chain_seq {target['chain_seq']} "
        f"(entry {target['entry_id']})"
    )
    assert expected in output
    assert f"posting of account {target['account_id']} seq {target['seq']}: amount" in output
