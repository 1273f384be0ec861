"""A producer on librdkafka (``confluent-kafka``) with the interface and guarantees of
:class:`~wallet_platform.producer.RenewingProducer`: chosen by ``WALLET_KAFKA_PRODUCER=librdkafka``.

Why it exists: aiokafka builds and writes every produce request in Python on the service's event
loop; librdkafka does that in C on threads of its own, so the event loop only hands a message
over (``produce``) and resolves a future when Kafka acknowledged it. Measured A/B in
``docs/edge-performance.md``.

Same guarantees as the aiokafka producer (:func:`wallet_platform.kafka.make_producer`):

- idempotent, ``acks=all``: a message is acknowledged once it is durable, and retries inside the
  client neither duplicate nor reorder it (librdkafka keeps at most 5 requests in flight per
  partition with sequence numbers, as Kafka's idempotence allows);
- a keyed message goes to ``murmur2(key) & 0x7fffffff % partitions`` (``murmur2_random``, the Java
  client's and aiokafka's ``DefaultPartitioner``), so a customer's commands and facts land on the
  partitions the ledger and the projection expect; an explicit ``partition`` wins;
- a delivery that is not acknowledged within the request timeout (10 s) fails, as an aiokafka
  batch expires then;
- a failed delivery raises an ``aiokafka.errors.KafkaError`` (the broker's error code maps to
  aiokafka's class for it; a timed out one is ``KafkaTimeoutError``), so every caller's handling
  stays as it is: the command bus's ``CommandNotQueued``/``OutcomeTimeout`` path, the writer's
  withheld replies and republishing;
- a producer librdkafka declares broken for good (a *fatal* error: its idempotence state can not
  be recovered) is replaced by a fresh one, retried with backoff, as ``RenewingProducer`` does.

The event loop never blocks: ``produce`` only queues (when librdkafka's queue is full, the send
waits and tries again, so a caller's deadline bounds it); one thread of ours waits in ``poll`` for
delivery reports and hands each round of them to the loop in one ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
from typing import Any, NamedTuple

import confluent_kafka
import structlog
from aiokafka import errors as aiokafka_errors
from confluent_kafka import KafkaError as RdKafkaError

from wallet_platform.backoff import Backoff

log = structlog.get_logger()

REQUEST_TIMEOUT_MS = 10_000
"""As aiokafka's ``request_timeout_ms`` in :func:`wallet_platform.kafka.make_producer`."""

POLL_SECONDS = 0.1
"""Longest the delivery thread waits in one ``poll``; it returns at once when a report is ready,
so this only bounds how soon the thread notices ``stop``."""

QUEUE_FULL_PAUSE_SECONDS = 0.005
"""How long a send waits before it offers a message again to a full queue."""

STOP_LIMIT_SECONDS = 5.0
"""Longest ``stop`` waits for what is queued to be delivered (as ``RenewingProducer``'s)."""

METADATA_TIMEOUT_SECONDS = 5.0


class Delivered(NamedTuple):
    """Where Kafka stored an acknowledged message (aiokafka's ``RecordMetadata`` has these too)."""

    topic: str
    partition: int
    offset: int


def producer_config(bootstrap: str, client_id: str, *, linger_ms: int) -> dict[str, Any]:
    """librdkafka's configuration for the guarantees above (see the module docstring)."""
    return {
        "bootstrap.servers": bootstrap,
        "client.id": client_id,
        "acks": "all",
        "enable.idempotence": True,
        "max.in.flight.requests.per.connection": 5,
        # librdkafka lingers 5 ms by default; aiokafka's 0 sends as soon as it can.
        "linger.ms": linger_ms,
        "request.timeout.ms": REQUEST_TIMEOUT_MS,
        "message.timeout.ms": REQUEST_TIMEOUT_MS,
        "partitioner": "murmur2_random",
        # Answers carry their offsets (Delivered); the payload is not copied back.
        "delivery.report.only.error": False,
        "log_level": 4,  # warnings and worse
    }


