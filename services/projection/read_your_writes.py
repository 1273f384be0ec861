"""Read-your-writes for balance reads (pure asyncio; Kafka is behind an injected lookup).

A GET answers only once the read model has applied its customer's partition of ``ledger.events``
up to the end offset (high watermark) Kafka reports for that partition at the GET. The ledger
writer has Kafka acknowledge a batch's facts before it sends the replies that announce them, so
every write answered 201 before the GET arrived is below that offset, whichever edge answered it.

- :class:`AppliedPositions`: per partition, the offset after the last fact applied to the
  in-memory read model (not the checkpointed one), and waiting until it reaches an offset.
- :class:`EndOffsets`: end-offset lookups shared by concurrent reads. A read may share a lookup
  only if that lookup is sent after the read arrived (an earlier one could miss a write answered
  just before the read). One lookup is in flight at a time; the next one collects every read that
  arrived meanwhile, for the union of their partitions.
- :class:`ReadYourWrites`: both together, bounded by the read wait; past it the read is refused
  (503 ``unavailable``) rather than answered with a balance that may be stale.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Collection, Mapping

from aiokafka.partitioner import DefaultPartitioner
from prometheus_client import Counter, Histogram

# partitions -> their end offsets; raises on failure (Kafka unreachable, unknown partition, ...)
OffsetsSource = Callable[[frozenset[int]], Awaitable[Mapping[int, int]]]

READ_WAIT_SECONDS = Histogram(
    "projection_read_wait_seconds",
    "Time a balance read waited for the read model to reach its partition's end offset",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1),
)
READS_REFUSED = Counter(
    "projection_reads_refused_total",
    "Balance reads answered 503 because the read model could not be shown current in time: "
    "reason end_offset (Kafka did not report the end offset) or catch_up (the read model did "
    "not apply the facts up to it within the read wait)",
    ["reason"],
)
END_OFFSET_LOOKUPS = Counter(
    "projection_end_offset_lookups_total", "End-offset (ListOffsets) requests sent for reads"
)


class ReadNotCurrent(Exception):
    """The read model could not be shown to hold every answered write in time: answer 503."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class EndOffsetLookupFailed(Exception):
    """Kafka did not report the end offsets (unreachable, timed out, or an incomplete answer)."""


def partition_for(customer_id: str, partitions: Collection[int]) -> int:
    """The partition of ``ledger.events`` that holds ``customer_id``'s facts: the writer keys
    them by customer id and lets the producer's default (murmur2) partitioner choose, so the
    same partitioner, over the topic's partitions as metadata lists them, finds it."""
    ordered = sorted(partitions)
    return int(DefaultPartitioner()(customer_id.encode(), ordered, ordered))


class AppliedPositions:
    """Per partition, the offset after the last fact the in-memory read model has applied."""

    def __init__(self, initial: Mapping[int, int] | None = None) -> None:
        self._next: dict[int, int] = dict(initial or {})
        self._waiting: dict[int, list[tuple[int, asyncio.Future[None]]]] = {}

    def next_offset(self, partition: int) -> int | None:
        """The offset after the last applied fact of ``partition``, None if it was never seen."""
        return self._next.get(partition)

    def advance(self, partition: int, next_offset: int) -> None:
        """The model has applied ``partition`` up to ``next_offset`` (exclusive). Never moves
        back: a re-read of older facts changes nothing in the model (facts are idempotent)."""
        if next_offset <= self._next.get(partition, -1):
            return
        self._next[partition] = next_offset
        waiting = self._waiting.get(partition)
        if not waiting:
            return
        still = []
        for offset, waiter in waiting:
            if offset <= next_offset:
                if not waiter.done():
                    waiter.set_result(None)
            else:
                still.append((offset, waiter))
        self._waiting[partition] = still

    async def reached(self, partition: int, offset: int) -> None:
        """Return once ``partition`` is applied up to ``offset`` (exclusive). A partition never
        seen counts as applied up to 0: there is nothing in it the model could have missed."""
        if self._next.get(partition, 0) >= offset:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (offset, waiter)
        self._waiting.setdefault(partition, []).append(entry)
        try:
            await waiter
        finally:
            if not waiter.done():  # cancelled (the read gave up): forget it
                waiting = self._waiting.get(partition, [])
                if entry in waiting:
                    waiting.remove(entry)


