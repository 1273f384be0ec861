"""Sending a command to the ledger and waiting for its outcome (request-reply over Kafka).

The sender publishes the command on ``ledger.commands`` (keyed by customer) with a fresh
``command_id`` and the partition of ``ledger.replies`` it reads; the ledger answers there after its
transaction committed. Each sender process reads only its own reply partition, so adding edges does
not make every edge read every reply. A reply that never comes (the ledger is slow or a reply was
lost) ends in :class:`OutcomeTimeout`; the command is still applied exactly once, and a retry with
the same request_id gets the stored outcome.

While the broker is away (restarting, killed) nothing waits longer than the caller asked: the
producer queues commands until its buffer for a partition is full and would then block each send
for its own request timeout (10 s), so the send is bounded by the caller's wait too, and a command
Kafka did not take in time ends in :class:`CommandNotQueued`. The reply reader keeps its position
through the outage and goes on from there when the broker is back, and a producer that aiokafka
stopped for good on the way is replaced (:class:`~wallet_platform.producer.RenewingProducer`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
import uuid
from collections.abc import AsyncIterator

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaTimeoutError
from prometheus_client import Histogram

from ledger_core.commands import Command, Envelope, encode
from ledger_core.replies import decode_replies
from wallet_platform import topics
from wallet_platform.kafka import make_consumer
from wallet_platform.producer import Producer, ProducerKind, renewing_producer

log = structlog.get_logger()

_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
COMMAND_SECONDS = Histogram(
    "edge_command_seconds",
    "From publishing a command to receiving the ledger's outcome",
    buckets=_BUCKETS,
)
REPLY_DELAY_SECONDS = Histogram(
    "edge_reply_delay_seconds",
    "From the ledger sending a reply message to this process reading it",
    buckets=_BUCKETS,
)


class OutcomeTimeout(Exception):
    """The ledger did not answer in time (the command may still be applied, once)."""


class CommandNotQueued(OutcomeTimeout):
    """Kafka did not take the command in time (the broker is away): it was not sent and will not
    be applied. An :class:`OutcomeTimeout`, so callers that retry on one retry on this too."""


class CommandBus:
    """Publishes commands and matches the ledger's replies to the waiting callers."""

    def __init__(
        self,
        producer: Producer,
        replies: AIOKafkaConsumer,
        *,
        commands_topic: str,
        replies_topic: str,
        reply_partition: int,
    ) -> None:
        self._producer = producer
        self._replies = replies
        self._commands_topic = commands_topic
        self._tp = TopicPartition(replies_topic, reply_partition)
        self._pending: dict[str, asyncio.Future[tuple[int, bytes]]] = {}
        self._task: asyncio.Task[None] | None = None
        # Command ids: a random prefix per bus and a counter. Unique for as long as a reply can
        # come (a new bus starts at the end of its reply partition), and a counter costs far
        # less per command than a fresh UUID.
        self._id_prefix = uuid.uuid4().hex[:16] + "-"
        self._ids = itertools.count()

    async def start(self) -> None:
        """Start reading replies from the end of our partition (earlier replies are not ours)."""
        self._replies.assign([self._tp])
        await self._replies.seek_to_end(self._tp)
        await self._replies.position(self._tp)
        self._task = asyncio.create_task(self._read_replies())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for future in self._pending.values():
            if not future.done():
                future.set_exception(OutcomeTimeout("shutting down"))
        self._pending.clear()

    @property
    def producer(self) -> Producer:
        return self._producer

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    @property
    def reading_replies(self) -> bool:
        """Whether the reply reader runs (it should for as long as the bus is open)."""
        return self._task is not None and not self._task.done()

    async def submit(self, cmd: Command, wait_seconds: float) -> tuple[int, bytes]:
        """Publish ``cmd`` and wait for its (status, body), ``wait_seconds`` at most in all.

        Raises :class:`CommandNotQueued` when Kafka did not take the command in that time,
        :class:`OutcomeTimeout` when it did but no outcome came, and the ``KafkaError`` of a
        delivery that failed before the outcome came.
        """
        command_id = f"{self._id_prefix}{next(self._ids):x}"
        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[int, bytes]] = loop.create_future()
        self._pending[command_id] = future
        started = time.perf_counter()
        queued = False
        try:
            # One deadline over both steps (one timer per command): cancelling the send itself
            # (not its delivery) takes the command back, so which step it ended tells
            # CommandNotQueued from OutcomeTimeout.
            async with asyncio.timeout_at(loop.time() + wait_seconds):
                delivery = await self._producer.send(
                    self._commands_topic,
                    encode(cmd, Envelope(command_id, self._tp.partition)),
                    key=cmd.customer_id.encode(),
                )
                queued = True
                delivery.add_done_callback(lambda d: self._delivery_failed(d, future))
                outcome = await future
        except (TimeoutError, KafkaTimeoutError) as exc:  # ours, or the producer's own (10 s)
            if not queued:
                raise CommandNotQueued(
                    f"Kafka did not take the command within {wait_seconds:.1f}s"
                ) from None
            if isinstance(exc, TimeoutError):
                raise OutcomeTimeout(f"no outcome within {wait_seconds:.1f}s") from None
            raise  # a delivery that failed: the KafkaError, as any other
        finally:
            self._pending.pop(command_id, None)
        COMMAND_SECONDS.observe(time.perf_counter() - started)
        return outcome

    @staticmethod
    def _delivery_failed(
        delivery: asyncio.Future[object], waiting: asyncio.Future[tuple[int, bytes]]
    ) -> None:
        if not delivery.cancelled() and delivery.exception() is not None and not waiting.done():
            waiting.set_exception(delivery.exception())  # type: ignore[arg-type]

    async def _read_replies(self) -> None:
        while True:
            try:
                batches = await self._replies.getmany(timeout_ms=1000, max_records=5000)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # keep reading: a hiccup must not strand every waiter
                log.warning("reply_read_failed", error=repr(exc))
                await asyncio.sleep(0.2)
                continue
            now = time.time()
            for messages in batches.values():
                for msg in messages:
                    REPLY_DELAY_SECONDS.observe(max(0.0, now - msg.timestamp / 1000))
                    try:
                        replies = decode_replies(msg.value)
                    except (ValueError, TypeError):
                        log.error("reply_unreadable", message_id=f"{msg.partition}:{msg.offset}")
                        continue
                    for command_id, status, body in replies:
                        future = self._pending.get(command_id)
                        if future is not None and not future.done():
                            future.set_result((status, body))


