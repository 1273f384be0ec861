"""Rebuild the read model from ``ledger.events``, with progress, and compare it with the ledger.

A rebuild reads every partition of ``ledger.events`` from its first record to the end offsets
read at the start, with a consumer of its own (no consumer group, nothing committed), applies
the facts to a fresh :class:`~projection.model.ReadModel` in memory, at most ``rate`` facts per
second, and reports its progress. It never touches the live projection: what happens to the
rebuilt model is the caller's choice (``python -m projection rebuild`` stores it as the read
model, with the live projection stopped; the operator API's job only compares it).

**The comparison is exact while the ledger writes on.** Before reading the end offsets it takes
one snapshot of the ledger: each customer balance's last posting sequence. Every fact of those
postings was committed before the snapshot, so it reaches Kafka moments later (the writer
publishes right after the commit): the rebuild follows the topic a little further (at most
``catch_up_seconds``) until it has reached every balance's snapshot sequence. Then each rebuilt
balance is compared with the ledger's posting at *the same sequence* (``balance_after``), so a
posting made meanwhile can not show as a difference. Differences: a balance the rebuilt model
lacks or has not reached, one the ledger does not know, another currency, another amount.
Held amounts (open exchanges) have no per-sequence history in the ledger; ``python -m
ledger.audit`` compares them on a quiet ledger.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition

from ledger_core.money import format_amount
from projection.checkpoint import APPLICATION_NAME, Checkpoint, write_checkpoint
from projection.model import ReadModel
from wallet_platform import kafka_admin
from wallet_platform.kafka import make_consumer

BalanceKey = tuple[str, str]  # (customer id, balance id)

FETCH_RECORDS = 2000
"""Most facts fetched at a time (and applied between two progress reports)."""
LOOKUP_CHUNK = 10_000
"""Most balances looked up in the ledger per query."""
KEPT_DIFFERENCES = 100
"""Differences kept for the report (all are counted)."""


@dataclass(frozen=True, slots=True)
class RebuildProgress:
    """How far a rebuild is: facts applied of the facts to read, and since when."""

    done: int
    total: int
    elapsed: float

    @property
    def rate(self) -> float:
        """Facts per second so far."""
        return self.done / self.elapsed if self.elapsed > 0 else 0.0

    def line(self) -> str:
        """A progress line for a terminal or a job's status."""
        return f"rebuilt {self.done}/{self.total} facts at {self.rate:,.0f}/s"


@dataclass(frozen=True, slots=True)
class Difference:
    """One balance on which the rebuilt read model and the ledger disagree."""

    customer_id: str
    balance_id: str
    what: str

    def line(self) -> str:
        """The difference as one line."""
        return f"customer {self.customer_id} balance {self.balance_id}: {self.what}"


@dataclass(frozen=True, slots=True)
class LedgerPoint:
    """What the ledger says of a balance at one sequence number: its currency and the balance
    after that posting (None: the ledger has no such balance, or no posting with that number)."""

    currency: str | None
    balance_after: int | None


@dataclass(slots=True)
class Comparison:
    """The rebuilt read model against the ledger: how many balances were compared, how many
    differ, and the first :data:`KEPT_DIFFERENCES` of them (in customer, balance order)."""

    balances: int = 0
    differing: int = 0
    differences: list[Difference] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every balance agrees."""
        return self.differing == 0

    def add(self, difference: Difference) -> None:
        """Count a difference, keeping the first few."""
        self.differing += 1
        if len(self.differences) < KEPT_DIFFERENCES:
            self.differences.append(difference)


def behind(model: ReadModel, ledger_seqs: dict[BalanceKey, int]) -> set[BalanceKey]:
    """The ledger's balances whose snapshot sequence the rebuilt model has not reached."""
    lagging = set()
    for key, seq in ledger_seqs.items():
        row = model.balances.get(key)
        if row is None or row.seq < seq:
            lagging.add(key)
    return lagging


