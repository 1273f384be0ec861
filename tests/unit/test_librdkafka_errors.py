"""The librdkafka producer's failures reach callers as the aiokafka errors they handle today
(``WALLET_KAFKA_PRODUCER=librdkafka``): the command bus's and the writer's error paths stay as
they are."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiokafka import errors as aiokafka_errors
from confluent_kafka import KafkaError as RdKafkaError

from ledger_core.commands import MoneyCommand
from wallet_platform.command_bus import CommandBus, CommandNotQueued
from wallet_platform.librdkafka_producer import (
    REQUEST_TIMEOUT_MS,
    Delivered,
    LibrdkafkaProducer,
    _settle,
    kafka_error,
    producer_config,
)

pytestmark = pytest.mark.unit


def test_a_delivery_that_timed_out_is_the_timeout_the_command_bus_reraises() -> None:
    # aiokafka fails an expired batch with KafkaTimeoutError; the bus re-raises that one as a
    # failed delivery once the command was queued.
    error = kafka_error(RdKafkaError(RdKafkaError._MSG_TIMED_OUT))
    assert isinstance(error, aiokafka_errors.KafkaTimeoutError)


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (RdKafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER, aiokafka_errors.OutOfOrderSequenceNumber),
        (RdKafkaError.NOT_LEADER_FOR_PARTITION, aiokafka_errors.NotLeaderForPartitionError),
        (RdKafkaError.MSG_SIZE_TOO_LARGE, aiokafka_errors.MessageSizeTooLargeError),
        (RdKafkaError.NOT_ENOUGH_REPLICAS, aiokafka_errors.NotEnoughReplicasError),
    ],
)
def test_a_brokers_error_code_is_aiokafkas_class_for_that_code(
    code: int, expected: type[Exception]
) -> None:
    assert type(kafka_error(RdKafkaError(code))) is expected


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (RdKafkaError._TRANSPORT, aiokafka_errors.KafkaConnectionError),
        (RdKafkaError._ALL_BROKERS_DOWN, aiokafka_errors.KafkaConnectionError),
        (RdKafkaError._UNKNOWN_PARTITION, aiokafka_errors.UnknownTopicOrPartitionError),
        (RdKafkaError._PURGE_QUEUE, aiokafka_errors.KafkaError),
        (RdKafkaError._FATAL, aiokafka_errors.KafkaError),
    ],
)
def test_librdkafkas_own_errors_are_kafka_errors_by_meaning(
    code: int, expected: type[Exception]
) -> None:
    error = kafka_error(RdKafkaError(code))
    assert type(error) is expected
    assert isinstance(error, aiokafka_errors.KafkaError)  # what the writer catches
    assert RdKafkaError(code).name() in str(error)  # the log line says which


class _Message:
    """The three things a delivery report's message is asked for."""

    def topic(self) -> str:
        return "ledger.events"

    def partition(self) -> int:
        return 3

    def offset(self) -> int:
        return 41


async def test_a_round_of_reports_resolves_each_waiter_with_its_answer() -> None:
    loop = asyncio.get_running_loop()
    acknowledged, refused, abandoned = (loop.create_future() for _ in range(3))
    abandoned.cancel()  # a caller that stopped waiting: its report is dropped, not an error
    _settle(
        [
            (acknowledged, None, _Message()),
            (refused, RdKafkaError(RdKafkaError._MSG_TIMED_OUT), _Message()),
            (abandoned, None, _Message()),
        ]
    )
    assert acknowledged.result() == Delivered("ledger.events", 3, 41)
    with pytest.raises(aiokafka_errors.KafkaTimeoutError):
        refused.result()


def test_the_producer_keeps_the_aiokafka_producers_guarantees() -> None:
    config = producer_config("127.0.0.1:29092", "edge-0", linger_ms=0)
    assert config["acks"] == "all"
    assert config["enable.idempotence"] is True
    # Kafka keeps order with idempotence only up to 5 requests in flight per connection.
    assert config["max.in.flight.requests.per.connection"] <= 5
    assert config["linger.ms"] == 0  # librdkafka's own default is 5 ms
    assert config["partitioner"] == "murmur2_random"  # aiokafka's DefaultPartitioner, for keys
    assert config["message.timeout.ms"] == config["request.timeout.ms"] == REQUEST_TIMEOUT_MS


class _FullQueue:
    """librdkafka's producer while its queue is full (the broker away for a while)."""

    def __init__(self) -> None:
        self.offered = 0

    def produce(self, *args: object, **kwargs: object) -> None:
        self.offered += 1
        raise BufferError("Local: Queue full")


class _Handle:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.producer = _FullQueue()
        self.fatal = None

    def report(self, *args: object) -> None:
        raise AssertionError("nothing was queued, so nothing is reported")


async def test_a_command_a_full_queue_never_took_is_command_not_queued_within_the_wait() -> None:
    producer = LibrdkafkaProducer("127.0.0.1:1", "edge-0")
    handle = _Handle(asyncio.get_running_loop())
    producer._handle = handle  # type: ignore[assignment]
    bus = CommandBus(
        producer,
        replies=None,  # type: ignore[arg-type]  # submit never reads replies itself
        commands_topic="ledger.commands",
        replies_topic="ledger.replies",
        reply_partition=0,
    )
    debit = MoneyCommand("debit", "c-1", "c-1_USD", "r-1", "1.00", "USD", "")
    started = time.monotonic()
    with pytest.raises(CommandNotQueued):
        await bus.submit(debit, 0.2)
    assert time.monotonic() - started < 1.0  # the caller's wait, not librdkafka's 10 s
    assert handle.producer.offered > 1  # offered again while it waited