@contextlib.asynccontextmanager
async def open_command_bus(
    bootstrap: str,
    client_id: str,
    *,
    topic_prefix: str,
    reply_partition: int,
    linger_ms: int = 0,
    fetch_max_wait_ms: int = 100,
    producer_kind: ProducerKind = "aiokafka",
) -> AsyncIterator[CommandBus]:
    """A started bus on its own producer (of ``producer_kind``, ``WALLET_KAFKA_PRODUCER``) and
    reply consumer; all three stopped on exit."""
    async with contextlib.AsyncExitStack() as stack:
        producer = renewing_producer(producer_kind, bootstrap, client_id, linger_ms=linger_ms)
        await producer.start()
        stack.push_async_callback(producer.stop)
        # Should the broker come back without our position (a log cut short by a crash), the
        # reader goes on from the end, as at start: the replies before it answer requests that
        # were answered or timed out long ago, and re-reading an hour of them would only delay
        # the replies being waited for now.
        replies = make_consumer(
            bootstrap, client_id, fetch_max_wait_ms=fetch_max_wait_ms, auto_offset_reset="latest"
        )
        await replies.start()
        stack.push_async_callback(replies.stop)
        bus = CommandBus(
            producer,
            replies,
            commands_topic=topics.topic_name(topics.COMMANDS, topic_prefix),
            replies_topic=topics.topic_name(topics.REPLIES, topic_prefix),
            reply_partition=reply_partition,
        )
        await bus.start()
        stack.push_async_callback(bus.stop)
        yield bus