def compare(
    model: ReadModel,
    ledger_seqs: dict[BalanceKey, int],
    ledger_points: dict[BalanceKey, LedgerPoint],
) -> Comparison:
    """Compare the rebuilt model with the ledger (pure).

    ``ledger_seqs``: each ledger balance's last posting sequence at the snapshot.
    ``ledger_points``: for each rebuilt balance, the ledger at the rebuilt row's sequence.
    """
    result = Comparison()
    for key in sorted(set(ledger_seqs) | set(model.balances)):
        customer_id, balance_id = key
        row = model.balances.get(key)
        if row is None:
            result.add(
                Difference(
                    customer_id,
                    balance_id,
                    f"missing from the rebuilt read model (the ledger is at seq "
                    f"{ledger_seqs[key]})",
                )
            )
            continue
        result.balances += 1
        wanted = ledger_seqs.get(key)
        if wanted is not None and row.seq < wanted:
            result.add(
                Difference(
                    customer_id,
                    balance_id,
                    f"the rebuilt read model is at seq {row.seq}, the ledger at seq {wanted}",
                )
            )
            continue
        point = ledger_points.get(key, LedgerPoint(None, None))
        if point.currency is None:
            result.add(Difference(customer_id, balance_id, "not in the ledger"))
            continue
        if point.currency != row.currency:
            result.add(
                Difference(
                    customer_id,
                    balance_id,
                    f"currency {row.currency} in the rebuilt read model, {point.currency} in "
                    "the ledger",
                )
            )
            continue
        # Sequence 0 is the balance's opening (no posting yet): its balance is zero.
        expected = 0 if row.seq == 0 else point.balance_after
        if expected is None:
            result.add(
                Difference(customer_id, balance_id, f"the ledger has no posting with seq {row.seq}")
            )
        elif expected != row.amount:
            result.add(
                Difference(
                    customer_id,
                    balance_id,
                    f"at seq {row.seq} the rebuilt read model has "
                    f"{format_amount(row.amount, row.currency)}, the ledger "
                    f"{format_amount(expected, row.currency)} {row.currency}",
                )
            )
    return result


async def ledger_last_seqs(conn: asyncpg.Connection) -> dict[BalanceKey, int]:
    """Every customer balance's last posting sequence (0 before its first), in one snapshot."""
    rows = await conn.fetch(
        """SELECT a.customer_id, a.balance_id,
                  coalesce((SELECT p.seq FROM postings p WHERE p.account_id = a.account_id
                             ORDER BY p.seq DESC LIMIT 1), 0) AS seq
             FROM accounts a
            WHERE a.kind = 'customer'"""
    )
    return {(r["customer_id"], r["balance_id"]): r["seq"] for r in rows}


async def ledger_points(
    conn: asyncpg.Connection, wanted: Iterable[tuple[BalanceKey, int]]
) -> dict[BalanceKey, LedgerPoint]:
    """For each (balance, sequence), the ledger's currency and balance after that posting."""
    items = list(wanted)
    found: dict[BalanceKey, LedgerPoint] = {}
    for start in range(0, len(items), LOOKUP_CHUNK):
        chunk = items[start : start + LOOKUP_CHUNK]
        rows = await conn.fetch(
            """SELECT x.c, x.b, a.currency, p.balance_after
                 FROM unnest($1::text[], $2::text[], $3::bigint[]) AS x(c, b, s)
                 LEFT JOIN accounts a
                        ON a.kind = 'customer' AND a.customer_id = x.c AND a.balance_id = x.b
                 LEFT JOIN postings p ON p.account_id = a.account_id AND p.seq = x.s""",
            [k[0] for k, _ in chunk],
            [k[1] for k, _ in chunk],
            [s for _, s in chunk],
        )
        for r in rows:
            after = r["balance_after"]
            found[(r["c"], r["b"])] = LedgerPoint(
                r["currency"], None if after is None else int(after)
            )
    return found


@dataclass(slots=True)
class RebuiltModel:
    """A read model rebuilt from the facts, the offsets it reflects, and its comparison."""

    model: ReadModel
    offsets: dict[int, int]  # partition -> next offset
    facts: int
    seconds: float
    comparison: Comparison


