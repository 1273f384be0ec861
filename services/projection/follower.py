"""Follows ledger.events into the in-memory read model.

The follower only applies facts; it never waits for Postgres. What it changed is handed to the
checkpoint writer (:mod:`projection.checkpoint`), which stores rows and offsets together on its own
connection and task. Its applied position per partition is what read-your-writes waits on.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord
from prometheus_client import Counter, Histogram

from projection.checkpoint import Checkpoint
from projection.model import ReadModel
from projection.read_your_writes import AppliedPositions

log = structlog.get_logger()

LAG_SECONDS = Histogram(
    "projection_lag_seconds",
    "Time from a fact's occurrence in the ledger to the projection applying it",
    buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10),
)

BAD_FACTS = Counter("projection_unreadable_facts_total", "Facts that could not be applied")
FETCH_ERRORS = Counter(
    "projection_fetch_errors_total", "Fetches of facts that failed (retried after a pause)"
)


class Follower(ConsumerRebalanceListener):  # type: ignore[misc]
    """Applies facts to the read model, records how far per partition, and collects what
    changed for the next checkpoint. The model and positions outlive rebalances and outages."""

    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        topic: str,
        model: ReadModel,
        positions: AppliedPositions,
        *,
        retry_seconds: float = 0.5,
    ) -> None:
        self.consumer = consumer
        self.topic = topic
        self.model = model
        # Per partition, the offset after the last fact applied to ``model``; it starts at the
        # loaded checkpoint's offsets, and read-your-writes waits on it.
        self.positions = positions
        self.retry_seconds = retry_seconds
        self.applied = 0
        # Changes since the last checkpoint taken: keys only, so the checkpoint copies the rows'
        # latest values when it is taken.
        self._dirty_customers: set[str] = set()
        self._dirty_balances: set[tuple[str, str]] = set()
        self._offsets: dict[int, int] = {}
        # Rebalance callbacks run in aiokafka's coordinator task: keep them and a batch apart.
        self._lock = asyncio.Lock()

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        """Continue each partition where the in-memory model stands. This needs no Postgres
        (the stored offsets were loaded with the model), so a rebalance while Postgres or
        Kafka was away neither fails nor moves the model back to its last checkpoint."""
        async with self._lock:
            for tp in assigned:
                position = self.positions.next_offset(tp.partition)
                if position is not None:
                    self.consumer.seek(tp, position)
                else:  # never followed, no checkpoint: from the first fact Kafka still has
                    await self.consumer.seek_to_beginning(tp)
                    self.positions.advance(tp.partition, await self.consumer.position(tp))
        log.info("partitions_assigned", partitions=sorted(tp.partition for tp in assigned))

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        """Nothing to hand over: the model and its positions stay in memory, and the checkpoint
        writer stores the changes on its own schedule."""
        log.info("partitions_revoked", partitions=sorted(tp.partition for tp in revoked))

    async def readiness(self) -> dict[str, bool]:
        """Readiness check: the consumer group has given this follower its partitions (until
        then reads of them would wait in vain). No round trip: the assignment is local."""
        return {"following": bool(self.consumer.assignment())}

    async def run(self, stop: asyncio.Event) -> None:
        """Fetch and apply facts until ``stop``. A failed fetch (the broker away, a leader
        moving) is logged and retried: aiokafka reconnects by itself."""
        while not stop.is_set():
            try:
                records = await self.consumer.getmany(timeout_ms=200, max_records=5000)
            except KafkaError as exc:
                FETCH_ERRORS.inc()
                log.warning("fetch_failed", error=repr(exc))
                await asyncio.sleep(self.retry_seconds)
                continue
            if records:
                async with self._lock:
                    self._apply(records)

    def take_checkpoint(self) -> Checkpoint:
        """What changed since the last checkpoint taken, with the rows' values as of now and
        the offsets they reflect; the changes are forgotten until :meth:`restore`."""
        balances, self._dirty_balances = self._dirty_balances, set()
        customers, self._dirty_customers = self._dirty_customers, set()
        offsets, self._offsets = self._offsets, {}
        b_rows = []
        for c, b in balances:
            row = self.model.balances[(c, b)]
            b_rows.append((c, b, row.currency, row.amount, row.seq, row.reserved, row.hold_seq))
        c_rows = [(c, self.model.customers[c]) for c in customers if c in self.model.customers]
        return Checkpoint(b_rows, c_rows, offsets)

    def restore(self, checkpoint: Checkpoint) -> None:
        """A checkpoint was not stored: its changes go into the next one (with the rows' values
        as they will be then, and newer offsets where the model has moved on)."""
        self._dirty_balances.update((r[0], r[1]) for r in checkpoint.balances)
        self._dirty_customers.update(c for c, _ in checkpoint.customers)
        for partition, offset in checkpoint.offsets.items():
            self._offsets.setdefault(partition, offset)

    def _apply(self, records: dict[TopicPartition, list[ConsumerRecord[Any, Any]]]) -> None:
        customers = self._dirty_customers
        balances = self._dirty_balances
        offsets = self._offsets
        now = time.time()
        for tp, messages in records.items():
            for msg in messages:
                try:
                    customer, keys = self.model.apply(msg.value)
                except (ValueError, KeyError, TypeError) as exc:
                    # A fact we cannot read must not stop the read model for everyone: count it,
                    # log where it is, and go on (it stays in the topic for inspection).
                    BAD_FACTS.inc()
                    log.error(
                        "fact_unreadable",
                        message_id=f"{msg.partition}:{msg.offset}",
                        error=repr(exc),
                    )
                    continue
                customers.add(customer)
                balances.update(keys)
                LAG_SECONDS.observe(max(0.0, now - msg.timestamp / 1000))
            if messages:
                offsets[tp.partition] = messages[-1].offset + 1
                # After the model holds them (reads waiting for this offset may now answer).
                self.positions.advance(tp.partition, messages[-1].offset + 1)
            self.applied += len(messages)
