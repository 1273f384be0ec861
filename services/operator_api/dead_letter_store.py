"""Where dead letters live: the dead-letter topic (what was parked, the source of truth) and the
operator-side table ``operator_dead_letters`` (what an operator did with each: redriven or
discarded, by which key, when, why). A record without a row is new.

The topic is read with one consumer of the operator API's own, assigned partitions by hand (no
consumer group, nothing committed), one request at a time; every read is bounded in records
and time.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord

READ_WAIT_S: Final = 5.0
"""Longest one read of the topic waits for records Kafka has (then it answers what it read)."""


@dataclass(frozen=True, slots=True)
class ParkedRecord:
    """One record of the dead-letter topic, as Kafka holds it."""

    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...]


@dataclass(frozen=True, slots=True)
class OperatorAction:
    """What an operator did with a dead letter (a row of ``operator_dead_letters``)."""

    state: str  # redriven | discarded
    api_id: uuid.UUID
    at: datetime
    reason: str
    source: str
    redriven_to: str | None


@dataclass(frozen=True, slots=True)
class TopicWindow:
    """A partition's first and end offsets (records are ``first .. end - 1``)."""

    first: int
    end: int


def _parked(record: ConsumerRecord[Any, Any]) -> ParkedRecord:
    return ParkedRecord(
        record.partition,
        record.offset,
        record.timestamp,
        record.key,
        record.value or b"",
        tuple((name, bytes(value or b"")) for name, value in record.headers),
    )


class DeadLetterTopic:
    """Reads the dead-letter topic with one consumer, one read at a time."""

    def __init__(self, consumer: AIOKafkaConsumer, topic: str) -> None:
        self.consumer = consumer
        self.topic = topic
        self._lock = asyncio.Lock()

    async def window(self, partition: int) -> TopicWindow:
        """The partition's first and end offsets now."""
        tp = TopicPartition(self.topic, partition)
        first = (await self.consumer.beginning_offsets([tp]))[tp]
        end = (await self.consumer.end_offsets([tp]))[tp]
        return TopicWindow(first, end)

    async def partitions(self) -> list[int]:
        """The topic's partitions."""
        found = self.consumer.partitions_for_topic(self.topic)
        return sorted(found) if found else [0]

    async def read(self, partition: int, start: int, most: int) -> tuple[list[ParkedRecord], int]:
        """Up to ``most`` records from offset ``start``, and the partition's end offset (read
        first: records written meanwhile wait for the next page)."""
        tp = TopicPartition(self.topic, partition)
        async with self._lock:
            window = await self.window(partition)
            start = max(start, window.first)
            if start >= window.end or most <= 0:
                return [], window.end
            self.consumer.assign([tp])
            self.consumer.seek(tp, start)
            found: list[ParkedRecord] = []
            deadline = time.monotonic() + READ_WAIT_S
            position = start
            while len(found) < most and position < window.end and time.monotonic() < deadline:
                batch = await self.consumer.getmany(
                    tp, timeout_ms=500, max_records=min(500, most - len(found))
                )
                for record in batch.get(tp, ()):
                    if record.offset >= window.end or len(found) >= most:
                        break
                    found.append(_parked(record))
                    position = record.offset + 1
            return found, window.end

    async def record(self, partition: int, offset: int) -> ParkedRecord | None:
        """The record at ``offset``, or None when the partition holds none there."""
        if partition not in await self.partitions() or offset < 0:
            return None
        found, _ = await self.read(partition, offset, 1)
        return found[0] if found and found[0].offset == offset else None


class DeadLetterActions:
    """The ``operator_dead_letters`` table."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def of(self, partition: int, offsets: list[int]) -> dict[int, OperatorAction]:
        """The actions taken on these records of ``partition``, by offset."""
        rows = await self.pool.fetch(
            """SELECT dlq_offset, state, api_id, at, reason, source, redriven_to
                 FROM operator_dead_letters
                WHERE dlq_partition = $1 AND dlq_offset = ANY($2::bigint[])""",
            partition,
            offsets,
        )
        return {r["dlq_offset"]: _action(r) for r in rows}

    async def counts(self) -> dict[str, int]:
        """Records per state that an operator acted on."""
        rows = await self.pool.fetch(
            "SELECT state, count(*) AS n FROM operator_dead_letters GROUP BY state"
        )
        return {r["state"]: r["n"] for r in rows}

    async def record(
        self,
        conn: asyncpg.Connection,
        partition: int,
        offset: int,
        action: OperatorAction,
    ) -> OperatorAction | None:
        """Record ``action`` (inside the caller's transaction); None when done, else the action
        taken before (each dead letter is acted on once). A concurrent first action holds the
        row's key until it commits, so the second waits and then sees it."""
        inserted = await conn.fetchval(
            """INSERT INTO operator_dead_letters
                      (dlq_partition, dlq_offset, state, api_id, at, reason, source, redriven_to)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
               ON CONFLICT (dlq_partition, dlq_offset) DO NOTHING RETURNING true""",
            partition,
            offset,
            action.state,
            action.api_id,
            action.at,
            action.reason,
            action.source,
            action.redriven_to,
        )
        if inserted:
            return None
        row = await conn.fetchrow(
            """SELECT dlq_offset, state, api_id, at, reason, source, redriven_to
                 FROM operator_dead_letters WHERE dlq_partition = $1 AND dlq_offset = $2""",
            partition,
            offset,
        )
        assert row is not None  # the conflict was with this row, and rows are never deleted
        return _action(row)


def _action(row: asyncpg.Record) -> OperatorAction:
    return OperatorAction(
        row["state"], row["api_id"], row["at"], row["reason"], row["source"], row["redriven_to"]
    )


async def stored_outcome(pool: asyncpg.Pool, key: tuple[str, str, str]) -> tuple[int, bytes] | None:
    """The ledger's stored outcome (status, body) for an idempotency key, if any."""
    row = await pool.fetchrow(
        """SELECT status, body FROM idempotency
            WHERE customer_id = $1 AND scope = $2 AND request_id = $3""",
        *key,
    )
    return None if row is None else (row["status"], bytes(row["body"]))
