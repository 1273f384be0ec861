"""A round of reconciliation: run every check once, one after another (so a round costs one query
at a time), and report each as a Prometheus gauge, in ``/ready``'s detail and, when it fails, as
one log line naming the first account that differs."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Final

import asyncpg
import structlog
from aiokafka.errors import KafkaError
from prometheus_client import Gauge

from reconciler import readings
from reconciler.comparison import (
    ABSENT,
    ERROR,
    FAILED,
    OK,
    Difference,
    StallWatch,
    UnpublishedWatch,
    Verdict,
    books_difference,
    compare_projection,
    first_missing_fact,
    offsets_difference,
    trial_balance_difference,
)
from wallet_platform import topics

log = structlog.get_logger()

CHECKS: Final = ("trial_balance", "projection", "books", "unpublished", "offsets")

CHECK_OK = Gauge(
    "reconciler_check_ok", "1 if the check passed in the last round, else 0", ["check"]
)
CHECK_SECONDS = Gauge(
    "reconciler_check_seconds", "How long the check took in the last round", ["check"]
)
LAST_RUN = Gauge("reconciler_last_run_timestamp", "Unix time the last round of checks ended")
PROJECTION_LAG = Gauge(
    "reconciler_projection_lag_postings",
    "Most postings the ledger has on a balance that the projection has not applied yet",
)
PROJECTION_STALLED = Gauge(
    "reconciler_projection_stalled_seconds",
    "Longest time a lagging balance's projection sequence has not moved",
)
UNPUBLISHED_FACTS = Gauge(
    "reconciler_unpublished_facts",
    "Facts committed but not recorded as published by the ledger, over all partitions",
)

GAP_FACTS_LIMIT: Final = 10_000
"""Most facts of one partition's gap looked for on the topic in one round (the rest next round)."""
TAIL_SLACK: Final = 1_000
"""Records read beyond a gap's size from the end of a partition: republished copies of older
facts may have been appended after the gap's facts."""

Connect = Callable[[str], Awaitable[asyncpg.Connection]]

_DATABASE_FAULTS: Final = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError)


