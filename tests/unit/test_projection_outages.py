"""The projection through Postgres and Kafka outages, without either: the follower keeps its
in-memory model and positions across failed checkpoints, fetch errors and rebalances; the
checkpoint writer reports not ready while its connection is down, reconnects with backoff and
then stores everything that changed meanwhile."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaConnectionError
from aiokafka.structs import ConsumerRecord

from ledger_core.commands import Command, CreateCustomer, MoneyCommand, OpenBalance
from ledger_core.decide import apply, decide
from ledger_core.facts import facts_for
from ledger_core.state import PartitionState
from projection.checkpoint import Checkpoint, CheckpointWriter
from projection.follower import Follower
from projection.model import ReadModel
from projection.read_your_writes import AppliedPositions
from wallet_platform.backoff import Backoff

pytestmark = pytest.mark.unit

TOPIC = "ledger.events"


class FactLog:
    """A partition of ledger.events, written by the real decide() and facts_for()."""

    def __init__(self, partition: int) -> None:
        self.partition = partition
        self.state = PartitionState(partition)
        self.records: list[ConsumerRecord[Any, Any]] = []

    def append(self, *commands: Command) -> list[ConsumerRecord[Any, Any]]:
        new = []
        for cmd in commands:
            decision = decide(self.state, cmd, None)
            apply(self.state, decision)
            for fact in facts_for(decision, self.partition, 1_700_000_000_000):
                record: ConsumerRecord[Any, Any] = ConsumerRecord(
                    TOPIC, self.partition, len(self.records), 1_700_000_000_000, 0,
                    fact.key.encode(), fact.payload, None, 0, len(fact.payload), (),
                )  # fmt: skip
                self.records.append(record)
                new.append(record)
        return new


class FakeConsumer:
    """Records the seeks a rebalance makes; hands out prepared fetches or errors."""

    def __init__(self) -> None:
        self.seeks: dict[int, int] = {}
        self.assigned: set[TopicPartition] = set()
        self.fetches: list[dict[TopicPartition, list[ConsumerRecord[Any, Any]]] | Exception] = []

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks[tp.partition] = offset

    def assignment(self) -> set[TopicPartition]:
        return self.assigned

    async def seek_to_beginning(self, tp: TopicPartition) -> None:
        self.seeks[tp.partition] = 0

    async def position(self, tp: TopicPartition) -> int:
        return self.seeks[tp.partition]

    async def getmany(
        self, timeout_ms: int, max_records: int
    ) -> dict[TopicPartition, list[ConsumerRecord[Any, Any]]]:
        await asyncio.sleep(0)
        if not self.fetches:
            return {}
        fetched = self.fetches.pop(0)
        if isinstance(fetched, Exception):
            raise fetched
        return fetched


def follower_with(
    positions: AppliedPositions | None = None,
) -> tuple[Follower, FakeConsumer]:
    consumer = FakeConsumer()
    follower = Follower(
        cast(AIOKafkaConsumer, consumer),
        TOPIC,
        ReadModel(),
        positions or AppliedPositions(),
        retry_seconds=0,
    )
    return follower, consumer


def batch(records: list[ConsumerRecord[Any, Any]]) -> dict[TopicPartition, list[Any]]:
    return {TopicPartition(TOPIC, records[0].partition): records}


def open_account(log: FactLog, customer: str, funds: str) -> list[ConsumerRecord[Any, Any]]:
    return log.append(
        CreateCustomer(customer, f"{customer}-1"),
        OpenBalance(customer, f"{customer}_USD", "USD", f"{customer}-2"),
        MoneyCommand("deposit", customer, f"{customer}_USD", f"{customer}-3", funds, "USD", "in"),
    )


def debit(log: FactLog, customer: str, amount: str, rid: str) -> list[ConsumerRecord[Any, Any]]:
    return log.append(
        MoneyCommand("debit", customer, f"{customer}_USD", rid, amount, "USD", "option")
    )


# -- the follower ---------------------------------------------------------------------------------


def test_applying_facts_advances_the_applied_position() -> None:
    log = FactLog(3)
    follower, _ = follower_with()

    follower._apply(batch(open_account(log, "ann", "10.00")))

    assert follower.positions.next_offset(3) == len(log.records)


def test_a_checkpoint_copies_the_rows_as_they_were_when_taken() -> None:
    log = FactLog(0)
    follower, _ = follower_with()
    follower._apply(batch(open_account(log, "ann", "10.00")))

    taken = follower.take_checkpoint()
    follower._apply(batch(debit(log, "ann", "4.00", "d1")))

    assert [(r[0], r[1], r[3], r[4]) for r in taken.balances] == [("ann", "ann_USD", 1000, 1)]
    assert taken.customers == [("ann", False)]
    assert taken.offsets == {0: 3}


def test_a_checkpoint_that_was_not_stored_is_carried_into_the_next_one() -> None:
    log = FactLog(0)
    follower, _ = follower_with()
    follower._apply(batch(open_account(log, "ann", "10.00")))
    failed = follower.take_checkpoint()
    follower._apply(batch(open_account(log, "bob", "5.00")))

    follower.restore(failed)
    retried = follower.take_checkpoint()

    assert sorted((r[0], r[3]) for r in retried.balances) == [("ann", 1000), ("bob", 500)]
    assert sorted(c for c, _ in retried.customers) == ["ann", "bob"]
    assert retried.offsets == {0: 6}  # the newer position, not the failed checkpoint's
    assert not follower.take_checkpoint()


async def test_a_rebalance_continues_where_the_in_memory_model_stands() -> None:
    log = FactLog(1)
    # The stored checkpoint was at offset 0 for partition 1; partition 2 was never followed.
    follower, consumer = follower_with(AppliedPositions({1: 0}))
    follower._apply(batch(open_account(log, "ann", "10.00")))
    model_before = follower.model.balances[("ann", "ann_USD")].amount

    tps = [TopicPartition(TOPIC, 1), TopicPartition(TOPIC, 2)]
    await follower.on_partitions_revoked(tps)  # e.g. the broker went away; no Postgres needed
    await follower.on_partitions_assigned(tps)

    assert consumer.seeks == {1: 3, 2: 0}  # not back to the checkpoint's 0 for partition 1
    assert follower.positions.next_offset(1) == 3
    assert follower.model.balances[("ann", "ann_USD")].amount == model_before


async def test_the_follower_is_ready_once_it_has_partitions_to_follow() -> None:
    follower, consumer = follower_with()
    assert await follower.readiness() == {"following": False}

    consumer.assigned = {TopicPartition(TOPIC, 0)}

    assert await follower.readiness() == {"following": True}


async def test_the_follower_keeps_following_after_failed_fetches() -> None:
    log = FactLog(5)
    follower, consumer = follower_with()
    consumer.fetches = [
        KafkaConnectionError("broker away"),
        KafkaConnectionError("broker away"),
        batch(open_account(log, "ann", "10.00")),
    ]
    stop = asyncio.Event()
    running = asyncio.create_task(follower.run(stop))

    for _ in range(100):
        await asyncio.sleep(0)
        if follower.positions.next_offset(5) == 3:
            break
    stop.set()
    await asyncio.wait_for(running, 1)

    assert follower.positions.next_offset(5) == 3
    assert follower.model.balance_body("ann", "ann_USD")[0] is None


# -- the checkpoint writer ------------------------------------------------------------------------


class FakeConnection:
    def __init__(self) -> None:
        self.closed = False

    def is_closed(self) -> bool:
        return self.closed

    def terminate(self) -> None:
        self.closed = True


class FakePostgres:
    """Opens fake connections, refusing while ``down``; stores checkpoints while up."""

    def __init__(self) -> None:
        self.down = False
        self.opened: list[FakeConnection] = []
        self.stored: list[Checkpoint] = []

    async def open(self) -> asyncpg.Connection:
        if self.down:
            raise ConnectionRefusedError("postgres is restarting")
        conn = FakeConnection()
        self.opened.append(conn)
        return cast(asyncpg.Connection, conn)

    async def store(self, conn: asyncpg.Connection, checkpoint: Checkpoint) -> None:
        if self.down or cast(FakeConnection, conn).closed:
            raise ConnectionResetError("connection lost")
        self.stored.append(checkpoint)


async def until(condition: Any, *, within: float = 2.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.001)


async def test_the_writer_reconnects_and_stores_what_changed_while_postgres_was_away() -> None:
    log = FactLog(0)
    follower, _ = follower_with()
    pg = FakePostgres()
    writer = CheckpointWriter(
        follower, pg.open, interval=0.001, backoff=Backoff(first=0.001, cap=0.004), store=pg.store
    )
    stop = asyncio.Event()
    running = asyncio.create_task(writer.run(stop))
    await until(lambda: writer.connected)
    assert await writer.readiness() == {"postgres": True}

    pg.down = True
    pg.opened[-1].closed = True  # Postgres restarts: the server closes the connection
    follower._apply(batch(open_account(log, "ann", "10.00")))  # facts keep coming
    await until(lambda: len(pg.opened) == 1 and not writer.connected)
    await asyncio.sleep(0.02)  # several failed reconnection attempts
    assert await writer.readiness() == {"postgres": False}
    assert pg.stored == []

    pg.down = False
    await until(lambda: bool(pg.stored))
    stop.set()
    await asyncio.wait_for(running, 1)

    assert len(pg.opened) == 2
    assert pg.stored[0].offsets == {0: 3}
    assert [(r[0], r[3]) for r in pg.stored[0].balances] == [("ann", 1000)]


async def test_a_checkpoint_lost_with_the_connection_is_written_after_reconnecting() -> None:
    log = FactLog(0)
    follower, _ = follower_with()
    pg = FakePostgres()
    writer = CheckpointWriter(
        follower, pg.open, interval=0.001, backoff=Backoff(first=0.001, cap=0.004), store=pg.store
    )
    writer.conn = await pg.open()
    follower._apply(batch(open_account(log, "ann", "10.00")))
    pg.down = True

    with pytest.raises(ConnectionResetError):
        await writer.write()
    pg.down = False
    stop = asyncio.Event()
    running = asyncio.create_task(writer.run(stop))
    await until(lambda: bool(pg.stored))
    stop.set()
    await asyncio.wait_for(running, 1)

    assert pg.stored[0].offsets == {0: 3}


def test_backoff_doubles_up_to_its_cap_and_starts_over_after_a_success() -> None:
    backoff = Backoff(first=0.1, cap=0.5)

    assert [backoff.next() for _ in range(5)] == [0.1, 0.2, 0.4, 0.5, 0.5]
    backoff.reset()
    assert backoff.next() == 0.1