def kafka_error(error: RdKafkaError) -> aiokafka_errors.KafkaError:
    """The aiokafka exception a caller of :class:`RenewingProducer` would have seen for
    librdkafka's ``error``: a broker's error code (positive, the Kafka protocol's) maps to
    aiokafka's class for that code; librdkafka's own (negative) codes map by meaning."""
    code = error.code()
    text = f"{error.name()}: {error.str()}"
    if code == RdKafkaError._MSG_TIMED_OUT or code == RdKafkaError._TIMED_OUT:
        return aiokafka_errors.KafkaTimeoutError(text)
    if code > 0:
        cls = aiokafka_errors.for_code(code)
        return cls(text)
    if code in (
        RdKafkaError._TRANSPORT,
        RdKafkaError._ALL_BROKERS_DOWN,
        RdKafkaError._RESOLVE,
        RdKafkaError._DESTROY,
    ):
        return aiokafka_errors.KafkaConnectionError(text)
    if code in (RdKafkaError._UNKNOWN_PARTITION, RdKafkaError._UNKNOWN_TOPIC):
        return aiokafka_errors.UnknownTopicOrPartitionError(text)
    return aiokafka_errors.KafkaError(text)


class _Handle:
    """One ``confluent_kafka.Producer`` and the thread that serves its delivery reports."""

    def __init__(self, config: dict[str, Any], loop: asyncio.AbstractEventLoop, on_fatal: Any):
        self.loop = loop
        self.on_fatal = on_fatal
        self.producer = confluent_kafka.Producer(config | {"error_cb": self._error})
        self.fatal: RdKafkaError | None = None
        # Reports gathered by one poll round, handed to the loop together.
        self._reports: list[tuple[asyncio.Future[Delivered], Any, Any]] = []
        self._stopping = threading.Event()
        self._thread = threading.Thread(
            target=self._serve, name=f"librdkafka-{config['client.id']}", daemon=True
        )
        self._thread.start()

    def report(self, future: asyncio.Future[Delivered], error: Any, message: Any) -> None:
        """librdkafka's delivery report (in our thread, inside ``poll``): kept for the loop."""
        self._reports.append((future, error, message))

    def _serve(self) -> None:
        while not self._stopping.is_set():
            self.producer.poll(POLL_SECONDS)
            if self._reports:
                reports, self._reports = self._reports, []
                self._hand_over(_settle, reports)

    def _error(self, error: RdKafkaError) -> None:
        # Called inside poll, in our thread. Most errors are passing (a broker away): librdkafka
        # retries them itself. A fatal one leaves the producer unable to send anything again.
        if error.fatal():
            self.fatal = error
            self._hand_over(self.on_fatal, self, error)

    def _hand_over(self, callback: Any, *args: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits any more
            self.loop.call_soon_threadsafe(callback, *args)

    async def close(self, limit: float) -> None:
        """Deliver what is queued (``limit`` seconds at most), then stop the thread; what is
        still undelivered fails (its waiters get a ``KafkaError``)."""
        await asyncio.to_thread(self.producer.flush, limit)
        self._stopping.set()
        await asyncio.to_thread(self._thread.join)
        # Purging delivers a report for every message left (error _PURGE_QUEUE / _PURGE_INFLIGHT).
        with contextlib.suppress(Exception):
            self.producer.purge()
        self.producer.poll(0)  # the thread is gone: the purge reports are served here
        if self._reports:
            reports, self._reports = self._reports, []
            _settle(reports)


def _settle(reports: list[tuple[asyncio.Future[Delivered], Any, Any]]) -> None:
    """Resolve the futures of one round of delivery reports (on the event loop)."""
    for future, error, message in reports:
        if future.done():
            continue
        if error is not None:
            future.set_exception(kafka_error(error))
        else:
            future.set_result(Delivered(message.topic(), message.partition(), message.offset()))


class LibrdkafkaProducer:
    """Sends through librdkafka; ``send`` answers as ``RenewingProducer.send`` does (an awaitable
    that resolves to where the message was stored, or raises an aiokafka ``KafkaError``)."""

    def __init__(self, bootstrap: str, client_id: str, *, linger_ms: int = 0) -> None:
        self._config = producer_config(bootstrap, client_id, linger_ms=linger_ms)
        self._handle: _Handle | None = None
        self._stopping = False
        self._renewal: asyncio.Task[None] | None = None
        self.renewals = 0
        """How many times the producer was replaced."""

    @property
    def renewing(self) -> bool:
        """Whether the current producer broke for good and its successor is not running yet."""
        return self._renewal is not None or (
            self._handle is not None and self._handle.fatal is not None
        )

    async def start(self) -> None:
        """Start the first producer once a broker answered (raises a ``KafkaError`` as
        ``AIOKafkaProducer.start`` does when none does)."""
        handle = _Handle(self._config, asyncio.get_running_loop(), self._broken)
        try:
            await _metadata(handle.producer)
        except BaseException:
            await handle.close(0)
            raise
        self._handle = handle

    async def stop(self) -> None:
        """Stop renewing, then deliver what is queued (bounded) and close."""
        self._stopping = True
        if self._renewal is not None:
            self._renewal.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewal
        if self._handle is not None:
            await self._handle.close(STOP_LIMIT_SECONDS)

    async def flush(self, limit: float = STOP_LIMIT_SECONDS) -> None:
        """Wait until everything queued was delivered or failed (``limit`` seconds at most)."""
        if self._handle is not None:
            await asyncio.to_thread(self._handle.producer.flush, limit)

    async def check_broker(self) -> None:
        """A metadata round trip to the broker (raises a ``KafkaError`` when none answers)."""
        assert self._handle is not None, "not started"
        await _metadata(self._handle.producer)

    async def send(
        self,
        topic: str,
        value: bytes | None = None,
        *,
        key: bytes | None = None,
        partition: int | None = None,
        headers: list[tuple[str, str | bytes | None]] | None = None,
    ) -> asyncio.Future[Delivered]:
        """Queue one message; its delivery future. Waits (never blocking the loop) while
        librdkafka's queue is full; raises a ``KafkaError`` when the message can not be queued."""
        handle = self._handle
        assert handle is not None, "not started"
        future: asyncio.Future[Delivered] = handle.loop.create_future()
        on_delivery = functools.partial(handle.report, future)
        while True:
            try:
                if partition is None:
                    handle.producer.produce(
                        topic, value, key, on_delivery=on_delivery, headers=headers
                    )
                else:
                    handle.producer.produce(
                        topic, value, key, partition, on_delivery=on_delivery, headers=headers
                    )
                return future
            except BufferError:  # the queue is full: the caller's deadline bounds the wait
                await asyncio.sleep(QUEUE_FULL_PAUSE_SECONDS)
            except confluent_kafka.KafkaException as exc:
                error = exc.args[0]
                if error.fatal():
                    self._broken(handle, error)
                raise kafka_error(error) from None

    def _broken(self, handle: _Handle, error: RdKafkaError) -> None:
        if self._stopping or handle is not self._handle or self._renewal is not None:
            return  # stopping, already replaced, or being replaced
        log.error("kafka_producer_broken", error=f"{error.name()}: {error.str()}")
        self._renewal = asyncio.create_task(self._renew(handle))

    async def _renew(self, broken: _Handle) -> None:
        backoff = Backoff(first=0.2)
        try:
            while not self._stopping:
                fresh = _Handle(self._config, broken.loop, self._broken)
                try:
                    await _metadata(fresh.producer)
                except Exception as exc:  # the broker is away: try again shortly
                    log.warning("kafka_producer_renewal_failed", error=repr(exc))
                    await fresh.close(0)
                    await asyncio.sleep(backoff.next())
                    continue
                except asyncio.CancelledError:
                    await fresh.close(0)
                    raise
                self._handle = fresh
                self.renewals += 1
                log.warning("kafka_producer_renewed", renewals=self.renewals)
                break
        finally:
            self._renewal = None
        # What the broken producer still holds can not be delivered: its waiters get an error.
        await broken.close(0)


async def _metadata(producer: confluent_kafka.Producer) -> None:
    try:
        await asyncio.to_thread(producer.list_topics, timeout=METADATA_TIMEOUT_SECONDS)
    except confluent_kafka.KafkaException as exc:
        raise kafka_error(exc.args[0]) from None
