"""Read-your-writes in the projection, without Kafka: end-offset lookups shared by reads (only
lookups sent after a read arrived), the applied position the reads wait on, and the bound past
which a read is refused rather than answered stale. The offsets source is a fake the test
answers by hand."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import pytest
from aiokafka.errors import KafkaConnectionError
from prometheus_client import REGISTRY

from projection.read_your_writes import (
    AppliedPositions,
    EndOffsetLookupFailed,
    EndOffsets,
    ReadNotCurrent,
    ReadYourWrites,
    partition_for,
)

pytestmark = pytest.mark.unit


class FakeOffsets:
    """An end-offsets source whose lookups the test answers one by one."""

    def __init__(self) -> None:
        self.asked: list[frozenset[int]] = []
        self.pending: list[asyncio.Future[Mapping[int, int]]] = []
        self.in_flight = 0
        self.most_in_flight = 0

    async def __call__(self, partitions: frozenset[int]) -> Mapping[int, int]:
        self.asked.append(partitions)
        answer: asyncio.Future[Mapping[int, int]] = asyncio.get_running_loop().create_future()
        self.pending.append(answer)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            return await answer
        finally:
            self.in_flight -= 1

    def answer(self, offsets: Mapping[int, int]) -> None:
        self.pending.pop(0).set_result(offsets)

    def fail(self, exc: Exception) -> None:
        self.pending.pop(0).set_exception(exc)


async def settle() -> None:
    """Let every ready task run until each waits again."""
    for _ in range(5):
        await asyncio.sleep(0)


def refused(reason: str) -> float:
    return REGISTRY.get_sample_value("projection_reads_refused_total", {"reason": reason}) or 0.0


# -- end-offset lookups ---------------------------------------------------------------------------


async def test_reads_arriving_before_the_lookup_is_sent_share_it() -> None:
    source = FakeOffsets()
    offsets = EndOffsets(source, timeout=5)

    reads = [asyncio.create_task(offsets.end_offset(p)) for p in (1, 2, 1)]
    await settle()
    source.answer({1: 10, 2: 20})

    assert await asyncio.gather(*reads) == [10, 20, 10]
    assert source.asked == [frozenset({1, 2})]


async def test_a_read_arriving_during_a_lookup_waits_for_the_next_one() -> None:
    source = FakeOffsets()
    offsets = EndOffsets(source, timeout=5)
    first = asyncio.create_task(offsets.end_offset(1))
    await settle()  # the first lookup is sent

    later = asyncio.create_task(offsets.end_offset(1))
    await settle()
    source.answer({1: 10})  # sent before the later read arrived: it may miss a write
    await settle()

    assert await first == 10
    assert not later.done()
    source.answer({1: 11})
    assert await later == 11
    assert len(source.asked) == 2


async def test_the_next_lookup_collects_every_read_that_arrived_meanwhile() -> None:
    source = FakeOffsets()
    offsets = EndOffsets(source, timeout=5)
    first = asyncio.create_task(offsets.end_offset(1))
    await settle()

    meanwhile = [asyncio.create_task(offsets.end_offset(p)) for p in (2, 3, 2, 1)]
    await settle()
    source.answer({1: 10})
    await settle()
    source.answer({1: 11, 2: 21, 3: 31})

    assert await first == 10
    assert await asyncio.gather(*meanwhile) == [21, 31, 21, 11]
    assert source.asked == [frozenset({1}), frozenset({1, 2, 3})]


async def test_at_most_one_lookup_is_in_flight() -> None:
    source = FakeOffsets()
    offsets = EndOffsets(source, timeout=5)
    reads = []
    for round_ in range(5):
        reads += [asyncio.create_task(offsets.end_offset(p)) for p in range(3)]
        await settle()
        if source.pending:
            source.answer({p: round_ for p in range(3)})
    while source.pending or not all(r.done() for r in reads):
        await settle()
        if source.pending:
            source.answer({p: 99 for p in range(3)})

    await asyncio.gather(*reads)
    assert source.most_in_flight == 1


async def test_a_failed_lookup_fails_its_reads_and_the_next_read_asks_again() -> None:
    source = FakeOffsets()
    offsets = EndOffsets(source, timeout=5)
    read = asyncio.create_task(offsets.end_offset(4))
    await settle()
    source.fail(KafkaConnectionError("broker away"))

    with pytest.raises(EndOffsetLookupFailed):
        await read
    again = asyncio.create_task(offsets.end_offset(4))
    await settle()
    source.answer({4: 7})
    assert await again == 7


async def test_an_answer_without_the_partition_fails_the_read() -> None:
    source = FakeOffsets()
    offsets = EndOffsets(source, timeout=5)
    read = asyncio.create_task(offsets.end_offset(4))
    await settle()
    source.answer({3: 7})

    with pytest.raises(EndOffsetLookupFailed):
        await read


async def test_a_read_giving_up_does_not_cancel_the_lookup_others_wait_for() -> None:
    source = FakeOffsets()
    offsets = EndOffsets(source, timeout=5)
    impatient = asyncio.create_task(offsets.end_offset(1))
    patient = asyncio.create_task(offsets.end_offset(1))
    await settle()

    impatient.cancel()
    await settle()
    source.answer({1: 5})

    assert await patient == 5


async def test_a_lookup_that_does_not_return_fails_after_its_timeout() -> None:
    source = FakeOffsets()
    offsets = EndOffsets(source, timeout=0.01)

    with pytest.raises(EndOffsetLookupFailed):
        await offsets.end_offset(1)


# -- applied positions ----------------------------------------------------------------------------


async def test_a_wait_ends_when_the_partition_is_applied_up_to_the_offset() -> None:
    positions = AppliedPositions({2: 5})
    waiting = asyncio.create_task(positions.reached(2, 8))
    await settle()

    positions.advance(2, 7)
    await settle()
    assert not waiting.done()
    positions.advance(2, 8)
    await settle()
    assert waiting.done()


async def test_a_position_never_moves_back() -> None:
    positions = AppliedPositions()
    positions.advance(0, 9)
    positions.advance(0, 4)  # older facts read again (a seek back): the model is still at 9

    assert positions.next_offset(0) == 9
    await asyncio.wait_for(positions.reached(0, 9), 1)


async def test_an_empty_partition_never_seen_needs_no_wait() -> None:
    positions = AppliedPositions()

    await asyncio.wait_for(positions.reached(6, 0), 1)
    assert positions.next_offset(6) is None


async def test_a_cancelled_wait_is_forgotten() -> None:
    positions = AppliedPositions()
    waiting = asyncio.create_task(positions.reached(1, 3))
    await settle()
    waiting.cancel()
    await settle()

    positions.advance(1, 3)  # no error from a waiter that is gone
    assert positions._waiting[1] == []


# -- the read --------------------------------------------------------------------------------------


def reads(source: FakeOffsets, positions: AppliedPositions, wait: float) -> ReadYourWrites:
    return ReadYourWrites(
        EndOffsets(source, timeout=wait), positions, lambda: range(8), wait_seconds=wait
    )


async def test_a_read_answers_once_the_follower_applied_the_partition_up_to_its_end() -> None:
    source = FakeOffsets()
    positions = AppliedPositions({p: 0 for p in range(8)})
    partition = partition_for("cust-1", range(8))
    read = asyncio.create_task(reads(source, positions, 5).wait_for_writes("cust-1"))
    await settle()

    assert source.asked == [frozenset({partition})]
    source.answer({partition: 3})
    await settle()
    assert not read.done()  # the debit's fact (offset 2) is not in the read model yet
    positions.advance(partition, 3)
    await asyncio.wait_for(read, 1)


async def test_a_read_is_refused_when_the_read_model_does_not_catch_up_in_time() -> None:
    source = FakeOffsets()
    positions = AppliedPositions()
    partition = partition_for("cust-2", range(8))
    before = refused("catch_up")
    read = asyncio.create_task(reads(source, positions, 0.05).wait_for_writes("cust-2"))
    await settle()
    source.answer({partition: 1})

    with pytest.raises(ReadNotCurrent) as caught:
        await read
    assert caught.value.reason == "catch_up"
    assert refused("catch_up") == before + 1


async def test_a_read_is_refused_when_kafka_does_not_report_the_end_offset() -> None:
    source = FakeOffsets()
    before = refused("end_offset")
    read = asyncio.create_task(reads(source, AppliedPositions(), 5).wait_for_writes("cust-3"))
    await settle()
    source.fail(KafkaConnectionError("broker away"))

    with pytest.raises(ReadNotCurrent) as caught:
        await read
    assert caught.value.reason == "end_offset"
    assert refused("end_offset") == before + 1


async def test_a_read_is_refused_when_the_lookup_does_not_return_in_time() -> None:
    source = FakeOffsets()  # never answers

    with pytest.raises(ReadNotCurrent) as caught:
        await reads(source, AppliedPositions(), 0.05).wait_for_writes("cust-4")
    assert caught.value.reason == "end_offset"


async def test_a_read_is_refused_without_the_topics_partitions() -> None:
    rw = ReadYourWrites(
        EndOffsets(FakeOffsets(), timeout=1), AppliedPositions(), lambda: None, wait_seconds=1
    )

    with pytest.raises(ReadNotCurrent):
        await rw.wait_for_writes("cust-5")


async def test_a_read_wait_of_zero_answers_at_once_without_a_lookup() -> None:
    source = FakeOffsets()

    await reads(source, AppliedPositions(), 0).wait_for_writes("cust-6")

    assert source.asked == []


def test_a_customers_facts_have_one_partition_whatever_order_metadata_lists() -> None:
    assert partition_for("cust-7", [3, 1, 0, 2]) == partition_for("cust-7", range(4))
    assert len({partition_for(f"c-{i}", range(8)) for i in range(200)}) == 8
