"""The ledger writer: consume ledger.commands, decide, write each batch in one transaction.

The loop, per batch (whatever ``getmany`` has ready, up to a cap; it never waits to fill one):

1. decode the commands; look up stored outcomes for keys not in memory (one query);
2. ``decide`` each command against the partition's in-memory state and apply it there;
3. write postings, outcomes, the facts (outbox) and the new offsets with ``ledger_apply_batch``:
   one statement, one transaction, one fsync; the offset update is conditional on this writer's
   epoch, so a zombie writer's batch fails as a whole;
4. only then answer the waiting edges on ``ledger.replies`` and publish the facts to
   ``ledger.events``; ``published_seq`` advances once Kafka has acknowledged them, and whatever was
   committed but not acknowledged is republished from the outbox when a writer takes over.

If a batch fails for any other reason the partitions involved are reloaded from Postgres and the
consumer is rewound to the stored offsets: memory never runs ahead of what is durable.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg
import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.structs import ConsumerRecord
from prometheus_client import Counter, Histogram

from ledger import store
from ledger_core.commands import (
    Command,
    CommandError,
    Envelope,
    decode,
    fingerprint,
    idempotency_key,
)
from ledger_core.decide import (
    Decision,
    StoredOutcome,
    apply,
    decide,
)
from ledger_core.facts import facts_for
from ledger_core.replies import Reply, encode_replies
from ledger_core.state import PartitionState

log = structlog.get_logger()

BATCH_SIZE = Histogram(
    "ledger_batch_commands",
    "Commands applied per batch transaction",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000),
)
BATCH_SECONDS = Histogram(
    "ledger_batch_seconds",
    "Time to write one batch to Postgres",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0),
)
BATCH_CYCLE_SECONDS = Histogram(
    "ledger_batch_cycle_seconds",
    "Time to handle one batch: look up outcomes, decide, write, answer",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0),
)
LOOKUP_SECONDS = Histogram(
    "ledger_lookup_seconds",
    "Time to look up stored outcomes for one batch",
    buckets=(0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1),
)
QUEUED_SECONDS = Histogram(
    "ledger_command_queued_seconds",
    "From a command's Kafka timestamp to the start of its batch",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0),
)
OUTCOMES = Counter("ledger_outcomes_total", "Commands decided, by status", ["status"])
OPTIMISTIC_MISSES = Counter(
    "ledger_stored_outcome_misses_total",
    "Batches decided again because a request turned out to have a stored outcome",
)
DEAD_LETTERS = Counter("ledger_dead_letters_total", "Undecodable commands sent to the DLQ")

Key = tuple[str, str, str]


@dataclass(slots=True)
class Owned:
    """A partition this writer owns: its cursor, its state, and recent outcomes."""

    cursor: store.PartitionCursor
    state: PartitionState
    outcomes: OrderedDict[Key, StoredOutcome] = field(default_factory=OrderedDict)
    publishing: asyncio.Task[bool] | None = None  # tail of the chain of fact deliveries

    def remember(self, key: Key, outcome: StoredOutcome, cap: int) -> None:
        self.outcomes[key] = outcome
        if len(self.outcomes) > cap:
            self.outcomes.popitem(last=False)


@dataclass(slots=True)
class InFlight:
    """A batch whose write was sent: what to do once it lands."""

    task: asyncio.Task[None]
    ends: dict[int, int]
    replies: list[tuple[Envelope, Decision]]
    facts: dict[int, list[tuple[int, str, bytes]]]
    commands: int
    started: float


@dataclass(slots=True)
class Topics:
    commands: str
    events: str
    replies: str
    dead_letter: str


class Writer(ConsumerRebalanceListener):  # type: ignore[misc]
    """Owns the partitions the consumer group assigns it and applies their commands."""

    def __init__(
        self,
        conns: list[asyncpg.Connection],
        consumer: AIOKafkaConsumer,
        producer: AIOKafkaProducer,
        topics: Topics,
        *,
        max_batch: int,
        outcome_cache: int,
        verify_seconds: float = 10.0,
        pipeline_depth: int = 2,
    ) -> None:
        # Batches alternate between connections so one batch is decided and looked up while the
        # previous one is being written (and several commits can share a WAL flush).
        self.conns = conns
        # Batches sent and not yet completed: at most this many (each on its own connection).
        self.pipeline_depth = min(pipeline_depth, len(conns))
        self.conn = conns[0]  # ownership changes and republishing, with nothing in flight
        self.next_conn = 0
        self.in_flight: deque[InFlight] = deque()
        self.broken: dict[int, bool] = {}  # partition -> fenced? (else: reload it)
        # After a takeover (or a request found only in Postgres) every unknown key is looked up
        # for this long; then the writer trusts its memory (see _start_batch).
        self.verify_seconds = verify_seconds
        self.verify_until = 0.0
        self.consumer = consumer
        # One producer for replies and facts: a batch's replies and facts go out in one produce
        # request. (A producer of its own for replies, so they never queue behind facts, was
        # measured: it saved no latency and cost a second request per batch.)
        self.producer = producer
        self.topics = topics
        self.max_batch = max_batch
        self.outcome_cache = outcome_cache
        self.owned: dict[int, Owned] = {}
        # aiokafka runs rebalance callbacks in its coordinator task, concurrently with our loop:
        # the lock keeps a batch and a change of ownership (and their use of the one Postgres
        # connection) from interleaving.
        self._lock = asyncio.Lock()
        self.batches = 0
        self.last_batch_at = 0.0

    # -- partition ownership ---------------------------------------------------------------------

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        async with self._lock:
            await self._drain()
            for tp in sorted(assigned):
                await self._take(tp.partition)
        log.info("partitions_assigned", partitions=sorted(tp.partition for tp in assigned))

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        async with self._lock:
            await self._drain()
            for tp in revoked:
                owned = self.owned.pop(tp.partition, None)
                if owned is not None:
                    await self._settle_publishing(owned)
        log.info("partitions_revoked", partitions=sorted(tp.partition for tp in revoked))

    async def _take(self, partition: int) -> None:
        cursor = await store.take_over(self.conn, partition)
        state = await store.load_partition(self.conn, partition)
        owned = Owned(cursor, state)
        self.owned[partition] = owned
        self.verify_until = max(self.verify_until, time.monotonic() + self.verify_seconds)
        self.consumer.seek(TopicPartition(self.topics.commands, partition), cursor.next_offset)
        await self._republish(owned)
        log.info(
            "partition_taken",
            partition=partition,
            epoch=cursor.epoch,
            next_offset=cursor.next_offset,
            customers=len(state.customers),
        )

    async def _republish(self, owned: Owned) -> None:
        """Publish facts that were committed but not acknowledged by Kafka (after a crash)."""
        cursor = owned.cursor
        rows = await store.unpublished_facts(self.conn, cursor.partition, cursor.published_seq)
        if not rows:
            return
        futures = [
            await self.producer.send(self.topics.events, r["payload"], key=r["key"].encode())
            for r in rows
        ]
        await asyncio.gather(*futures)
        cursor.published_seq = rows[-1]["seq"]
        await store.save_published(self.conn, cursor)
        log.info("facts_republished", partition=cursor.partition, count=len(rows))

    async def _settle_publishing(self, owned: Owned) -> None:
        """Wait for in-flight fact deliveries and record how far they got."""
        if owned.publishing is not None:
            await asyncio.shield(owned.publishing)
        try:
            await store.save_published(self.conn, owned.cursor)
        except (asyncpg.PostgresError, OSError):
            log.warning("published_seq_not_saved", partition=owned.cursor.partition)

    async def close(self) -> None:
        """Finish publishing and record progress; the batch in flight has already committed."""
        async with self._lock:
            await self._drain()
            for owned in list(self.owned.values()):
                await self._settle_publishing(owned)

    # -- the loop ----------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            # With a write in flight, only take what is already fetched (and let the fetcher ask
            # for more); with nothing in flight, wait for work.
            wait_ms = 0 if self.in_flight else 200
            records = await self.consumer.getmany(timeout_ms=wait_ms, max_records=self.max_batch)
            async with self._lock:
                if records:
                    await self._start_batch(records)
                depth = self.pipeline_depth
                while self.in_flight and (len(self.in_flight) >= depth or not records):
                    await self._complete_oldest()
                if not self.in_flight:
                    await self._recover_pending()
                    for owned in list(self.owned.values()):
                        task = owned.publishing
                        if task is not None and task.done() and not task.result():
                            owned.publishing = None
                            await self._republish(owned)

    async def _start_batch(
        self, records: dict[TopicPartition, list[ConsumerRecord[Any, Any]]]
    ) -> None:
        """Decide a batch against memory and send its write; it completes in order, later."""
        started = time.perf_counter()
        work: list[tuple[Owned, ConsumerRecord[Any, Any], Command, Envelope, Key]] = []
        dead: list[tuple[ConsumerRecord[Any, Any], str]] = []
        ends: dict[int, int] = {}
        missing: list[Key] = []
        for tp, messages in records.items():
            owned = self.owned.get(tp.partition)
            if owned is not None:
                # Records fetched before a rebalance may predate the stored position.
                messages = [m for m in messages if m.offset >= owned.cursor.next_offset]
            if owned is None or not messages or tp.partition in self.broken:
                continue  # revoked, fenced, being recovered, or already applied
            ends[tp.partition] = messages[-1].offset + 1
            for msg in messages:
                try:
                    cmd, envelope = decode(msg.value)
                except CommandError as exc:
                    dead.append((msg, str(exc)))
                    continue
                key = idempotency_key(cmd)
                if key not in owned.outcomes:
                    missing.append(key)
                work.append((owned, msg, cmd, envelope, key))
        if not ends:
            return
        if work:
            QUEUED_SECONDS.observe(max(0.0, time.time() - work[0][1].timestamp / 1000))
        conn = self.conns[self.next_conn]
        self.next_conn = (self.next_conn + 1) % len(self.conns)
        # Outcomes of this writer's own decisions are in memory. A key that is not may still be
        # in Postgres (decided before a takeover, or evicted): right after a takeover, and after
        # such a key turned up, every unknown key is looked up first. Otherwise the batch is
        # decided as if they were new, and the idempotency table's primary key catches the rare
        # old one: the batch fails whole and is decided again, looked up.
        verify_all = time.monotonic() < self.verify_until
        try:
            t_lookup = time.perf_counter()
            stored = await store.stored_outcomes(conn, missing) if verify_all else {}
            LOOKUP_SECONDS.observe(time.perf_counter() - t_lookup)
            await self._dead_letter(dead)
            rows, replies, facts, unverified = self._decide_all(work, stored, ends, verify_all)
            if unverified:
                # Answers that store nothing (400s) can not trip the primary key: check them.
                await self._verify(conn, unverified, replies)
        except (TimeoutError, asyncpg.PostgresError, OSError) as exc:
            log.error("batch_failed", error=repr(exc), partitions=sorted(ends))
            self.broken.update(dict.fromkeys(ends, False))
            return
        for partition, end in ends.items():
            # Optimistic: the next batch expects this one's end. If this one fails, the next
            # one's conditional offset update fails too, and both partitions are reloaded.
            self.owned[partition].cursor.next_offset = end
        previous = self.in_flight[-1].task if self.in_flight else None
        task = asyncio.create_task(self._write(conn, rows, previous))
        self.in_flight.append(InFlight(task, ends, replies, facts, len(work), started))

    @staticmethod
    async def _write(
        conn: asyncpg.Connection, rows: store.BatchRows, previous: asyncio.Task[None] | None
    ) -> None:
        # Writes go out strictly in order: two connections give no ordering between them, and a
        # batch expects the offsets the previous one stores. What overlaps the previous write is
        # this batch's lookup and decisions, which is where the time goes.
        if previous is not None:
            await asyncio.wait([previous])
        t0 = time.perf_counter()
        await store.apply_batch(conn, rows)
        BATCH_SECONDS.observe(time.perf_counter() - t0)

    async def _complete_oldest(self) -> None:
        """Wait for the oldest write; answer and publish if it landed, else mark for recovery."""
        batch = self.in_flight.popleft()
        try:
            await batch.task
        except store.Fenced as exc:
            # Genuine fencing only if this was the partition's first failure: a batch queued
            # behind a failed one fails its offset check for that reason alone.
            for partition in batch.ends:
                self.broken.setdefault(partition, True)
            log.warning("batch_fenced", partitions=sorted(batch.ends), detail=str(exc))
            return
        except asyncpg.UniqueViolationError:
            # A request decided before this writer's memory (see _start_batch): decide the
            # batch again, looking every unknown key up for a while.
            OPTIMISTIC_MISSES.inc()
            # At least long enough for the batch to come round again, looked up this time.
            self.verify_until = time.monotonic() + max(self.verify_seconds, 10.0)
            log.info("outcome_found_in_store", partitions=sorted(batch.ends))
            for partition in batch.ends:
                self.broken.setdefault(partition, False)
            return
        except (TimeoutError, asyncpg.PostgresError, OSError) as exc:
            log.error("batch_failed", error=repr(exc), partitions=sorted(batch.ends))
            for partition in batch.ends:
                self.broken.setdefault(partition, False)
            return
        await self._answer(batch.replies)
        self._publish(batch.facts)
        BATCH_SIZE.observe(batch.commands)
        BATCH_CYCLE_SECONDS.observe(time.perf_counter() - batch.started)
        self.batches += 1
        self.last_batch_at = time.monotonic()
        log.debug(
            "batch_applied",
            commands=batch.commands,
            partitions=sorted(batch.ends),
            ms=round((time.perf_counter() - batch.started) * 1000, 2),
        )

    async def _drain(self) -> None:
        while self.in_flight:
            await self._complete_oldest()
        await self._recover_pending()

    def _decide_all(
        self,
        work: list[tuple[Owned, ConsumerRecord[Any, Any], Command, Envelope, Key]],
        stored: dict[Key, StoredOutcome],
        ends: dict[int, int],
        verified: bool,
    ) -> tuple[
        store.BatchRows,
        list[tuple[Envelope, Decision]],
        dict[int, list[tuple[int, str, bytes]]],
        list[tuple[int, Owned, Command, Key]],
    ]:
        rows = store.BatchRows()
        replies: list[tuple[Envelope, Decision]] = []
        facts: dict[int, list[tuple[int, str, bytes]]] = {}
        unverified: list[tuple[int, Owned, Command, Key]] = []
        for owned, msg, cmd, envelope, key in work:
            prior = owned.outcomes.get(key) or stored.get(key)
            decision = decide(owned.state, cmd, prior)
            if prior is None and not verified and not decision.record:
                unverified.append((len(replies), owned, cmd, key))
            apply(owned.state, decision)  # optimistic: reloaded from Postgres if the batch fails
            partition = owned.cursor.partition
            at = datetime.fromtimestamp(msg.timestamp / 1000, tz=UTC)
            rows.add_effects(decision, partition, msg.offset, at)
            if decision.record:
                outcome = StoredOutcome(
                    fingerprint(cmd), decision.outcome.status, decision.outcome.body
                )
                owned.remember(key, outcome, self.outcome_cache)
                rows.add_outcome(key, outcome, decision.entry_id, partition, at)
            for fact in facts_for(decision, partition, msg.timestamp):
                owned.cursor.outbox_seq += 1
                seq = owned.cursor.outbox_seq
                rows.add(rows.outbox, (partition, seq, fact.event_id, fact.key, fact.payload))
                facts.setdefault(partition, []).append((seq, fact.key, fact.payload))
            OUTCOMES.labels(str(decision.outcome.status)).inc()
            replies.append((envelope, decision))
        for partition, end in ends.items():
            rows.add_cursor(self.owned[partition].cursor, end)
        return rows, replies, facts, unverified

    async def _verify(
        self,
        conn: asyncpg.Connection,
        unverified: list[tuple[int, Owned, Command, Key]],
        replies: list[tuple[Envelope, Decision]],
    ) -> None:
        """Re-decide answers that stored nothing against outcomes stored earlier, if any. Such
        decisions have no effects, so only their answers can change (to the stored one or 409)."""
        stored = await store.stored_outcomes(conn, [key for _, _, _, key in unverified])
        for index, owned, cmd, key in unverified:
            prior = stored.get(key)
            if prior is not None:
                envelope, _ = replies[index]
                replies[index] = (envelope, decide(owned.state, cmd, prior))

    async def _answer(self, replies: list[tuple[Envelope, Decision]]) -> None:
        """Tell the waiting processes, one message per reply partition; a lost reply only costs
        the caller a retry (503), never a second posting."""
        by_partition: dict[int, list[Reply]] = {}
        for envelope, decision in replies:
            if envelope.reply_to >= 0:
                outcome = decision.outcome
                by_partition.setdefault(envelope.reply_to, []).append(
                    (envelope.command_id, outcome.status, outcome.body)
                )
        for partition, items in by_partition.items():
            await self.producer.send(
                self.topics.replies, encode_replies(items), partition=partition
            )

    def _publish(self, facts: dict[int, list[tuple[int, str, bytes]]]) -> None:
        for partition, items in facts.items():
            owned = self.owned[partition]
            owned.publishing = asyncio.create_task(self._deliver(owned, items, owned.publishing))

    async def _deliver(
        self, owned: Owned, items: list[tuple[int, str, bytes]], previous: asyncio.Task[bool] | None
    ) -> bool:
        """Send one batch's facts; advance ``published_seq`` once they and all earlier ones are
        acknowledged. Returns False if anything in the chain failed (the loop republishes)."""
        try:
            futures = [
                await self.producer.send(self.topics.events, payload, key=key.encode())
                for _, key, payload in items
            ]
            ok = previous is None or await previous
            await asyncio.gather(*futures)
        except Exception as exc:  # any delivery failure: the outbox still has them
            log.error("facts_not_published", partition=owned.cursor.partition, error=repr(exc))
            return False
        if ok:
            owned.cursor.published_seq = max(owned.cursor.published_seq, items[-1][0])
        return ok

    async def _dead_letter(self, dead: list[tuple[ConsumerRecord[Any, Any], str]]) -> None:
        """Park undecodable commands on the dead-letter topic before their offset moves past."""
        if not dead:
            return
        futures = []
        for msg, reason in dead:
            log.error(
                "command_dead_lettered", message_id=f"{msg.partition}:{msg.offset}", reason=reason
            )
            futures.append(
                await self.producer.send(
                    self.topics.dead_letter,
                    msg.value,
                    key=msg.key,
                    headers=[
                        ("error", reason.encode()),
                        ("source", f"{msg.topic}:{msg.partition}:{msg.offset}".encode()),
                    ],
                )
            )
            DEAD_LETTERS.inc()
        await asyncio.gather(*futures)

    async def _recover_pending(self) -> None:
        """Reload partitions whose batch failed (memory ran ahead of Postgres), or let go of the
        ones another writer took over. Called with no write in flight."""
        if not self.broken:
            return
        broken, self.broken = self.broken, {}
        if not all(broken.values()):
            await asyncio.sleep(0.5)  # a failing database: do not spin
        for partition, fenced in broken.items():
            owned = self.owned.pop(partition, None)
            if owned is not None and owned.publishing is not None:
                await asyncio.shield(owned.publishing)
            tp = TopicPartition(self.topics.commands, partition)
            if fenced and owned is not None:
                # Fenced by a newer epoch means another writer owns it; the same epoch with
                # another offset means our memory disagrees with Postgres: reload, do not stop.
                stored_epoch = await store.stored_epoch(self.conn, partition)
                fenced = stored_epoch != owned.cursor.epoch
            if fenced:
                # The group gave the partition to someone else; stop reading it until the
                # rebalance that must follow tells us what we own.
                self.consumer.pause(tp)
                continue
            try:
                await self._take(partition)
            except (asyncpg.PostgresError, OSError) as exc:
                log.error("partition_reload_failed", partition=partition, error=repr(exc))
                self.consumer.pause(tp)
                raise
