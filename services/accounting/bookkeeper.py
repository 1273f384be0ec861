"""Follows ledger.events into the books: read, judge (``ledger_books``), write one transaction.

One loop: fetch what Kafka has (up to a batch), offer each fact to the pure
:class:`~ledger_books.books.Books`, and write what was booked together with the Kafka positions
in one Postgres transaction. A partition's stored position never passes its first parked fact,
so a restart reads parked facts again. When a write fails (Postgres away, or another consumer
moved a position after a rebalance) the loop reloads the books from Postgres and seeks every
partition back to its stored position: memory never runs ahead of what is stored.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord
from prometheus_client import Counter, Gauge, Histogram

from accounting import store
from ledger_books.books import Books, Delivered
from ledger_books.chain import ChainFollower, Link
from ledger_books.reading import UnreadableFact, read_fact
from wallet_platform.backoff import Backoff

log = structlog.get_logger()

BOOKED = Counter("accounting_facts_booked_total", "Facts booked into the accounting books")
DUPLICATES = Counter(
    "accounting_duplicate_facts_total", "Facts dropped as already booked (republished or re-read)"
)
PARKED_TOTAL = Counter(
    "accounting_facts_parked_total", "Facts parked because a fact before them was missing"
)
RELEASED = Counter(
    "accounting_facts_released_total", "Parked facts booked once the missing fact arrived"
)
PARKED = Gauge("accounting_parked_facts", "Facts waiting behind a gap now")
GAPS = Gauge("accounting_balances_with_gap", "Balances whose next fact is missing now")
IGNORED = Counter(
    "accounting_ignored_facts_total", "Facts of a type or schema version the books do not know"
)
UNREADABLE = Counter("accounting_unreadable_facts_total", "Facts that could not be read")
WRITE_FAILURES = Counter(
    "accounting_write_failures_total", "Batches not stored (the books reload and read again)"
)
LAG_FACTS = Gauge(
    "accounting_lag_facts", "Facts in ledger.events not yet read by the books", ["partition"]
)
CHAIN_BREAKS = Counter(
    "accounting_chain_breaks_total",
    "Entry facts whose hash or link to the previous entry does not hold (docs/tamper-evidence.md)",
)
CHAIN_BROKEN = Gauge(
    "accounting_chain_broken", "1 once an entry fact broke its partition's hash chain"
)
LAG_SECONDS = Histogram(
    "accounting_lag_seconds",
    "Time from a fact's publication to its booking",
    buckets=(0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30, 60),
)


class Bookkeeper(ConsumerRebalanceListener):  # type: ignore[misc]
    """Keeps the books of the partitions Kafka assigns to this consumer."""

    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        topic: str,
        open_connection: Callable[[], Awaitable[asyncpg.Connection]],
        *,
        max_batch: int,
        backoff: Backoff,
        conn: asyncpg.Connection | None = None,
    ) -> None:
        self.consumer = consumer
        self.topic = topic
        self.open_connection = open_connection
        self.max_batch = max_batch
        self.backoff = backoff
        self.conn = conn
        self.books = Books()
        # Checks the hash chain of the entry facts as they arrive (memory only: a restart
        # checks the links from the first fact it reads).
        self.chain = ChainFollower()
        self.stored: dict[int, int] = {}  # partition -> Kafka position stored with the books
        self.read_to: dict[int, int] = {}  # partition -> the offset after the last fact read
        self._reload = True  # the books in memory must be read from Postgres before booking
        self.booked = 0

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        """The loop reloads the books and seeks to the stored positions before it books again
        (nothing here waits for Postgres, which may be away)."""
        self._reload = True
        log.info("partitions_assigned", partitions=sorted(tp.partition for tp in assigned))

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        """Nothing to hand over: every batch stored its positions with its books."""
        log.info("partitions_revoked", partitions=sorted(tp.partition for tp in revoked))

    @property
    def connected(self) -> bool:
        """Whether the books' connection is open."""
        return self.conn is not None and not self.conn.is_closed()

    async def readiness(self) -> dict[str, bool]:
        """Ready: Postgres connected, partitions assigned, and no fact waiting behind a gap
        (books with a gap are not current, and an operator should look: see
        ``accounting_parked_facts``)."""
        return {
            "postgres": self.connected,
            "following": bool(self.consumer.assignment()),
            "no_gap": self.books.parked_count == 0,
            "chain_intact": self.chain.intact,
        }

    async def run(self, stop: asyncio.Event) -> None:
        """Book facts until ``stop``; dependency failures are retried with backoff."""
        while not stop.is_set():
            try:
                if not self.connected:
                    await self._drop()
                    self.conn = await self.open_connection()
                    self._reload = True
                if self._reload:
                    await self._load()
                records = await self.consumer.getmany(timeout_ms=200, max_records=self.max_batch)
                if self._reload:  # the assignment changed while fetching: read again
                    continue
                if records:
                    await self._book(records)
                self._measure_lag()
                self.backoff.reset()
            except (
                KafkaError,
                OSError,
                asyncpg.PostgresError,
                asyncpg.InterfaceError,
                store.PositionMoved,
                TimeoutError,
            ) as exc:
                WRITE_FAILURES.inc()
                log.warning("books_not_advanced", error=repr(exc))
                self._reload = True
                if not isinstance(exc, (KafkaError, store.PositionMoved)):
                    await self._drop()
                await _stopped_within(stop, self.backoff.next())

    async def _load(self) -> None:
        assert self.conn is not None
        self.books, self.stored = await store.load_books(self.conn)
        self.read_to = dict(self.stored)
        for tp in self.consumer.assignment():
            position = self.stored.get(tp.partition)
            if position is None:
                await self.consumer.seek_to_beginning(tp)
            else:
                self.consumer.seek(tp, position)
        self._reload = False
        self._publish_gauges()
        log.info(
            "books_loaded",
            positions={str(p): o for p, o in self.stored.items()},
            balances=len(self.books.positions),
        )

    async def _book(self, records: dict[TopicPartition, list[ConsumerRecord[Any, Any]]]) -> None:
        assert self.conn is not None
        booked: list[Delivered] = []
        kafka: dict[int, tuple[int | None, int]] = {}
        duplicates = parked = released = 0
        now = time.time()
        for tp, messages in records.items():
            for msg in messages:
                self._follow_chain(tp.partition, msg.offset, msg.value)
                try:
                    fact = read_fact(msg.value)
                except UnreadableFact as exc:
                    # Not booked and not parked: if it moved money, the next fact of its balance
                    # is a gap, and parks, so the books never pass it silently.
                    UNREADABLE.inc()
                    log.error("fact_unreadable", at=f"{tp.partition}:{msg.offset}", error=str(exc))
                    continue
                if fact is None:
                    IGNORED.inc()
                    continue
                was_parked = bool(self.books.parked.get(tp.partition))
                offered = self.books.offer(Delivered(tp.partition, msg.offset, fact))
                booked += offered.booked
                duplicates += offered.duplicate
                released += offered.released
                if offered.parked:
                    parked += 1
                    if not was_parked:
                        log.warning(
                            "gap_fact_parked",
                            at=f"{tp.partition}:{msg.offset}",
                            event_id=fact.event_id,
                            type=fact.type,
                            claims=[(c.balance_id, c.counter, c.value) for c in fact.claims],
                        )
                elif offered.booked:
                    LAG_SECONDS.observe(max(0.0, now - msg.timestamp / 1000))
            if messages:
                self.read_to[tp.partition] = messages[-1].offset + 1
                position = self.books.committable(tp.partition, messages[-1].offset + 1)
                if position != self.stored.get(tp.partition):
                    kafka[tp.partition] = (self.stored.get(tp.partition), position)
        batch = store.batch_of(booked, self.books.positions, kafka)
        if batch:
            await store.write_batch(self.conn, batch)
        for partition, (_, position) in kafka.items():
            self.stored[partition] = position
        self.booked += len(booked)
        BOOKED.inc(len(booked))
        DUPLICATES.inc(duplicates)
        PARKED_TOTAL.inc(parked)
        RELEASED.inc(released)
        if released:
            log.info("gap_healed", released=released)
        self._publish_gauges()

    def _follow_chain(self, partition: int, offset: int, payload: bytes) -> None:
        """Check an entry fact's hash and its link; a break is counted, logged and makes the
        consumer not ready (the books still book: the chain is evidence, not a gate)."""
        try:
            check = self.chain.offer_payload(payload)
        except ValueError:
            return  # not JSON: read_fact reports it
        if check is not None and check.link is Link.BROKEN:
            CHAIN_BREAKS.inc()
            CHAIN_BROKEN.set(1)
            log.error(
                "entry_chain_broken",
                at=f"{partition}:{offset}",
                ledger_partition=check.partition,
                chain_seq=check.chain_seq,
                entry_id=check.entry_id,
                reason=check.reason,
            )

    def _publish_gauges(self) -> None:
        PARKED.set(self.books.parked_count)
        GAPS.set(len(self.books.balances_behind_gaps()))

    def _measure_lag(self) -> None:
        for tp in self.consumer.assignment():
            end = self.consumer.highwater(tp)
            if end is None:
                continue
            read = self.read_to.get(tp.partition, self.stored.get(tp.partition, 0))
            LAG_FACTS.labels(str(tp.partition)).set(max(0, end - read))

    async def close(self) -> None:
        """Close the books' connection (every batch was stored as it was booked)."""
        await self._drop()

    async def _drop(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None and not conn.is_closed():
            conn.terminate()


async def _stopped_within(stop: asyncio.Event, seconds: float) -> bool:
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        return False
    return True
