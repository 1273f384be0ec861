"""The command bus (the edge's and the operator API's way to the ledger) while Kafka is away.

A send never waits past the caller's wait, even when the producer's buffer for a partition is
full; the reply reader reads again once the broker is back, after a clean restart and after a
SIGKILL; and a producer whose batch numbering aiokafka broke is replaced. The restarts run on a private
broker (:mod:`private_infra`), never on the shared one.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import OutOfOrderSequenceNumber

from ledger_core.commands import MoneyCommand, decode
from ledger_core.replies import encode_replies
from private_infra import PrivateInfra
from wallet_platform import topics
from wallet_platform.command_bus import CommandBus, OutcomeTimeout, open_command_bus
from wallet_platform.kafka import make_consumer, make_producer
from wallet_platform.producer import RenewingProducer
from wallet_stack import KAFKA, KAFKA_PRODUCER

pytestmark = pytest.mark.integration

WAIT = 1.0  # the caller's wait for an outcome, as the edge's WALLET_EDGE_OUTCOME_TIMEOUT_MS
SLACK = 0.5  # scheduling on a busy two-core machine; a blocked send took 10 s


@pytest.fixture(scope="module")
async def broker() -> AsyncIterator[PrivateInfra]:
    """A private Kafka (no Postgres) that the tests stop and kill."""
    pair = PrivateInfra.create()
    try:
        await pair.start_kafka()
        yield pair
    finally:
        await pair.remove()


async def answer_every_command(bootstrap: str, prefix: str) -> None:
    """Plays the ledger: answers every command on ledger.commands with a 201, through outages."""
    commands = [TopicPartition(prefix + topics.COMMANDS, p) for p in range(8)]
    consumer = make_consumer(bootstrap, "fake-ledger", auto_offset_reset="latest")
    producer = RenewingProducer(lambda: make_producer(bootstrap, "fake-ledger"))
    await producer.start()
    await consumer.start()
    try:
        consumer.assign(commands)
        for tp in commands:
            await consumer.seek_to_end(tp)
        while True:
            batches = await consumer.getmany(timeout_ms=200)
            for messages in batches.values():
                for message in messages:
                    _, envelope = decode(message.value)
                    reply = encode_replies([(envelope.command_id, 201, b"{}")])
                    with contextlib.suppress(Exception):  # lost: the caller times out, retries
                        await producer.send(
                            prefix + topics.REPLIES, reply, partition=envelope.reply_to
                        )
    finally:
        await consumer.stop()
        await producer.stop()


@pytest.fixture
async def bus(broker: PrivateInfra) -> AsyncIterator[CommandBus]:
    """An edge's bus on the private broker, with a fake ledger answering it."""
    ledger = asyncio.create_task(answer_every_command(broker.bootstrap, broker.topic_prefix))
    try:
        async with open_command_bus(
            broker.bootstrap,
            "edge-test",
            topic_prefix=broker.topic_prefix,
            reply_partition=0,
            producer_kind=KAFKA_PRODUCER,
        ) as opened:
            await answered(opened, within=60)
            yield opened
    finally:
        ledger.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ledger


def debit(customer: str = "c-1") -> MoneyCommand:
    return MoneyCommand("debit", customer, f"{customer}_USD", uuid.uuid4().hex, "1.00", "USD", "")


async def answered(bus: CommandBus, within: float) -> float:
    """Submit until a command gets its outcome; the seconds that took."""
    started = time.monotonic()
    while True:
        try:
            status, _ = await bus.submit(debit(), WAIT)
        except Exception as exc:  # OutcomeTimeout, or a KafkaError while the broker returns
            if time.monotonic() - started > within:
                raise AssertionError(f"no outcome within {within:g}s") from exc
            await asyncio.sleep(0.1)
            continue
        assert status == 201
        return time.monotonic() - started


async def timed_submit(bus: CommandBus, customer: str) -> tuple[float, BaseException | None]:
    started = time.monotonic()
    try:
        await bus.submit(debit(customer), WAIT)
    except Exception as exc:
        return time.monotonic() - started, exc
    return time.monotonic() - started, None


async def test_a_send_while_kafka_is_away_ends_within_the_callers_wait(
    broker: PrivateInfra, bus: CommandBus
) -> None:
    await broker.stop_kafka()
    try:
        # One customer, one partition: 300 commands overfill the producer's 16 KB batch for it,
        # after which each send used to block for the producer's request timeout (10 s).
        results = await asyncio.gather(*(timed_submit(bus, "c-full") for _ in range(300)))
    finally:
        await broker.start_kafka()
    assert {type(error).__name__ for _, error in results} <= {
        "OutcomeTimeout",
        "CommandNotQueued",
    }
    assert max(seconds for seconds, _ in results) < WAIT + SLACK
    await answered(bus, within=60)


@pytest.mark.parametrize("outage", ["clean restart", "SIGKILL"])
async def test_replies_are_read_again_when_kafka_is_back(
    broker: PrivateInfra, bus: CommandBus, outage: str
) -> None:
    take_away: Callable[[], Awaitable[None]] = (
        broker.stop_kafka if outage == "clean restart" else broker.kill_kafka
    )
    await take_away()
    during = await asyncio.gather(*(timed_submit(bus, f"c-{i}") for i in range(20)))
    await broker.start_kafka()
    assert all(isinstance(error, OutcomeTimeout) for _, error in during)
    await answered(bus, within=60)
    assert bus.reading_replies


async def test_a_producer_whose_numbering_broke_is_replaced(topic_prefix: str) -> None:
    topic = topic_prefix + topics.COMMANDS
    tp = TopicPartition(topic, 0)
    producer = RenewingProducer(lambda: make_producer(KAFKA, "renewing-test"))
    await producer.start()
    try:
        await (await producer.send(topic, b"first", partition=0))
        broken = producer.current
        # The gap a batch that expired during a broker restart leaves in the partition's sequence
        # numbers (see wallet_platform.producer): the broker refuses the next batch, and would
        # refuse every later one sent by this producer.
        broken._txn_manager.increment_sequence_number(tp, 3)
        with pytest.raises(OutOfOrderSequenceNumber):
            await (await producer.send(topic, b"refused", partition=0))
        async with asyncio.timeout(30):
            while producer.current is broken or producer.renewing:
                await asyncio.sleep(0.05)
        delivered = await (await producer.send(topic, b"after", partition=0))
        assert delivered.offset >= 1
        assert producer.renewals == 1
    finally:
        await producer.stop()