class EventsReader:
    """Reads ``ledger.events`` into a model up to given offsets, paced to ``rate`` facts per
    second (None: as fast as it comes), reporting progress after every fetch."""

    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        topic: str,
        model: ReadModel,
        *,
        rate: float | None,
        progress: Callable[[RebuildProgress], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.consumer = consumer
        self.topic = topic
        self.model = model
        self.rate = rate
        self.progress = progress
        self.clock = clock
        self.started = clock()
        self.done = 0
        self.total = 0
        self.positions: dict[int, int] = {}

    async def start(self, partitions: int) -> dict[int, int]:
        """Assign the topic's ``partitions`` from their first records; the end offsets now."""
        tps = [TopicPartition(self.topic, p) for p in range(partitions)]
        self.consumer.assign(tps)
        firsts = await self.consumer.beginning_offsets(tps)
        for tp, first in firsts.items():
            self.consumer.seek(tp, first)
            self.positions[tp.partition] = first
        return await self.end_offsets()

    async def end_offsets(self) -> dict[int, int]:
        """Each partition's end offset now."""
        tps = [TopicPartition(self.topic, p) for p in self.positions]
        return {tp.partition: o for tp, o in (await self.consumer.end_offsets(tps)).items()}

    async def read_to(self, until: dict[int, int]) -> None:
        """Apply every fact before ``until`` (per partition); a partition is paused at its
        bound, so nothing past it is fetched (the next call resumes it)."""
        self.total += sum(max(0, until[p] - self.positions[p]) for p in until)
        for p in until:
            tp = TopicPartition(self.topic, p)
            if self.positions[p] < until[p]:
                self.consumer.resume(tp)
            else:
                self.consumer.pause(tp)
        while any(self.positions[p] < until[p] for p in until):
            fetched = await self.consumer.getmany(timeout_ms=500, max_records=FETCH_RECORDS)
            applied = 0
            for tp, records in fetched.items():
                bound = until[tp.partition]
                for record in records:
                    if record.offset >= bound:
                        break
                    # The live projection skips (and counts) a fact it can not read: so here.
                    with contextlib.suppress(ValueError, KeyError, TypeError):
                        self.model.apply(record.value)
                    applied += 1
                if records:
                    reached = min(bound, records[-1].offset + 1)
                    self.positions[tp.partition] = reached
                    if reached >= bound:
                        self.consumer.seek(tp, bound)  # records past it are read next time
                        self.consumer.pause(tp)
            if not fetched:
                # Offsets need not be dense: the fetch position moves past a hole.
                for p in until:
                    if self.positions[p] < until[p]:
                        at = await self.consumer.position(TopicPartition(self.topic, p))
                        self.positions[p] = min(until[p], max(self.positions[p], at))
            self.done += applied
            self.progress(RebuildProgress(self.done, self.total, self.clock() - self.started))
            if self.rate:
                # Paced: never ahead of ``rate`` facts per second since the start.
                ahead = self.done / self.rate - (self.clock() - self.started)
                if ahead > 0:
                    await asyncio.sleep(ahead)


async def rebuild_read_model(
    *,
    dsn: str,
    bootstrap: str,
    topic: str,
    rate: float | None = None,
    progress: Callable[[RebuildProgress], None] = lambda _: None,
    catch_up_seconds: float = 10.0,
) -> RebuiltModel:
    """Rebuild the read model from ``topic`` into memory and compare it with the ledger at
    ``dsn`` (see the module docstring). Touches no table."""
    conn = await asyncpg.connect(dsn)
    consumer = make_consumer(bootstrap, "projection-rebuild", max_poll_records=FETCH_RECORDS)
    await consumer.start()
    try:
        started = time.monotonic()
        # The snapshot first: every fact of its postings is then in, or on its way to, Kafka.
        seqs = await ledger_last_seqs(conn)
        model = ReadModel()
        counts = await kafka_admin.partition_counts(bootstrap)
        if not counts.get(topic):
            raise LookupError(f"no topic {topic!r}")
        reader = EventsReader(consumer, topic, model, rate=rate, progress=progress)
        await reader.read_to(await reader.start(counts[topic]))
        deadline = time.monotonic() + catch_up_seconds
        while behind(model, seqs) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            await reader.read_to(await reader.end_offsets())
        points = await ledger_points(conn, ((k, r.seq) for k, r in model.balances.items()))
        comparison = compare(model, seqs, points)
        return RebuiltModel(
            model, dict(reader.positions), reader.done, time.monotonic() - started, comparison
        )
    finally:
        await consumer.stop()
        await conn.close()


async def live_projection_connected(conn: asyncpg.Connection, wait_seconds: float = 3.0) -> bool:
    """Whether a running projection holds its checkpoint connection to this database (looked at
    for up to ``wait_seconds``: the backend of a projection that just stopped goes a moment
    after it)."""
    deadline = time.monotonic() + wait_seconds
    while True:
        found = await conn.fetchval(
            """SELECT count(*) FROM pg_stat_activity
                WHERE application_name = $1 AND datname = current_database()
                  AND pid <> pg_backend_pid()""",
            APPLICATION_NAME,
        )
        if not found or time.monotonic() >= deadline:
            return bool(found)
        await asyncio.sleep(0.2)


async def store_rebuilt(conn: asyncpg.Connection, rebuilt: RebuiltModel) -> None:
    """Replace the stored read model with the rebuilt one and the offsets it reflects, in one
    transaction: the next start of the projection continues from there."""
    model = rebuilt.model
    whole = Checkpoint(
        balances=[
            (c, b, r.currency, r.amount, r.seq, r.reserved, r.hold_seq)
            for (c, b), r in model.balances.items()
        ],
        customers=list(model.customers.items()),
        offsets=dict(rebuilt.offsets),
    )
    async with conn.transaction():
        await conn.execute("TRUNCATE balance_view, customer_view, projection_offsets")
        await write_checkpoint(conn, whole)
