"""The ledger writer: consume ledger.commands, decide, write each batch in one transaction.

The loop, per batch (whatever ``getmany`` has ready, up to a cap; it never waits to fill one):

1. decode the commands (undecodable ones go to the dead-letter topic; commands whose text
   Postgres can not hold get a final ``command_refused``); look up stored outcomes for keys not
   in memory when in doubt (one query);
2. ``decide`` each command against the partition's in-memory state and apply it there, through
   an undo log;
3. write postings, outcomes, the facts (outbox) and the new offsets with ``ledger_apply_batch``:
   one statement, one transaction, one fsync; the offset update is conditional on this writer's
   epoch, so a zombie writer's batch fails as a whole;
4. only then publish the facts to ``ledger.events`` and, once Kafka has acknowledged them, answer
   the waiting edges on ``ledger.replies``: a caller that got a 201 can read its write from the
   projection. ``published_seq`` advances as facts are acknowledged; whatever was committed but
   not acknowledged is republished.

When Postgres refuses a batch it rolled it back, so the writer rolls its memory back with the
batch's undo log and acts on why (``store.classify``): a duplicate key means a request decided
before (decide again, looking keys up); a deterministic refusal is narrowed down by halving the
batch until the one command is found, which then gets a final, stored ``command_refused`` answer
(and a copy on the dead-letter topic) while the partition moves on; a transient fault is retried
with backoff. A broken connection leaves the commit in doubt: the writer reconnects with backoff
and reloads the partitions from Postgres. Memory never runs ahead of what is durable for longer
than one batch.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord
from prometheus_client import Counter, Gauge, Histogram

from ledger import store
from ledger.store import Fault
from ledger_core.batch_rows import BatchRows, PartitionCursor
from ledger_core.commands import (
    CommandError,
    Envelope,
    decode,
    idempotency_key,
)
from ledger_core.decide import Decision, StoredOutcome
from ledger_core.plan import (
    UNDECIDABLE,
    BatchPlan,
    Incoming,
    Key,
    Position,
    Refusal,
    Undecidable,
    answer_again,
    plan_batch,
)
from ledger_core.replies import Reply, encode_replies
from ledger_core.state import PartitionState, UndoLog
from wallet_platform.backoff import Backoff
from wallet_platform.producer import Producer

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
DEAD_LETTERS = Counter(
    "ledger_dead_letters_total", "Commands copied to the dead-letter topic, by reason", ["reason"]
)
REFUSED = Counter(
    "ledger_commands_refused_total", "Commands answered command_refused, by cause", ["cause"]
)
BATCH_FAILURES = Counter(
    "ledger_batch_failures_total", "Batches Postgres did not take, by fault", ["fault"]
)
DEGRADED = Gauge("ledger_writer_degraded", "1 while the writer is recovering from a fault")

MAX_BACKOFF_SECONDS = 5.0
# Positions already copied to the dead-letter topic, remembered so a batch decided again does
# not copy them twice.
PARKED_MEMORY = 10_000
# After the database refused a command: batches of at most this many, for CAUTIOUS_SECONDS.
CAUTIOUS_BATCH = 64
CAUTIOUS_SECONDS = 10.0
# How often the loop looks again while the producer is being replaced.
RENEWAL_WAIT_SECONDS = 0.05


@dataclass(slots=True)
class Owned:
    """A partition this writer owns: its cursor, its state, and recent outcomes."""

    cursor: PartitionCursor
    state: PartitionState
    outcomes: OrderedDict[Key, StoredOutcome] = field(default_factory=OrderedDict)
    publishing: asyncio.Task[bool] | None = None  # tail of the chain of fact deliveries

    def remember(self, key: Key, outcome: StoredOutcome, cap: int) -> None:
        self.outcomes[key] = outcome
        if len(self.outcomes) > cap:
            self.outcomes.popitem(last=False)


@dataclass(slots=True)
class InFlight:
    """A batch whose write was sent: what to do once it lands, or how to take it back."""

    task: asyncio.Task[None]
    ends: dict[int, int]
    replies: list[tuple[Envelope, Decision]]
    facts: dict[int, list[tuple[int, str, bytes]]]
    positions: list[Position]  # of the commands written, in order
    outcomes: dict[Key, tuple[int, StoredOutcome]]  # stored by this batch, by partition
    undo: UndoLog
    verified: bool  # every unknown key was looked up before deciding
    started: float

    @property
    def commands(self) -> int:
        return len(self.positions)


@dataclass(slots=True)
class Topics:
    commands: str
    events: str
    replies: str
    dead_letter: str


Connect = Callable[[], Awaitable[asyncpg.Connection]]


class Writer(ConsumerRebalanceListener):  # type: ignore[misc]
    """Owns the partitions the consumer group assigns it and applies their commands."""

    def __init__(
        self,
        conns: list[asyncpg.Connection],
        consumer: AIOKafkaConsumer,
        producer: Producer | None,
        topics: Topics,
        *,
        max_batch: int,
        outcome_cache: int,
        verify_seconds: float = 10.0,
        pipeline_depth: int = 2,
        connect: Connect | None = None,
    ) -> None:
        # Batches alternate between connections so one batch is decided and looked up while the
        # previous one is being written (and several commits can share a WAL flush).
        self.conns = conns
        self.connect = connect
        # Batches sent and not yet completed: at most this many (each on its own connection).
        self.pipeline_depth = min(pipeline_depth, len(conns))
        self.next_conn = 0
        self.in_flight: deque[InFlight] = deque()
        self.failed: list[tuple[InFlight, BaseException]] = []
        # Partitions to (re)load from Postgres before their commands are read again.
        self.reload: set[int] = set()
        # After a takeover (or a request found only in Postgres) every unknown key is looked up
        # for this long; then the writer trusts its memory (see _start_batch).
        self.verify_seconds = verify_seconds
        self.verify_until = 0.0
        # Narrowing a refused batch down: at most ``probe`` commands per batch until every
        # partition of the refused batch has passed its end (``probe_until``).
        self.probe: int | None = None
        self.cautious_until = 0.0
        self.probe_until: dict[int, int] = {}
        self.refusals: dict[Position, Refusal] = {}
        # Backoff after a transient fault or a broken connection (outside the lock).
        self.backoff = Backoff(first=0.05, cap=MAX_BACKOFF_SECONDS)
        self.resume_at = 0.0
        self.consumer = consumer
        # One producer for replies and facts; it replaces itself when it breaks. None for a
        # replay into another database (ledger.replay): nothing is published, answered or
        # dead-lettered there, since the live writer did all of that already.
        self.producer = producer
        self.topics = topics
        self.max_batch = max_batch
        self.outcome_cache = outcome_cache
        self.owned: dict[int, Owned] = {}
        self.answering: set[asyncio.Task[None]] = set()
        # Records fetched and not yet committed, per partition, in offset order.
        self.fetched: dict[int, deque[ConsumerRecord[Any, Any]]] = {}
        self.parked: OrderedDict[Position, None] = OrderedDict()
        # aiokafka runs rebalance callbacks in its coordinator task, concurrently with our loop:
        # the lock keeps a batch and a change of ownership (and their use of the connections)
        # from interleaving.
        self._lock = asyncio.Lock()
        self.batches = 0
        self.last_batch_at = 0.0

    @property
    def ready(self) -> bool:
        """False while the writer recovers from a fault (its partitions are not moving)."""
        return not self.reload and not self.backoff.engaged and not self._renewing

    @property
    def _renewing(self) -> bool:
        return self.producer is not None and self.producer.renewing

    # -- partition ownership ---------------------------------------------------------------------

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        async with self._lock:
            await self._drain()
            for tp in sorted(assigned):
                try:
                    await self._take(tp.partition)
                except store.DB_ERRORS as exc:
                    # Postgres is away: the loop takes it over once it is back.
                    log.error("partition_take_failed", partition=tp.partition, error=repr(exc))
                    self.reload.add(tp.partition)
                    self._back_off()
        log.info("partitions_assigned", partitions=sorted(tp.partition for tp in assigned))

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        async with self._lock:
            await self._drain()
            for tp in revoked:
                self._forget(tp.partition)
                owned = self.owned.pop(tp.partition, None)
                if owned is not None:
                    await self._settle_publishing(owned)
        log.info("partitions_revoked", partitions=sorted(tp.partition for tp in revoked))

    def _forget(self, partition: int) -> None:
        self.fetched.pop(partition, None)
        self.reload.discard(partition)
        self.probe_until.pop(partition, None)
        if not self.probe_until:
            self.probe = None
        for position in [p for p in self.refusals if p[0] == partition]:
            del self.refusals[position]

    async def _take(self, partition: int) -> None:
        conn = self.conns[0]
        cursor = await store.take_over(conn, partition)
        state = await store.load_partition(conn, partition)
        owned = Owned(cursor, state)
        previous = self.owned.get(partition)
        if previous is not None and previous.publishing is not None:
            owned.publishing = previous.publishing
        self.owned[partition] = owned
        self.reload.discard(partition)
        self.verify_until = max(self.verify_until, time.monotonic() + self.verify_seconds)
        self.fetched.pop(partition, None)
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
        if self.producer is None:
            return  # a replay publishes nothing
        cursor = owned.cursor
        rows = await store.unpublished_facts(self.conns[0], cursor.partition, cursor.published_seq)
        if not rows:
            return
        try:
            futures = [
                await self.producer.send(self.topics.events, r["payload"], key=r["key"].encode())
                for r in rows
            ]
            await asyncio.gather(*futures)
        except KafkaError as exc:
            # Still in the outbox: the loop tries again (the chain is marked failed).
            log.error("facts_not_republished", partition=cursor.partition, error=repr(exc))
            self._back_off()
            owned.publishing = _failed_delivery()
            return
        cursor.published_seq = max(cursor.published_seq, rows[-1]["seq"])
        await store.save_published(self.conns[0], cursor)
        log.info("facts_republished", partition=cursor.partition, count=len(rows))

    async def _settle_publishing(self, owned: Owned) -> None:
        """Wait for in-flight fact deliveries and record how far they got."""
        if owned.publishing is not None:
            await asyncio.shield(owned.publishing)
        try:
            await store.save_published(self.conns[0], owned.cursor)
        except store.DB_ERRORS:
            log.warning("published_seq_not_saved", partition=owned.cursor.partition)

    async def close(self) -> None:
        """Finish publishing and answering, and record progress; nothing is left in flight."""
        async with self._lock:
            await self._drain()
            for owned in list(self.owned.values()):
                await self._settle_publishing(owned)
            if self.answering:
                await asyncio.gather(*self.answering, return_exceptions=True)

    # -- the loop ----------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            pause = self.resume_at - time.monotonic()
            if pause > 0:
                # Backing off: sleep outside the lock, so a rebalance can go on meanwhile.
                await asyncio.sleep(min(pause, 0.25))
                continue
            async with self._lock:
                if self.reload or self.failed:
                    # Only with nothing in flight: a batch in flight was decided on top of the
                    # memory a recovery rolls back or reloads.
                    await self._drain()
                    await self._recover()
                    continue
            if self._renewing:
                # Nothing could be published or answered until the producer's successor runs;
                # its renewal is a task of its own, which this loop must leave the event loop to.
                async with self._lock:
                    await self._drain()
                await asyncio.sleep(RENEWAL_WAIT_SECONDS)
                continue
            ready = self._ready_count()
            if ready < self._batch_cap():
                # With a write in flight or records ready, only take what is already fetched (and
                # let the fetcher ask for more); with nothing to do, wait for work.
                wait_ms = 0 if self.in_flight or ready else 200
                try:
                    records = await self.consumer.getmany(
                        timeout_ms=wait_ms, max_records=self._batch_cap()
                    )
                except KafkaError as exc:
                    log.error("commands_not_fetched", error=repr(exc))
                    async with self._lock:
                        await self._drain()
                    self._back_off()
                    continue
                self._buffer(records)
            async with self._lock:
                started = await self._start_batch()
                depth = 1 if self.probe else self.pipeline_depth
                while self.in_flight and (len(self.in_flight) >= depth or not started):
                    await self._complete_oldest()
                    if self.failed:
                        break  # no new batch on top of a failed one: recovered next turn
                if not self.in_flight:
                    await self._after_writes()
            if not started:
                # Nothing was written this turn, and getmany(timeout_ms=0) may return without
                # ever suspending: let the event loop run the other tasks before the next turn.
                await asyncio.sleep(0)

    def _buffer(self, records: dict[TopicPartition, list[ConsumerRecord[Any, Any]]]) -> None:
        """Keep fetched records until their batch commits: a batch Postgres did not take is
        decided again from here, without reading Kafka again."""
        for tp, messages in records.items():
            owned = self.owned.get(tp.partition)
            if owned is None or tp.partition in self.reload:
                continue  # revoked, or being reloaded (sought back when it is)
            buffer = self.fetched.setdefault(tp.partition, deque())
            last = buffer[-1].offset if buffer else owned.cursor.next_offset - 1
            for msg in messages:
                # Records fetched before a rebalance may predate the stored position.
                if msg.offset > last:
                    buffer.append(msg)
                    last = msg.offset

    def _batch_cap(self) -> int:
        """The most commands in a batch: smaller for a while after a refused one, so that
        narrowing the next one down costs few round trips and little deciding again."""
        if time.monotonic() < self.cautious_until:
            return min(self.max_batch, CAUTIOUS_BATCH)
        return self.max_batch

    def _ready_count(self) -> int:
        """Records fetched and not yet in a batch."""
        ready = 0
        for partition, buffer in self.fetched.items():
            if buffer and partition in self.owned and partition not in self.reload:
                ready += buffer[-1].offset + 1 - self.owned[partition].cursor.next_offset
        return max(ready, 0)

    async def _after_writes(self) -> None:
        """With nothing in flight: act on failed batches, retry failed fact deliveries."""
        if self.failed:
            await self._recover()
            return
        for owned in list(self.owned.values()):
            task = owned.publishing
            if task is not None and task.done() and not task.result():
                owned.publishing = None
                try:
                    await self._republish(owned)
                except store.DB_ERRORS as exc:
                    self._fail_outside_batch(exc, [owned.cursor.partition])

    def _back_off(self) -> None:
        self.resume_at = time.monotonic() + self.backoff.next()
        DEGRADED.set(1)

    def _recovered(self) -> None:
        if self.backoff.engaged:
            log.info("writer_recovered")
            self.backoff.reset()
            DEGRADED.set(0)

    def _select(self) -> list[tuple[Owned, list[ConsumerRecord[Any, Any]]]]:
        """The records of the next batch, per owned partition, from the position memory is at;
        while narrowing a refused batch down, at most ``probe`` of them."""
        selected = []
        budget = self.probe or self._batch_cap()
        for partition in sorted(self.fetched):
            buffer = self.fetched[partition]
            owned = self.owned.get(partition)
            if budget <= 0 or not buffer or owned is None or partition in self.reload:
                continue
            start = owned.cursor.next_offset
            messages = []
            for msg in buffer:
                if msg.offset >= start:
                    messages.append(msg)
                    if len(messages) == budget:
                        break
            if messages:
                budget -= len(messages)
                selected.append((owned, messages))
        return selected

    async def _start_batch(self) -> bool:
        """Decide a batch against memory and send its write; it completes in order, later.
        False if there was nothing to write."""
        if self.failed or self.reload or self._renewing:
            # Memory holds a failed batch's changes until it is recovered; or nothing could be
            # answered or published until the producer is replaced.
            return False
        started = time.perf_counter()
        commands: list[Incoming] = []
        envelopes: list[Envelope] = []
        records: list[ConsumerRecord[Any, Any]] = []
        dead: list[tuple[ConsumerRecord[Any, Any], str, str]] = []
        ends: dict[int, int] = {}
        missing: list[Key] = []
        for owned, messages in self._select():
            partition = owned.cursor.partition
            ends[partition] = messages[-1].offset + 1
            for msg in messages:
                try:
                    cmd, envelope = decode(msg.value)
                except CommandError as exc:
                    dead.append((msg, "undecodable", str(exc)))
                    continue
                key = idempotency_key(cmd)
                if not self._known(owned, key):
                    missing.append(key)
                commands.append(Incoming(partition, msg.offset, msg.timestamp, cmd, key))
                envelopes.append(envelope)
                records.append(msg)
        if not ends:
            return False
        if records:
            QUEUED_SECONDS.observe(max(0.0, time.time() - records[0].timestamp / 1000))
        conn = self.conns[self.next_conn]
        self.next_conn = (self.next_conn + 1) % len(self.conns)
        # Outcomes of this writer's own decisions are in memory. A key that is not may still be
        # in Postgres (decided before a takeover, or evicted): right after a takeover, and after
        # such a key turned up, every unknown key is looked up first. Otherwise the batch is
        # decided as if they were new, and the idempotency table's primary key catches the rare
        # old one: the batch fails whole and is decided again, looked up.
        verify_all = time.monotonic() < self.verify_until
        undo = UndoLog()
        try:
            t_lookup = time.perf_counter()
            stored = await store.stored_outcomes(conn, missing) if verify_all else {}
            LOOKUP_SECONDS.observe(time.perf_counter() - t_lookup)
            try:
                plan = plan_batch(
                    self.owned,
                    commands,
                    ends,
                    lambda partition, key: self._prior(partition, key) or stored.get(key),
                    undo,
                    verified=verify_all,
                    refusals=self.refusals,
                )
            except Undecidable as exc:
                log.exception("command_not_decided", position=exc.position)  # with the cause
                self.refusals[exc.position] = Refusal(
                    f"it could not be decided ({type(exc.cause).__name__})", cause=UNDECIDABLE
                )
                return True  # refused when it is taken again
            self._count(plan)
            for index in plan.refused:
                body = plan.decisions[index].outcome.body.decode()
                dead.append((records[index], "refused", body))
            if plan.to_verify:
                # Answers that store nothing (400s) can not trip the primary key: check them.
                found = await store.stored_outcomes(conn, [commands[i].key for i in plan.to_verify])
                answer_again(plan, self.owned, commands, found)
            parked = await self._dead_letter(dead)
        except store.DB_ERRORS as exc:
            undo.rollback()
            self._fail_outside_batch(exc, ends)
            return True
        except KafkaError as exc:
            undo.rollback()
            log.error("dead_letters_not_sent", error=repr(exc))
            self._back_off()
            return True
        replies = list(zip(envelopes, plan.decisions, strict=True))
        positions = [(c.partition, c.offset) for c in commands]
        previous = self.in_flight[-1].task if self.in_flight else None
        task = asyncio.create_task(self._write(conn, plan.rows, previous, parked))
        self.in_flight.append(
            InFlight(
                task, ends, replies, plan.facts, positions, plan.outcomes, undo, verify_all, started
            )
        )
        return True

    def _known(self, owned: Owned, key: Key) -> bool:
        return self._prior(owned.cursor.partition, key) is not None

    def _prior(self, partition: int, key: Key) -> StoredOutcome | None:
        """The outcome stored (or about to be) for ``key`` outside the batch being planned: a
        batch in flight's, or a committed one's still in memory."""
        for earlier in reversed(self.in_flight):
            found = earlier.outcomes.get(key)
            if found is not None:
                return found[1]
        owned = self.owned.get(partition)
        return None if owned is None else owned.outcomes.get(key)

    @staticmethod
    def _count(plan: BatchPlan) -> None:
        for cause in plan.refused_by:
            REFUSED.labels(cause).inc()
        for decision in plan.decisions:
            OUTCOMES.labels(str(decision.outcome.status)).inc()

    def _fail_outside_batch(self, exc: BaseException, partitions: Iterable[int]) -> None:
        """A database call other than the batch write failed (a lookup, a republish)."""
        fault = store.classify(exc)
        BATCH_FAILURES.labels(fault.value).inc()
        log.error("database_call_failed", fault=fault.value, error=repr(exc))
        if fault is Fault.CONNECTION:
            self.reload.update(p for p in partitions if p in self.owned)
        self._back_off()

    @staticmethod
    async def _write(
        conn: asyncpg.Connection,
        rows: BatchRows,
        previous: asyncio.Task[None] | None,
        parked: list[asyncio.Future[Any]],
    ) -> None:
        # Writes go out strictly in order: two connections give no ordering between them, and a
        # batch expects the offsets the previous one stores. What overlaps the previous write is
        # this batch's lookup and decisions, which is where the time goes.
        if previous is not None:
            await asyncio.wait([previous])
        # The dead letters are on their topic before the offsets move past them.
        if parked:
            await asyncio.gather(*parked)
        t0 = time.perf_counter()
        await store.apply_batch(conn, rows)
        BATCH_SECONDS.observe(time.perf_counter() - t0)

    async def _complete_oldest(self) -> None:
        """Wait for the oldest write; publish and answer if it landed, else keep it for
        :meth:`_recover` (which runs once nothing is in flight)."""
        batch = self.in_flight.popleft()
        try:
            await batch.task
        except Exception as exc:
            self.failed.append((batch, exc))
            return
        for key, (partition, outcome) in batch.outcomes.items():
            owned = self.owned.get(partition)
            if owned is not None:
                owned.remember(key, outcome, self.outcome_cache)
        for position in batch.positions:
            self.refusals.pop(position, None)
        for partition, end in batch.ends.items():
            buffer = self.fetched.get(partition)
            while buffer and buffer[0].offset < end:
                buffer.popleft()
        if self.producer is not None:
            self._publish(batch.facts)
            self._answer_when_published(batch)
        BATCH_SIZE.observe(batch.commands)
        BATCH_CYCLE_SECONDS.observe(time.perf_counter() - batch.started)
        self.batches += 1
        self.last_batch_at = time.monotonic()
        self._recovered()
        if self.probe is not None and all(
            self.owned[p].cursor.next_offset >= end
            for p, end in self.probe_until.items()
            if p in self.owned
        ):
            log.info("refused_batch_passed")
            self.probe, self.probe_until = None, {}
        log.debug(
            "batch_applied",
            commands=batch.commands,
            partitions=sorted(batch.ends),
            ms=round((time.perf_counter() - batch.started) * 1000, 2),
        )

    async def _drain(self) -> None:
        while self.in_flight:
            await self._complete_oldest()
        if self.failed:
            await self._recover()

    async def _recover(self) -> None:
        """Act on failed batches (called with nothing in flight), then reload what needs it."""
        failed, self.failed = self.failed, []
        first_fault: Fault | None = None
        # Newest first: each batch was decided on top of the ones before it.
        for batch, _ in reversed(failed):
            batch.undo.rollback()
        for batch, exc in failed:
            fault = store.classify(exc)
            BATCH_FAILURES.labels(fault.value).inc()
            if fault is Fault.FENCED and await self._fenced_by_another(batch, exc):
                continue
            if first_fault is None:
                first_fault = fault
                self._act_on(batch, exc, fault)
            elif fault is Fault.CONNECTION:
                # Commit in doubt for this one too.
                self.reload.update(p for p in batch.ends if p in self.owned)
        if self.reload:
            await self._reload()

    async def _fenced_by_another(self, batch: InFlight, exc: BaseException) -> bool:
        """True if a newer writer owns the batch's partitions (they are let go)."""
        try:
            epochs = {p: await store.stored_epoch(self.conns[0], p) for p in batch.ends}
        except store.DB_ERRORS:
            return False  # unknown: treated as a failure of ours, and reloaded
        others = [
            p for p, e in epochs.items() if p in self.owned and e != self.owned[p].cursor.epoch
        ]
        if not others:
            return False
        log.warning("batch_fenced", partitions=sorted(others), detail=str(exc))
        for partition in others:
            # The group gave the partition to someone else; stop reading it until the rebalance
            # that must follow tells us what we own.
            self._forget(partition)
            owned = self.owned.pop(partition)
            if owned.publishing is not None:
                await asyncio.shield(owned.publishing)
            self.consumer.pause(TopicPartition(self.topics.commands, partition))
        return True

    def _act_on(self, batch: InFlight, exc: BaseException, fault: Fault) -> None:
        """What the first failed batch's fault calls for (later ones failed because of it)."""
        log.warning(
            "batch_failed",
            fault=fault.value,
            error=repr(exc),
            commands=batch.commands,
            partitions=sorted(batch.ends),
        )
        if fault is Fault.DUPLICATE and not batch.verified:
            # A request decided before this writer's memory: decide the batch again, looking
            # every unknown key up for a while, at least long enough for it to come round again.
            OPTIMISTIC_MISSES.inc()
            self.verify_until = time.monotonic() + max(self.verify_seconds, 10.0)
        elif fault in (Fault.REFUSED, Fault.DUPLICATE):
            # The same rows are refused every time: narrow the batch down to the command.
            self._narrow(batch, exc)
        elif fault is Fault.FENCED:
            # Same epoch, other offset: memory disagrees with Postgres. Reload, do not stop.
            self.reload.update(p for p in batch.ends if p in self.owned)
        elif fault is Fault.CONNECTION:
            self.reload.update(p for p in batch.ends if p in self.owned)
            self._back_off()
        else:
            self._back_off()

    def _narrow(self, batch: InFlight, exc: BaseException) -> None:
        self.cautious_until = time.monotonic() + CAUTIOUS_SECONDS
        reason = f"the database refused it ({getattr(exc, 'sqlstate', None) or type(exc).__name__})"
        if batch.commands == 1:
            position = batch.positions[0]
            refusal = self.refusals.get(position)
            if refusal is None:
                self.refusals[position] = Refusal(reason)
                log.error("command_refused_by_database", position=position, error=repr(exc))
                # Found: full batches again (another refused command narrows down anew).
                self.probe, self.probe_until = None, {}
            elif refusal.record:
                # Storing the answer is what fails: answer only.
                self.refusals[position] = Refusal(refusal.reason, record=False)
            else:
                # Even the bare answer is refused: the fault is not this command's. Wait.
                self._back_off()
            return
        if batch.commands == 0:
            self._back_off()
            return
        self.probe = max(1, min(batch.commands, CAUTIOUS_BATCH) // 2)
        for partition, end in batch.ends.items():
            self.probe_until[partition] = max(end, self.probe_until.get(partition, 0))
        log.warning("narrowing_refused_batch", probe=self.probe)

    async def _reload(self) -> None:
        """Reconnect if needed, then take over the partitions whose memory is in doubt."""
        try:
            await self._reconnect()
            for partition in sorted(self.reload):
                tp = TopicPartition(self.topics.commands, partition)
                if tp in self.consumer.assignment():
                    await self._take(partition)
                else:
                    self.reload.discard(partition)
                    self.owned.pop(partition, None)
        except store.DB_ERRORS as exc:
            log.error("partition_reload_failed", error=repr(exc), partitions=sorted(self.reload))
            self._back_off()
            return
        self._recovered()

    async def _reconnect(self) -> None:
        """Replace connections that broke (Postgres restarted, or the network did)."""
        for i, conn in enumerate(self.conns):
            if not conn.is_closed():
                try:
                    await conn.fetchval("SELECT 1")
                    continue
                except store.DB_ERRORS:
                    conn.terminate()
            if self.connect is None:
                raise asyncpg.InterfaceError("connection lost and no way to reconnect")
            self.conns[i] = await self.connect()
            log.info("postgres_reconnected", connection=i)

    def _answer_when_published(self, batch: InFlight) -> None:
        """Answer the batch's callers once its facts (and all earlier ones of its partitions)
        are on ``ledger.events``: a 201 is then readable from the projection."""
        waits = [
            owned.publishing
            for p in batch.ends
            if (owned := self.owned.get(p)) is not None and owned.publishing is not None
        ]
        task = asyncio.create_task(self._answer_after(waits, batch.replies))
        self.answering.add(task)
        task.add_done_callback(self.answering.discard)

    async def _answer_after(
        self, waits: list[asyncio.Task[bool]], replies: list[tuple[Envelope, Decision]]
    ) -> None:
        if waits:
            delivered = await asyncio.gather(*(asyncio.shield(w) for w in waits))
            if not all(delivered):
                # The caller's retry gets the stored outcome once the facts are republished.
                log.warning("replies_withheld_facts_not_published", replies=len(replies))
                return
        try:
            await self._answer(replies)
        except KafkaError as exc:
            log.warning("replies_not_sent", error=repr(exc), replies=len(replies))

    async def _answer(self, replies: list[tuple[Envelope, Decision]]) -> None:
        """Tell the waiting processes, one message per reply partition; a lost reply only costs
        the caller a retry (503), never a second posting."""
        if self.producer is None:
            return
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
        assert self.producer is not None  # only a publishing writer delivers
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

    async def _dead_letter(
        self, dead: list[tuple[ConsumerRecord[Any, Any], str, str]]
    ) -> list[asyncio.Future[Any]]:
        """Copy undecodable and refused commands to the dead-letter topic. The batch's write
        waits for the copies of undecodable ones (the copy is all that is left of them); a
        refused one has its answer stored with the batch, so its copy is not waited for (a lost
        copy is logged). A command is copied once per writer (a batch decided again does not copy
        it again)."""
        futures: list[asyncio.Future[Any]] = []
        if self.producer is None:
            return futures  # a replay: the live writer copied them already
        for msg, reason, detail in dead:
            position = (msg.partition, msg.offset)
            if position in self.parked:
                continue
            self.parked[position] = None
            if len(self.parked) > PARKED_MEMORY:
                self.parked.popitem(last=False)
            log.error(
                "command_dead_lettered",
                message_id=f"{msg.partition}:{msg.offset}",
                reason=reason,
                detail=detail,
            )
            source = f"{msg.topic}:{msg.partition}:{msg.offset}"
            delivery = await self.producer.send(
                self.topics.dead_letter,
                msg.value,
                key=msg.key,
                headers=[
                    ("reason", reason.encode()),
                    ("error", detail.encode()),
                    ("source", source.encode()),
                ],
            )
            if reason == "undecodable":
                futures.append(delivery)
            else:
                delivery.add_done_callback(lambda d, at=source: _copy_delivered(d, at))
            DEAD_LETTERS.labels(reason).inc()
        return futures


def _copy_delivered(delivery: asyncio.Future[Any], source: str) -> None:
    if not delivery.cancelled() and delivery.exception() is not None:
        log.error("dead_letter_copy_lost", source=source, error=repr(delivery.exception()))


def _failed_delivery() -> asyncio.Task[bool]:
    """A finished delivery chain that failed: the loop republishes from the outbox."""

    async def failed() -> bool:
        return False

    return asyncio.ensure_future(failed())
