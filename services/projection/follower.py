"""Follows ledger.events into the read model; stores rows and offsets in one transaction."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

import asyncpg
import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.structs import ConsumerRecord
from prometheus_client import Counter, Histogram

from projection.model import BalanceRow, ReadModel

log = structlog.get_logger()

LAG_SECONDS = Histogram(
    "projection_lag_seconds",
    "Time from a fact's occurrence in the ledger to the projection applying it",
    buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10),
)

BAD_FACTS = Counter("projection_unreadable_facts_total", "Facts that could not be applied")


async def load_model(conn: asyncpg.Connection) -> ReadModel:
    model = ReadModel()
    for r in await conn.fetch("SELECT customer_id, blocked FROM customer_view"):
        model.customers[r["customer_id"]] = r["blocked"]
    for r in await conn.fetch(
        """SELECT customer_id, balance_id, currency, amount, seq, reserved, hold_seq
             FROM balance_view"""
    ):
        model.balances[(r["customer_id"], r["balance_id"])] = BalanceRow(
            r["currency"], int(r["amount"]), r["seq"], int(r["reserved"]), r["hold_seq"]
        )
    return model


class Follower(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(
        self,
        conn: asyncpg.Connection,
        consumer: AIOKafkaConsumer,
        topic: str,
        model: ReadModel,
        *,
        flush_seconds: float = 0.2,
    ) -> None:
        self.conn = conn
        self.consumer = consumer
        self.topic = topic
        self.model = model
        self.applied = 0
        # Reads are answered from memory the moment a fact is applied; Postgres only keeps a
        # checkpoint (rows and offsets together) to restart from, so it is written at most every
        # ``flush_seconds`` instead of once per small batch.
        self.flush_seconds = flush_seconds
        self._dirty_customers: set[str] = set()
        self._dirty_balances: set[tuple[str, str]] = set()
        self._offsets: dict[int, int] = {}
        self._last_flush = time.monotonic()
        # Rebalance callbacks run in aiokafka's coordinator task: keep them and a batch apart.
        self._lock = asyncio.Lock()

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        async with self._lock:
            await self._seek_stored(assigned)
        log.info("partitions_assigned", partitions=sorted(tp.partition for tp in assigned))

    async def _seek_stored(self, assigned: list[TopicPartition]) -> None:
        rows = await self.conn.fetch("SELECT partition, next_offset FROM projection_offsets")
        stored = {r["partition"]: r["next_offset"] for r in rows}
        for tp in assigned:
            if tp.partition in stored:
                self.consumer.seek(tp, stored[tp.partition])
            else:
                await self.consumer.seek_to_beginning(tp)

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        async with self._lock:
            await self.flush()
        log.info("partitions_revoked", partitions=sorted(tp.partition for tp in revoked))

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            records = await self.consumer.getmany(timeout_ms=200, max_records=5000)
            async with self._lock:
                if records:
                    self._apply(records)
                if time.monotonic() - self._last_flush >= self.flush_seconds:
                    await self.flush()

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
            self.applied += len(messages)

    async def flush(self) -> None:
        """Checkpoint the changed rows and the offsets that produced them, in one transaction."""
        self._last_flush = time.monotonic()
        if not self._offsets:
            return
        balances, self._dirty_balances = self._dirty_balances, set()
        customers, self._dirty_customers = self._dirty_customers, set()
        offsets, self._offsets = self._offsets, {}
        at = datetime.now(tz=UTC)
        b_rows = [(c, b, self.model.balances[(c, b)]) for c, b in balances]
        c_rows = [(c, self.model.customers[c]) for c in customers if c in self.model.customers]
        async with self.conn.transaction():
            await self.conn.execute(
                """INSERT INTO balance_view
                          (customer_id, balance_id, currency, amount, seq, reserved, hold_seq,
                           updated_at)
                   SELECT x.c, x.b, x.cur, x.amt, x.seq, x.res, x.hseq, $8
                     FROM unnest($1::text[], $2::text[], $3::text[], $4::numeric[], $5::bigint[],
                                 $6::numeric[], $7::bigint[])
                          AS x(c, b, cur, amt, seq, res, hseq)
                   ON CONFLICT (customer_id, balance_id) DO UPDATE
                      SET amount = excluded.amount, seq = excluded.seq,
                          reserved = excluded.reserved, hold_seq = excluded.hold_seq,
                          updated_at = excluded.updated_at
                    WHERE balance_view.seq < excluded.seq
                       OR balance_view.hold_seq < excluded.hold_seq""",
                [r[0] for r in b_rows],
                [r[1] for r in b_rows],
                [r[2].currency for r in b_rows],
                [r[2].amount for r in b_rows],
                [r[2].seq for r in b_rows],
                [r[2].reserved for r in b_rows],
                [r[2].hold_seq for r in b_rows],
                at,
            )
            await self.conn.execute(
                """INSERT INTO customer_view (customer_id, blocked, updated_at)
                   SELECT x.c, x.b, $3 FROM unnest($1::text[], $2::boolean[]) AS x(c, b)
                   ON CONFLICT (customer_id) DO UPDATE
                      SET blocked = excluded.blocked, updated_at = excluded.updated_at""",
                [r[0] for r in c_rows],
                [r[1] for r in c_rows],
                at,
            )
            await self.conn.execute(
                """INSERT INTO projection_offsets (partition, next_offset)
                   SELECT * FROM unnest($1::int[], $2::bigint[])
                   ON CONFLICT (partition) DO UPDATE SET next_offset = excluded.next_offset""",
                list(offsets),
                list(offsets.values()),
            )


async def rebuild(conn: asyncpg.Connection) -> None:
    """Forget the read model; the next start replays ledger.events from the beginning."""
    async with conn.transaction():
        await conn.execute("TRUNCATE balance_view, customer_view, projection_offsets")
