"""Republish stored facts to ledger.events, for a downstream consumer that lost some.

The outbox keeps every fact the ledger committed, per partition with a sequence number. A
republish sends a range of them again, byte for byte, with the same key (the customer id) and so
the same event id: a consumer de-duplicates them (``docs/events/consumer-contract.md``), and one
that had a gap books the missing fact and what it parked behind it. The rate is bounded
(``WALLET_REPUBLISH_RATE`` facts per second) so a large republish leaves the broker and the
other consumers room for live traffic.

Command line: ``python -m ledger.republish --partition P --from-seq N`` or ``--since TIME``.
:func:`republish` is the whole job (a pool, a producer, the ranges, a progress callback), for
the operator API's job runner to call as it is.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import asyncpg
from aiokafka import AIOKafkaProducer
from pydantic import Field

from wallet_platform import topics
from wallet_platform.config import CommonSettings, load_settings
from wallet_platform.kafka import make_producer

PAGE = 500
"""Most outbox rows read, and facts in flight, at a time."""


class RepublishSettings(CommonSettings):
    republish_rate: int = Field(
        default=2000,
        ge=1,
        le=1_000_000,
        description="Most facts per second `python -m ledger.republish` sends to ledger.events.",
    )


@dataclass(frozen=True, slots=True)
class OutboxRange:
    """Outbox rows ``from_seq``..``to_seq`` (inclusive) of one partition."""

    partition: int
    from_seq: int
    to_seq: int

    @property
    def size(self) -> int:
        """Most facts in the range (sequence numbers have no holes)."""
        return max(0, self.to_seq - self.from_seq + 1)


@dataclass(frozen=True, slots=True)
class Progress:
    """How far a republish is: facts sent of the total, the last sequence number sent."""

    partition: int
    last_seq: int
    sent: int
    total: int
    elapsed: float

    def line(self) -> str:
        """A progress line for a terminal or a job's status."""
        rate = self.sent / self.elapsed if self.elapsed > 0 else 0.0
        return (
            f"partition {self.partition}: republished {self.sent}/{self.total} facts "
            f"(to seq {self.last_seq}) at {rate:.0f}/s"
        )


async def range_from(
    pool: asyncpg.Pool, partition: int, from_seq: int, to_seq: int | None = None
) -> OutboxRange:
    """The range from ``from_seq`` to ``to_seq``, or to the partition's last fact stored now
    (so a republish ends even while the ledger writes on)."""
    last = await pool.fetchval("SELECT max(seq) FROM outbox WHERE partition = $1", partition)
    end = last if last is not None else 0
    return OutboxRange(partition, max(from_seq, 1), end if to_seq is None else min(to_seq, end))


async def ranges_since(
    pool: asyncpg.Pool, since: datetime, partitions: list[int] | None = None
) -> list[OutboxRange]:
    """Per partition, the facts from the first that occurred at or after ``since`` to the last
    stored now. Reads each partition's outbox rows (the outbox has no time index: this is
    operator tooling, not a hot path)."""
    if partitions is None:
        rows = await pool.fetch("SELECT DISTINCT partition FROM outbox ORDER BY partition")
        partitions = [r["partition"] for r in rows]
    found = []
    for partition in partitions:
        first = await pool.fetchval(
            """SELECT min(seq) FROM outbox
                WHERE partition = $1
                  AND (convert_from(payload, 'UTF8')::jsonb ->> 'occurred_at')::timestamptz
                      >= $2""",
            partition,
            since,
        )
        if first is not None:
            found.append(await range_from(pool, partition, first))
    return found


async def republish(
    pool: asyncpg.Pool,
    producer: AIOKafkaProducer,
    topic: str,
    ranges: list[OutboxRange],
    *,
    rate: float,
    progress: Callable[[Progress], None] = lambda _: None,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """Send the facts of ``ranges`` to ``topic`` in sequence order, with their stored keys and
    bytes, at most ``rate`` per second; ``progress`` is called after every page Kafka
    acknowledged. Returns the number of facts sent."""
    started = clock()
    sent = 0
    page = max(1, min(PAGE, int(rate)))
    for r in ranges:
        done = 0
        seq = r.from_seq
        while seq <= r.to_seq:
            rows = await pool.fetch(
                """SELECT seq, key, payload FROM outbox
                    WHERE partition = $1 AND seq >= $2 AND seq <= $3
                    ORDER BY seq LIMIT $4""",
                r.partition,
                seq,
                r.to_seq,
                page,
            )
            if not rows:
                break
            deliveries = [
                await producer.send(topic, bytes(row["payload"]), key=row["key"].encode())
                for row in rows
            ]
            await asyncio.gather(*deliveries)
            done += len(rows)
            sent += len(rows)
            seq = rows[-1]["seq"] + 1
            progress(Progress(r.partition, seq - 1, done, r.size, clock() - started))
            # Paced: never ahead of ``rate`` facts per second since the start.
            ahead = sent / rate - (clock() - started)
            if ahead > 0:
                await asyncio.sleep(ahead)
    return sent


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m ledger.republish",
        description="Send stored facts (the ledger's outbox) to ledger.events again, with the "
        "same event ids and keys, so a consumer that lost some can book them; consumers "
        "de-duplicate the rest. Paced by WALLET_REPUBLISH_RATE.",
    )
    p.add_argument("--partition", type=int, action="append", help="a partition (repeatable)")
    start = p.add_mutually_exclusive_group(required=True)
    start.add_argument("--from-seq", type=int, help="the first outbox sequence number to send")
    start.add_argument(
        "--since",
        type=datetime.fromisoformat,
        help="send every fact that occurred at or after this time (ISO 8601, e.g. "
        "2026-12-01T00:00:00+00:00), and all later ones",
    )
    p.add_argument("--to-seq", type=int, help="the last sequence number (with --from-seq)")
    p.add_argument("--rate", type=int, help="facts per second (default WALLET_REPUBLISH_RATE)")
    return p


async def _main(settings: RepublishSettings, args: argparse.Namespace) -> int:
    pool = await asyncpg.create_pool(settings.pg_dsn, min_size=1, max_size=1)
    producer = make_producer(settings.kafka_bootstrap, "ledger-republish", linger_ms=5)
    await producer.start()
    try:
        if args.from_seq is not None:
            ranges = [await range_from(pool, p, args.from_seq, args.to_seq) for p in args.partition]
        else:
            since = args.since
            if since.tzinfo is None:
                raise SystemExit("--since needs a time zone (e.g. +00:00)")
            ranges = await ranges_since(pool, since, args.partition)
        topic = topics.topic_name(topics.EVENTS, settings.topic_prefix)
        sent = await republish(
            pool,
            producer,
            topic,
            ranges,
            rate=args.rate or settings.republish_rate,
            progress=lambda p: print(p.line(), file=sys.stderr, flush=True),
        )
    finally:
        await producer.stop()
        await pool.close()
    print(f"republished {sent} facts to {topic}")
    return sent


def main() -> None:
    args = _parser().parse_args()
    if args.from_seq is not None and not args.partition:
        raise SystemExit("--from-seq needs --partition")
    settings = load_settings(RepublishSettings)
    asyncio.run(_main(settings, args))


if __name__ == "__main__":
    main()
