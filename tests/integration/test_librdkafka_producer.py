"""The librdkafka producer (``WALLET_KAFKA_PRODUCER=librdkafka``) against the real broker: a keyed
message lands on the partition aiokafka would have chosen, and a producer librdkafka declared
broken for good is replaced. The outage behaviour runs in ``test_command_bus_outages.py`` with
``WALLET_TEST_KAFKA_PRODUCER=librdkafka``."""

from __future__ import annotations

import asyncio
import random

import pytest
from aiokafka.errors import KafkaError, UnknownTopicOrPartitionError
from aiokafka.partitioner import DefaultPartitioner
from confluent_kafka import KafkaError as RdKafkaError

from wallet_platform import topics
from wallet_platform.librdkafka_producer import LibrdkafkaProducer
from wallet_stack import KAFKA

pytestmark = pytest.mark.integration


def random_key(rng: random.Random) -> bytes:
    """Customer ids of every length up to 128 (the id rule), ASCII as the edge allows."""
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~"
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 128))).encode()


async def test_a_keyed_message_lands_on_the_partition_aiokafkas_partitioner_chooses(
    topic_prefix: str,
) -> None:
    # The ledger owns a customer's state with the writer of murmur2(customer id)'s partition,
    # and the projection looks up that partition of ledger.events: both must not move.
    rng = random.Random(14)
    keys = [random_key(rng) for _ in range(10_000)]
    producer = LibrdkafkaProducer(KAFKA, "partition-test")
    await producer.start()
    try:
        for base in (topics.COMMANDS, topics.EVENTS):
            spec = next(t for t in topics.TOPICS if t.name == base)
            partitions = list(range(spec.partitions))
            futures = [await producer.send(topic_prefix + base, b"{}", key=key) for key in keys]
            chosen = [d.partition for d in await asyncio.gather(*futures)]
            expected = [DefaultPartitioner()(key, partitions, partitions) for key in keys]
            assert chosen == expected, base
    finally:
        await producer.stop()


async def test_an_explicit_partition_is_kept_and_a_missing_one_is_a_kafka_error(
    topic_prefix: str,
) -> None:
    producer = LibrdkafkaProducer(KAFKA, "partition-test")
    await producer.start()
    try:
        replies = topic_prefix + topics.REPLIES
        delivered = await (await producer.send(replies, b"r", key=b"any", partition=5))
        assert delivered.partition == 5
        with pytest.raises(UnknownTopicOrPartitionError):
            await (await producer.send(replies, b"r", partition=99))
    finally:
        await producer.stop()


async def test_a_producer_librdkafka_declared_broken_is_replaced(topic_prefix: str) -> None:
    topic = topic_prefix + topics.COMMANDS
    producer = LibrdkafkaProducer(KAFKA, "renewing-test")
    await producer.start()
    try:
        await (await producer.send(topic, b"first", partition=0))
        broken = producer._handle
        assert broken is not None
        # What librdkafka reports when the idempotent producer's state can not be recovered:
        # from then on it refuses every message.
        broken._error(RdKafkaError(RdKafkaError._FATAL, "test: fatal", fatal=True))
        async with asyncio.timeout(30):
            while producer._handle is broken or producer.renewing:
                await asyncio.sleep(0.05)
        delivered = await (await producer.send(topic, b"after", partition=0))
        assert delivered.offset >= 1
        assert producer.renewals == 1
    finally:
        await producer.stop()


async def test_start_fails_as_aiokafkas_does_when_no_broker_answers() -> None:
    producer = LibrdkafkaProducer("127.0.0.1:1", "nobody-test")
    with pytest.raises(KafkaError):
        await producer.start()


async def test_stop_delivers_what_is_queued_and_answers_every_waiter(topic_prefix: str) -> None:
    producer = LibrdkafkaProducer(KAFKA, "stop-test")
    await producer.start()
    topic = topic_prefix + topics.EVENTS
    futures = [await producer.send(topic, b"x", key=b"c-%d" % i) for i in range(100)]
    await producer.stop()
    assert all(future.done() and future.exception() is None for future in futures)