class Reconciler:
    """The checks, their memory across rounds (stalled projection balances, unpublished gaps),
    and the last round's verdicts."""

    def __init__(
        self,
        *,
        ledger_dsn: str,
        books_dsn: str,
        topic_prefix: str,
        kafka: readings.TopicReader,
        stall_seconds: float,
        unpublished_seconds: float,
        connect: Connect = readings.connect,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ledger_dsn = ledger_dsn
        self.books_dsn = books_dsn
        self.kafka = kafka
        self.commands_topic = topics.topic_name(topics.COMMANDS, topic_prefix)
        self.events_topic = topics.topic_name(topics.EVENTS, topic_prefix)
        self.stalls = StallWatch(stall_seconds)
        self.unpublished = UnpublishedWatch(unpublished_seconds)
        self._connect = connect
        self._clock = clock
        self._conns: dict[str, asyncpg.Connection] = {}
        self.verdicts: dict[str, Verdict] = {}
        self.last_run_at: float | None = None  # wall clock
        self.last_run_monotonic: float | None = None

    async def _conn(self, dsn: str) -> asyncpg.Connection:
        conn = self._conns.get(dsn)
        if conn is None or conn.is_closed():
            conn = self._conns[dsn] = await self._connect(dsn)
        return conn

    async def close(self) -> None:
        """Close the reconciler's connections."""
        for conn in self._conns.values():
            await conn.close()
        self._conns.clear()

    async def round(self) -> dict[str, Verdict]:
        """Run every check once; record, export and log the verdicts."""
        for name in CHECKS:
            await self.check(name)
        self.last_run_at = time.time()
        self.last_run_monotonic = self._clock()
        LAST_RUN.set(self.last_run_at)
        return dict(self.verdicts)

    async def check(self, name: str) -> Verdict:
        """Run one check (a name of :data:`CHECKS`); record, export and log its verdict."""
        checks: dict[str, Callable[[], Awaitable[Verdict]]] = {
            "trial_balance": self.trial_balance,
            "projection": self.projection,
            "books": self.books,
            "unpublished": self.unpublished_facts,
            "offsets": self.offsets,
        }
        started = time.perf_counter()
        verdict = await self._run(name, checks[name])
        CHECK_SECONDS.labels(name).set(time.perf_counter() - started)
        CHECK_OK.labels(name).set(1 if verdict.ok else 0)
        self.verdicts[name] = verdict
        if verdict.difference is not None:
            log.error("reconciliation_mismatch", check=name, **verdict.difference.as_dict())
        return verdict

    async def _run(self, name: str, check: Callable[[], Awaitable[Verdict]]) -> Verdict:
        try:
            return await check()
        except (*_DATABASE_FAULTS, TimeoutError, KafkaError) as exc:
            # Postgres or Kafka did not answer: not healthy, but nothing is known to differ.
            if isinstance(exc, _DATABASE_FAULTS):  # open the connections afresh next time
                for conn in self._conns.values():
                    conn.terminate()
                self._conns.clear()
            log.error("reconciliation_check_failed_to_run", check=name, error=repr(exc))
            return Verdict(ERROR, figures={"error": type(exc).__name__})

    async def trial_balance(self) -> Verdict:
        """Per currency, every account's last balance (customers' and system shards') sums to
        zero."""
        totals = await readings.kind_totals(await self._conn(self.ledger_dsn))
        difference = trial_balance_difference(totals)
        currencies = len({t.currency for t in totals})
        return _verdict(difference, currencies=currencies)

    async def projection(self) -> Verdict:
        """The projection equals the ledger as of what it applied, and no lagging balance's
        projection has stood still for longer than the stall bound."""
        rows = await readings.projected_balances(await self._conn(self.ledger_dsn))
        compared = compare_projection(rows)
        (customer_id, balance_id), stalled = self.stalls.observe(compared.behind, self._clock())
        PROJECTION_LAG.set(compared.max_lag)
        PROJECTION_STALLED.set(stalled)
        difference = compared.difference
        if difference is None and stalled > self.stalls.bound:
            seq = compared.behind[(customer_id, balance_id)]
            difference = Difference(
                "projection_stalled",
                {"customer_id": customer_id, "balance_id": balance_id},
                f"seq moving within {self.stalls.bound:g}s",
                f"seq {seq} for {stalled:.0f}s",
            )
        return _verdict(
            difference,
            balances=len(rows),
            lagging=len(compared.behind),
            max_lag=compared.max_lag,
            stalled_seconds=round(stalled, 1),
        )

    async def books(self) -> Verdict:
        """The reference consumer's books equal the ledger as of what they booked; "absent" when
        the books are not installed in their database."""
        books = await self._conn(self.books_dsn)
        if not await readings.books_installed(books):
            return Verdict(ABSENT)
        rows = await readings.booked_accounts(books, await self._conn(self.ledger_dsn))
        return _verdict(books_difference(rows), accounts=len(rows))

    async def unpublished_facts(self) -> Verdict:
        """No committed fact has been missing from ledger.events for longer than the bound."""
        conn = await self._conn(self.ledger_dsn)
        positions = await readings.outbox_positions(conn)
        gap = sum(max(0, p.outbox_seq - p.published_seq) for p in positions)
        UNPUBLISHED_FACTS.set(gap)
        overdue = self.unpublished.observe(positions, self._clock())
        for o in overdue:
            facts = await readings.outbox_facts(
                conn, o.partition, o.first_seq, o.last_seq, GAP_FACTS_LIMIT
            )
            if not facts:
                continue
            on_topic = await self.kafka.last_records(
                self.events_topic, o.partition, len(facts) + TAIL_SLACK
            )
            missing = first_missing_fact(facts, on_topic)
            if missing is None:
                # Published: the ledger has not recorded it yet (it does with its next batch).
                self.unpublished.found_on_topic(o.partition, facts[-1][0])
                continue
            return _verdict(
                Difference(
                    "fact_not_published",
                    {"partition": o.partition, "outbox_seq": missing},
                    f"on {self.events_topic} within {self.unpublished.bound:g}s",
                    f"missing for {o.age:.0f}s",
                ),
                unrecorded=gap,
            )
        return _verdict(None, unrecorded=gap, partitions=len(positions))

    async def offsets(self) -> Verdict:
        """No offset stored in Postgres is beyond the end of its partition in Kafka."""
        ledger = await self._conn(self.ledger_dsn)
        ends = await self.kafka.end_offsets((self.commands_topic, self.events_topic))
        stored = readings.stored_against_ends(
            "ledger",
            self.commands_topic,
            await readings.stored_offsets(ledger, "ledger_partitions"),
            ends[self.commands_topic],
        ) + readings.stored_against_ends(
            "projection",
            self.events_topic,
            await readings.stored_offsets(ledger, "projection_offsets"),
            ends[self.events_topic],
        )
        books = await self._conn(self.books_dsn)
        if await readings.books_installed(books):
            stored += readings.stored_against_ends(
                "accounting",
                self.events_topic,
                await readings.stored_offsets(books, "accounting.kafka_positions"),
                ends[self.events_topic],
            )
        return _verdict(offsets_difference(stored), offsets=len(stored))

    def ready(self, interval: float) -> tuple[bool, dict[str, object]]:
        """Whether every check passed in a round that ended recently (within three intervals
        and ten seconds: a stuck loop is not healthy), and the detail of each."""
        fresh = self.last_run_monotonic is not None and (
            self._clock() - self.last_run_monotonic <= 3 * interval + 10
        )
        checks: dict[str, bool] = {"fresh": fresh}
        checks.update({name: v.ok for name, v in self.verdicts.items()})
        details: dict[str, object] = {
            name: {
                "status": v.status,
                **v.figures,
                **({"difference": v.difference.as_dict()} if v.difference else {}),
            }
            for name, v in self.verdicts.items()
        }
        ok = bool(self.verdicts) and all(checks.values())
        body: dict[str, object] = {
            "status": "ready" if ok else "not_ready",
            "checks": checks,
            "details": details,
            "last_run_at": (
                datetime.fromtimestamp(self.last_run_at, UTC).isoformat()
                if self.last_run_at
                else None
            ),
        }
        return ok, body

    async def run(self, stop: asyncio.Event, interval: float) -> None:
        """A round every ``interval`` seconds (from the start of one to the next) until
        ``stop``."""
        while not stop.is_set():
            started = self._clock()
            await self.round()
            wait = max(0.0, interval - (self._clock() - started))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=wait)


def _verdict(difference: Difference | None, **figures: int | float | str) -> Verdict:
    return Verdict(OK if difference is None else FAILED, difference, figures)