class _Round:
    """The reads that will share one end-offset lookup, collected before it is sent."""

    __slots__ = ("offsets", "partitions")

    def __init__(self) -> None:
        self.partitions: set[int] = set()
        self.offsets: asyncio.Future[Mapping[int, int]] = asyncio.get_running_loop().create_future()
        # Every reader of a round may have given up before it is answered: mark the outcome
        # retrieved so a failure is not reported as "never retrieved" to the loop.
        self.offsets.add_done_callback(lambda f: f.cancelled() or f.exception())


class EndOffsets:
    """End offsets of partitions, looked up for reads; concurrent reads share a lookup that was
    sent after they arrived, with at most one lookup in flight."""

    def __init__(self, source: OffsetsSource, *, timeout: float) -> None:
        self._source = source
        self._timeout = timeout
        self._collecting: _Round | None = None  # reads waiting for the next lookup
        self._in_flight: asyncio.Task[None] | None = None
        self._closed = False
        self.lookups = 0  # lookups sent so far

    async def end_offset(self, partition: int) -> int:
        """The end offset of ``partition`` as Kafka reports it after this call began."""
        if self._closed:
            raise EndOffsetLookupFailed("closed")
        gathering = self._collecting
        if gathering is None:
            gathering = self._collecting = _Round()
        gathering.partitions.add(partition)
        if self._in_flight is None:
            self._in_flight = asyncio.create_task(self._look_up())
        # Shielded: one reader giving up (its deadline) must not cancel the others' lookup.
        offsets = await asyncio.shield(gathering.offsets)
        return offsets[partition]

    async def _look_up(self) -> None:
        """Send the collected round, then the one collected meanwhile, until none is left. A
        round is taken (and its partitions fixed) just before its lookup is sent, so every read
        in it arrived before the send."""
        try:
            while self._collecting is not None and not self._closed:
                gathering, self._collecting = self._collecting, None
                await self._answer(gathering)
        finally:
            self._in_flight = None

    async def _answer(self, gathering: _Round) -> None:
        wanted = frozenset(gathering.partitions)
        self.lookups += 1
        END_OFFSET_LOOKUPS.inc()
        try:
            async with asyncio.timeout(self._timeout):
                offsets = await self._source(wanted)
            missing = wanted - offsets.keys()
            if missing:
                raise EndOffsetLookupFailed(f"no end offset for partitions {sorted(missing)}")
        except asyncio.CancelledError:  # closing: its reads fail like any lookup that failed
            gathering.offsets.set_exception(EndOffsetLookupFailed("closed"))
            raise
        except EndOffsetLookupFailed as exc:
            gathering.offsets.set_exception(exc)
        except Exception as exc:  # whatever the client raised: Kafka did not answer
            gathering.offsets.set_exception(EndOffsetLookupFailed(repr(exc)))
        else:
            gathering.offsets.set_result(offsets)

    async def close(self) -> None:
        """Stop looking up; a lookup in flight is cancelled, waiting reads fail."""
        self._closed = True
        task = self._in_flight
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._collecting is not None:
            self._collecting.offsets.set_exception(EndOffsetLookupFailed("closed"))
            self._collecting = None


class ReadYourWrites:
    """Holds a balance read until the read model has applied every fact of its customer's
    partition that Kafka held when the read arrived, for at most ``wait_seconds``."""

    def __init__(
        self,
        end_offsets: EndOffsets,
        applied: AppliedPositions,
        partitions: Callable[[], Collection[int] | None],
        *,
        wait_seconds: float,
    ) -> None:
        self.end_offsets = end_offsets
        self.applied = applied
        self.partitions = partitions
        self.wait_seconds = wait_seconds

    async def wait_for_writes(self, customer_id: str) -> None:
        """Return when the read model holds every write answered before this call; raise
        :class:`ReadNotCurrent` if that could not be established within the read wait."""
        if self.wait_seconds <= 0:
            return  # configured off: answer from memory at once
        started = time.perf_counter()
        partitions = self.partitions()
        if not partitions:  # no metadata for the topic yet: nothing to compare against
            READS_REFUSED.labels("end_offset").inc()
            raise ReadNotCurrent("end_offset")
        partition = partition_for(customer_id, partitions)
        phase = "end_offset"
        try:
            async with asyncio.timeout(self.wait_seconds):
                end = await self.end_offsets.end_offset(partition)
                phase = "catch_up"
                await self.applied.reached(partition, end)
        except (TimeoutError, EndOffsetLookupFailed):
            READS_REFUSED.labels(phase).inc()
            raise ReadNotCurrent(phase) from None
        READ_WAIT_SECONDS.observe(time.perf_counter() - started)
