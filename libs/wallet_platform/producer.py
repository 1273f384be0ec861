"""A Kafka producer that outlives the failures aiokafka's producer does not.

aiokafka's idempotent producer numbers the batches of each partition, and the broker accepts
only the next number. Across a broker restart aiokafka can break its own numbering: a batch that
waited longer than the request timeout while its partition had no known leader (the broker away,
or loading its logs) is failed with ``LeaderNotAvailableError`` or ``NotLeaderForPartitionError``
after it took its sequence numbers. From then on the broker refuses every batch to that
partition with ``OutOfOrderSequenceNumber``, for as long as the producer lives: a service would
run on, looking alive, and never send to that partition again. Some errors (a fenced producer)
end aiokafka's sender task instead, and then nothing is sent at all.

:class:`RenewingProducer` starts a fresh producer (a new producer id, so fresh numbering) in
place of one that broke either way, retrying with backoff while the broker is away. Sends in
between go to the broken one and may fail with its error, so callers see a ``KafkaError`` (a 503
at the edge) and retry. Nothing is resent behind the caller's back.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any, Literal, Protocol, runtime_checkable

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    InvalidProducerEpoch,
    LeaderNotAvailableError,
    NotLeaderForPartitionError,
    OutOfOrderSequenceNumber,
    ProducerFenced,
    UnknownProducerId,
)

from wallet_platform.backoff import Backoff
from wallet_platform.kafka import make_producer

log = structlog.get_logger()

ProducerKind = Literal["aiokafka", "librdkafka"]
"""Which client sends (``WALLET_KAFKA_PRODUCER``): both give the guarantees above."""


@runtime_checkable
class Producer(Protocol):
    """What the command bus and the ledger writer send through: a producer that replaces
    itself when it broke (:class:`RenewingProducer`, or the librdkafka one)."""

    renewals: int

    @property
    def renewing(self) -> bool:
        """Whether the current producer broke and its successor is not running yet."""

    async def start(self) -> None:
        """Start sending (raises a ``KafkaError`` when no broker answers)."""

    async def stop(self) -> None:
        """Deliver what it can (bounded), then close."""

    async def check_broker(self) -> None:
        """A metadata round trip to the broker (raises when none answers)."""

    async def send(
        self,
        topic: str,
        value: bytes | None = None,
        *,
        key: bytes | None = None,
        partition: int | None = None,
        headers: list[tuple[str, str | bytes | None]] | None = None,
    ) -> Any:
        """Queue one message; its delivery future, which raises an aiokafka ``KafkaError``
        when the message was not acknowledged."""


def renewing_producer(
    kind: ProducerKind, bootstrap: str, client_id: str, *, linger_ms: int = 0
) -> Producer:
    """An idempotent, acks=all producer of the kind asked for, not started yet."""
    if kind == "librdkafka":
        # Imported only when chosen: the aiokafka path loads nothing of librdkafka.
        from wallet_platform.librdkafka_producer import LibrdkafkaProducer

        return LibrdkafkaProducer(bootstrap, client_id, linger_ms=linger_ms)
    return RenewingProducer(lambda: make_producer(bootstrap, client_id, linger_ms=linger_ms))


# A delivery failed with one of these: this producer's numbering (or id) is no good any more.
# An idempotent producer retries leader errors itself, so a delivery fails with one only when
# its batch expired after taking its sequence numbers (see above).
NUMBERING_BROKEN = (
    OutOfOrderSequenceNumber,
    UnknownProducerId,
    InvalidProducerEpoch,
    ProducerFenced,
    LeaderNotAvailableError,
    NotLeaderForPartitionError,
)

STOP_LIMIT = 5.0
"""Seconds a replaced producer may take to close (what it still holds can not be delivered)."""


def sender_ended(producer: AIOKafkaProducer) -> bool:
    """Whether a started producer's sender task has ended: it can no longer send anything.
    aiokafka has no public flag for it; the task ends only on ``stop()`` or a fatal error."""
    task = producer._sender.sender_task
    return task is not None and task.done()


async def _close(producer: AIOKafkaProducer) -> None:
    # Bounded: a producer with batches it can never deliver would wait for them in stop().
    with contextlib.suppress(Exception):
        await asyncio.wait_for(producer.stop(), STOP_LIMIT)


class RenewingProducer:
    """Sends through an ``AIOKafkaProducer`` made by ``make``, replaced by a new one whenever the
    current one broke. ``send`` is aiokafka's (same arguments, same delivery future)."""

    def __init__(self, make: Callable[[], AIOKafkaProducer]) -> None:
        self._make = make
        self._producer = make()
        self._stopping = False
        self._renewal: asyncio.Task[None] | None = None
        self.renewals = 0
        """How many times the producer was replaced."""

    @property
    def current(self) -> AIOKafkaProducer:
        """The producer sends go through now."""
        return self._producer

    @property
    def renewing(self) -> bool:
        """Whether the current producer broke and its successor is not running yet."""
        return self._renewal is not None or sender_ended(self._producer)

    async def start(self) -> None:
        """Start the first producer (raises as ``AIOKafkaProducer.start`` does)."""
        await self._producer.start()
        self._watch(self._producer)

    async def stop(self) -> None:
        """Stop renewing, then stop the current producer (delivering what it can)."""
        self._stopping = True
        if self._renewal is not None:
            self._renewal.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewal
        await self._producer.stop()

    async def check_broker(self) -> None:
        """A metadata round trip to the broker through the current producer."""
        await self._producer.client.fetch_all_metadata()

    async def send(self, topic: str, value: bytes | None = None, **kwargs: Any) -> Any:
        """``AIOKafkaProducer.send`` on the current producer: its delivery future."""
        producer = self._producer
        delivery = await producer.send(topic, value, **kwargs)
        delivery.add_done_callback(lambda d: self._delivered(producer, d))
        return delivery

    def _delivered(self, producer: AIOKafkaProducer, delivery: asyncio.Future[Any]) -> None:
        if not delivery.cancelled() and isinstance(delivery.exception(), NUMBERING_BROKEN):
            self._renew_later(producer, delivery.exception())

    def _watch(self, producer: AIOKafkaProducer) -> None:
        task = producer._sender.sender_task
        task.add_done_callback(
            lambda t: self._renew_later(producer, None if t.cancelled() else t.exception())
        )

    def _renew_later(self, producer: AIOKafkaProducer, error: BaseException | None) -> None:
        if self._stopping or producer is not self._producer or self._renewal is not None:
            return  # stopping, already replaced, or being replaced
        log.error("kafka_producer_broken", error=repr(error))
        self._renewal = asyncio.create_task(self._renew(producer))

    async def _renew(self, broken: AIOKafkaProducer) -> None:
        backoff = Backoff(first=0.2)
        try:
            while not self._stopping:
                fresh = self._make()
                try:
                    await fresh.start()
                except Exception as exc:  # the broker is away: try again shortly
                    log.warning("kafka_producer_renewal_failed", error=repr(exc))
                    await _close(fresh)
                    await asyncio.sleep(backoff.next())
                    continue
                except asyncio.CancelledError:
                    await _close(fresh)
                    raise
                self._producer = fresh
                self.renewals += 1
                self._watch(fresh)
                log.warning("kafka_producer_renewed", renewals=self.renewals)
                break
        finally:
            self._renewal = None
        await _close(broken)
