"""One message from the edge through ledger.commands, the ledger, Postgres, ledger.events and the
projection, with the three services running as real processes."""

from __future__ import annotations

import asyncio

import asyncpg
import orjson
import pytest
from aiokafka import TopicPartition

from wallet_clients import Operator, Wallet
from wallet_platform import topics
from wallet_platform.kafka import make_consumer
from wallet_stack import KAFKA, Stack

pytestmark = pytest.mark.e2e


async def test_debit_travels_from_edge_to_projection(
    stack: Stack, operator: Operator, wallet: Wallet
) -> None:
    customer, balance = await operator.customer_with_balance("USD", "100.00")

    answer = await wallet.debit(customer, balance, "12.34", request_id="smoke-1")

    assert answer.status == 201
    assert answer.json == {
        "customer_id": customer,
        "balance_id": balance,
        "amount": "12.34",
        "balance_current_amount": "87.66",
        "currency_code": "USD",
    }
    conn = await asyncpg.connect(stack.dsn)
    try:
        entry = await conn.fetchrow(
            "SELECT entry_id, amount FROM journal_entries WHERE request_id = 'smoke-1'"
        )
        postings = await conn.fetch(
            "SELECT amount FROM postings WHERE entry_id = $1", entry["entry_id"]
        )
    finally:
        await conn.close()
    assert entry["amount"] == 1234
    assert sorted(int(p["amount"]) for p in postings) == [-1234, 1234]

    consumer = make_consumer(KAFKA, "smoke-test")
    await consumer.start()
    try:
        events_topic = topics.topic_name(topics.EVENTS, stack.prefix)
        tps = [TopicPartition(events_topic, p) for p in range(8)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        found = None
        for _ in range(50):
            for messages in (await consumer.getmany(timeout_ms=200)).values():
                for msg in messages:
                    fact = orjson.loads(msg.value)
                    if fact.get("request_id") == "smoke-1":
                        found = (msg.key, fact)
            if found:
                break
    finally:
        await consumer.stop()
    assert found is not None, "the debit's fact never reached ledger.events"
    key, fact = found
    assert key == customer.encode()
    assert fact["type"] == "entry.posted" and fact["balance_after"] == "87.66"

    for _ in range(50):
        read = await wallet.get(customer, balance)
        if read.status == 200 and read.json["amount"] == "87.66":
            break
        await asyncio.sleep(0.1)
    assert read.json == {
        "customer_id": customer,
        "balance_id": balance,
        "amount": "87.66",
        "currency_code": "USD",
    }
