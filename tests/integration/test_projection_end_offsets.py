"""Read-your-writes against the real Kafka: the read path finds the partition the producer put a
customer's facts in, and the end offset it reads there counts every fact Kafka acknowledged."""

from __future__ import annotations

import uuid

import pytest
from aiokafka import TopicPartition

from projection.read_your_writes import EndOffsets, partition_for
from wallet_platform import topics
from wallet_platform.kafka import make_consumer, make_producer
from wallet_stack import KAFKA

pytestmark = pytest.mark.integration


async def test_facts_keyed_by_customer_are_where_the_read_path_looks(topic_prefix: str) -> None:
    topic = topics.topic_name(topics.EVENTS, topic_prefix)
    producer = make_producer(KAFKA, "test-facts")
    offsets_client = make_consumer(KAFKA, "test-end-offsets")
    await producer.start()
    await offsets_client.start()
    try:
        customers = [f"c-{uuid.uuid4().hex[:8]}" for _ in range(40)]
        sent = {}
        for customer in customers:
            # As the ledger writer publishes a fact: keyed by customer id, acks=all.
            delivered = await (await producer.send(topic, b"{}", key=customer.encode()))
            sent[customer] = delivered.partition
        partitions = producer.client.cluster.partitions_for_topic(topic)

        async def end_offsets_of(wanted: frozenset[int]) -> dict[int, int]:
            found = await offsets_client.end_offsets([TopicPartition(topic, p) for p in wanted])
            return {tp.partition: offset for tp, offset in found.items()}

        lookup = EndOffsets(end_offsets_of, timeout=10)
        counts = {p: list(sent.values()).count(p) for p in range(len(partitions))}
        ends = {p: await lookup.end_offset(p) for p in counts}
    finally:
        await offsets_client.stop()
        await producer.stop()

    assert {c: partition_for(c, partitions) for c in customers} == sent
    assert ends == counts
