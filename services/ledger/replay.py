"""Re-run the command log into a fresh ledger and prove it reaches the live ledger's state.

``python -m ledger.replay --into-dsn DSN [--live-dsn DSN] [--topic-prefix P]
[--until-offsets live|end|FILE] [--max-rate N] [--no-compare]``

1. **Where to stop.** ``live`` (the default): one repeatable-read snapshot of the live ledger
   gives both the offsets it has applied per partition (``ledger_partitions.next_offset``) and
   its state hash, so the hash is of the live ledger *exactly as of* the offsets the replay runs
   to, however much it writes meanwhile. ``end``: the log's end offsets at start. ``FILE``: a
   JSON object ``{"partition": next_offset}``. With ``end`` or a file, the live ledger is compared
   only if its snapshot is at exactly those offsets (else the run says so and exits 3).
2. **The fresh ledger**: refused unless empty (no partition, customer, account, entry, outcome
   or fact), then migrated.
3. **The replay** runs the live writer itself (:class:`ledger.writer.Writer`, the same
   ``decide``, the same batch function, the same refusal path for commands the database refuses)
   with no producer: no replies, no facts to Kafka, no dead-letter copies; the facts still go to
   the fresh ledger's outbox. It reads ``ledger.commands`` from offset 0 of every partition
   (refused if the log was trimmed) up to the stop offsets, at most ``--max-rate`` commands per
   second, printing its progress.
4. **The proof**: the fresh ledger's state hash, against the live one; exit 1 on a mismatch.

Exit codes: 0 the hashes match (or ``--no-compare``), 1 they differ, 2 refused (a non-empty
fresh database, a trimmed log, bad arguments), 3 not compared (the live ledger is at other
offsets). The method and its limits: ``docs/replay.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord

from ledger import store
from ledger.settings import LedgerSettings
from ledger.state_hash import StateHash, hash_in_transaction, state_hash
from ledger.writer import Topics, Writer
from wallet_platform import kafka_admin, topics
from wallet_platform.config import load_settings
from wallet_platform.kafka import make_consumer
from wallet_platform.logging import setup_logging
from wallet_platform.schema import migrate

EXIT_MATCH, EXIT_MISMATCH, EXIT_REFUSED, EXIT_NOT_COMPARED = 0, 1, 2, 3

# Tables that make a database a ledger already: a replay never writes into one of those.
LEDGER_TABLES = (
    "ledger_partitions",
    "customers",
    "accounts",
    "journal_entries",
    "idempotency",
    "outbox",
    "exchange_reservations",
)


class Refused(Exception):
    """The replay will not run (exit 2): the message says why."""


@dataclass(slots=True)
class RateLimit:
    """A token bucket: ``per_second`` commands on average, at most ``burst`` at once.

    The burst is a tenth of a second's worth, so a throttled replay still writes batches of
    many commands (one transaction each) rather than one command per transaction.
    """

    per_second: float
    tokens: float = 0.0
    last: float | None = None

    @property
    def burst(self) -> int:
        return max(1, int(self.per_second / 10))

    def _refill(self, now: float) -> None:
        if self.last is not None:
            self.tokens = min(self.burst, self.tokens + (now - self.last) * self.per_second)
        self.last = now

    def delay(self, wanted: int, now: float) -> float:
        """Seconds to wait before ``min(wanted, burst)`` commands may be read."""
        self._refill(now)
        missing = min(wanted, self.burst) - self.tokens
        return max(0.0, missing / self.per_second)

    def grant(self, wanted: int, now: float) -> int:
        """How many of ``wanted`` commands may be read now (at least one)."""
        self._refill(now)
        return max(1, min(wanted, int(self.tokens)))

    def spend(self, n: int) -> None:
        self.tokens -= n


def bounded(
    records: dict[TopicPartition, list[ConsumerRecord[Any, Any]]], until: dict[int, int]
) -> tuple[dict[TopicPartition, list[ConsumerRecord[Any, Any]]], set[TopicPartition]]:
    """The records before each partition's stop offset, and the partitions that reached it."""
    kept: dict[TopicPartition, list[ConsumerRecord[Any, Any]]] = {}
    reached: set[TopicPartition] = set()
    for tp, messages in records.items():
        stop = until.get(tp.partition, 0)
        before = [m for m in messages if m.offset < stop]
        if before:
            kept[tp] = before
        if not messages or messages[-1].offset + 1 >= stop:
            reached.add(tp)
    return kept, reached


class LogFeed:
    """The writer's view of ``ledger.commands`` during a replay: the consumer's records up to the
    stop offsets, and no faster than the rate limit. A partition is paused once it reaches its
    stop offset, and resumed if the writer seeks back before it (a reload after a fault)."""

    def __init__(
        self, consumer: AIOKafkaConsumer, until: dict[int, int], rate: RateLimit | None
    ) -> None:
        self.consumer = consumer
        self.until = until
        self.rate = rate

    def assignment(self) -> Any:
        return self.consumer.assignment()

    def pause(self, *partitions: TopicPartition) -> None:
        self.consumer.pause(*partitions)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.consumer.seek(tp, offset)
        if offset >= self.until.get(tp.partition, 0):
            self.consumer.pause(tp)
        else:
            self.consumer.resume(tp)

    async def getmany(
        self, *partitions: TopicPartition, timeout_ms: int = 0, max_records: int | None = None
    ) -> dict[TopicPartition, list[ConsumerRecord[Any, Any]]]:
        cap = max_records or 1000
        if self.rate is not None:
            pause = self.rate.delay(cap, time.monotonic())
            if pause > 0:
                await asyncio.sleep(pause)
            cap = self.rate.grant(cap, time.monotonic())
        records = await self.consumer.getmany(*partitions, timeout_ms=timeout_ms, max_records=cap)
        kept, reached = bounded(records, self.until)
        if reached:
            self.consumer.pause(*reached)
        if self.rate is not None:
            self.rate.spend(sum(len(m) for m in kept.values()))
        return kept


def read_offsets_file(path: Path) -> dict[int, int]:
    """``{"partition": next_offset, ...}`` from a JSON file."""
    raw = orjson.loads(path.read_bytes())
    if not isinstance(raw, dict):
        raise Refused(f"{path}: expected a JSON object of partition to offset")
    try:
        offsets = {int(p): int(o) for p, o in raw.items()}
    except (TypeError, ValueError) as exc:
        raise Refused(f"{path}: expected a JSON object of partition to offset ({exc})") from None
    if any(o < 0 for o in offsets.values()):
        raise Refused(f"{path}: offsets can not be negative")
    return offsets


async def ensure_empty_and_migrate(conn: asyncpg.Connection) -> None:
    """Refuse a database that holds any ledger rows; migrate it to this build's schema."""
    for table in LEDGER_TABLES:
        exists = await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", table)
        if exists and await conn.fetchval(f"SELECT EXISTS (SELECT 1 FROM {table})"):
            raise Refused(
                f"the database to replay into is not empty ({table} has rows): "
                "a replay only writes into a fresh database"
            )
    await migrate(conn)
    await store.ensure_currencies(conn)


def backend_cpu_seconds(pid: int) -> float | None:
    """User + system CPU of a (local) Postgres backend, from /proc; None if not readable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass(slots=True)
class ReplayRun:
    """What one replay did, for the report."""

    until: dict[int, int]
    commands: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    backend_cpu_seconds: float | None = None
    fresh: StateHash | None = None
    live: StateHash | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.commands / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True, slots=True)
class ReplayOptions:
    into_dsn: str
    live_dsn: str | None
    topic_prefix: str
    until: str  # "live", "end" or a file name
    max_rate: float | None
    progress_seconds: float = 5.0


def _print(line: str) -> None:
    print(line, flush=True)


def _hashed(ledger: str, say: Callable[[str], None] = _print) -> Callable[[str, int], None]:
    """Progress of a hash: each section as it is done (a large ledger takes a while)."""

    def section_done(name: str, records: int) -> None:
        say(f"  {ledger} {name}: {records} rows hashed")

    return section_done


class Replay:
    """One run: stop offsets, fresh ledger, the writer over the log, the hashes.

    ``say`` gets the report's lines (printed by the command line); ``progress`` gets (commands
    decided, commands to replay, seconds) about every 50 ms while the writer runs (the operator
    API's job runner shows it).
    """

    def __init__(
        self,
        options: ReplayOptions,
        settings: LedgerSettings,
        *,
        say: Callable[[str], None] = _print,
        progress: Callable[[int, int, float], None] | None = None,
    ) -> None:
        self.options = options
        self.settings = settings
        self.say = say
        self.progress = progress
        self.names = Topics(
            commands=topics.topic_name(topics.COMMANDS, options.topic_prefix),
            events=topics.topic_name(topics.EVENTS, options.topic_prefix),
            replies=topics.topic_name(topics.REPLIES, options.topic_prefix),
            dead_letter=topics.topic_name(topics.DEAD_LETTER, options.topic_prefix),
        )

    async def run(self) -> ReplayRun:
        """Replay and hash; raises :class:`Refused` when it will not run."""
        fresh = await asyncpg.connect(self.options.into_dsn)
        try:
            await ensure_empty_and_migrate(fresh)
        finally:
            await fresh.close()
        consumer = make_consumer(
            self.settings.kafka_bootstrap,
            "ledger-replay",
            max_poll_records=self.settings.ledger_max_batch,
            fetch_max_wait_ms=self.settings.kafka_fetch_max_wait_ms,
        )
        await consumer.start()
        try:
            partitions = await self._partitions(consumer)
            until, live = await self._stop_offsets(consumer, partitions)
            run = ReplayRun(until, live=live)
            await self._replay(consumer, partitions, run)
        finally:
            await consumer.stop()
        await self._hash_fresh(run)
        return run

    async def _partitions(self, consumer: AIOKafkaConsumer) -> list[TopicPartition]:
        counts = await kafka_admin.partition_counts(self.settings.kafka_bootstrap)
        found = counts.get(self.names.commands)
        if not found:
            raise Refused(f"no topic {self.names.commands!r}: wrong --topic-prefix?")
        tps = [TopicPartition(self.names.commands, p) for p in range(found)]
        start = await consumer.beginning_offsets(tps)
        trimmed = {tp.partition: o for tp, o in start.items() if o > 0}
        if trimmed:
            raise Refused(
                f"the command log no longer starts at offset 0 (retention trimmed it: first "
                f"offsets {trimmed}); it can not be re-run from the beginning"
            )
        return tps

    async def _stop_offsets(
        self, consumer: AIOKafkaConsumer, tps: list[TopicPartition]
    ) -> tuple[dict[int, int], StateHash | None]:
        ends = {tp.partition: o for tp, o in (await consumer.end_offsets(tps)).items()}
        live: StateHash | None = None
        mode = self.options.until
        if mode == "live":
            if self.options.live_dsn is None:
                raise Refused("--until-offsets live needs the live ledger (--live-dsn)")
            self.say("hashing the live ledger (one repeatable-read snapshot) ...")
            live = await self._hash_live()
            wanted = live.offsets
        elif mode == "end":
            wanted = dict(ends)
        else:
            wanted = read_offsets_file(Path(mode))
        until = {tp.partition: wanted.get(tp.partition, 0) for tp in tps}
        unknown = sorted(set(wanted) - set(until))
        if unknown:
            raise Refused(f"partitions {unknown} are not in {self.names.commands}")
        beyond = {p: (o, ends[p]) for p, o in until.items() if o > ends[p]}
        if beyond:
            raise Refused(f"stop offsets beyond the end of the log (stop, end): {beyond}")
        if mode != "live" and self.options.live_dsn is not None:
            live = await self._hash_live()
        return until, live

    async def _hash_live(self) -> StateHash:
        assert self.options.live_dsn is not None
        conn = await asyncpg.connect(self.options.live_dsn)
        try:
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                return await hash_in_transaction(conn, _hashed("live", self.say))
        finally:
            await conn.close()

    async def _replay(
        self, consumer: AIOKafkaConsumer, tps: list[TopicPartition], run: ReplayRun
    ) -> None:
        dsn = self.options.into_dsn
        conns = [await asyncpg.connect(dsn), await asyncpg.connect(dsn)]
        try:
            backends = [await c.fetchval("SELECT pg_backend_pid()") for c in conns]
            cpu_before = [backend_cpu_seconds(pid) for pid in backends]
            rate = RateLimit(self.options.max_rate) if self.options.max_rate else None
            feed = LogFeed(consumer, run.until, rate)
            writer = Writer(
                conns,
                feed,
                None,  # no replies, no facts to Kafka, no dead-letter copies
                self.names,
                max_batch=self.settings.ledger_max_batch,
                outcome_cache=self.settings.ledger_outcome_cache,
                # The fresh ledger starts empty: nothing was decided before this writer's memory,
                # so no look-ups after taking the partitions over. A request older than the
                # outcome cache is still caught by the primary key, as in the live writer.
                verify_seconds=0.0,
                pipeline_depth=self.settings.ledger_pipeline_depth,
                connect=lambda: asyncpg.connect(dsn, timeout=5),
            )
            consumer.assign(tps)
            total = sum(run.until.values())
            self.say(f"replaying {total} commands of {self.names.commands} up to {run.until}")
            started, cpu_started = time.monotonic(), own_cpu_seconds()
            await writer.on_partitions_assigned(tps)
            while not await self._applied_all(writer, run.until):
                await self._run_writer(writer, run.until, started, total)
            run.seconds = time.monotonic() - started
            run.cpu_seconds = own_cpu_seconds() - cpu_started
            run.commands = total
            # Only while the connections are the ones measured at the start (a reconnect after
            # a fault replaces them, and a backend's CPU leaves /proc with it).
            cpu_after = [backend_cpu_seconds(pid) for pid in backends]
            deltas = [
                a - b
                for a, b in zip(cpu_after, cpu_before, strict=True)
                if a is not None and b is not None
            ]
            if len(deltas) == len(backends):
                run.backend_cpu_seconds = sum(deltas)
        finally:
            for conn in conns:
                await conn.close()

    async def _run_writer(
        self, writer: Writer, until: dict[int, int], started: float, total: int
    ) -> None:
        """Run the writer until its memory has every partition at its stop offset; then close
        it, which waits for the batches in flight."""
        stop = asyncio.Event()
        loop = asyncio.create_task(writer.run(stop))
        last_report = time.monotonic()
        try:
            while not loop.done():
                await asyncio.sleep(0.05)
                done = self._position(writer, until)
                now = time.monotonic()
                if self.progress is not None:
                    self.progress(done, total, now - started)
                if now - last_report >= self.options.progress_seconds:
                    last_report = now
                    rate = done / (now - started)
                    self.say(f"  {done}/{total} commands, {rate:,.0f} commands/s")
                if done >= total:
                    stop.set()
            await loop  # raises what the writer's loop died of
        finally:
            stop.set()
            await asyncio.gather(loop, return_exceptions=True)
            await writer.close()

    @staticmethod
    def _position(writer: Writer, until: dict[int, int]) -> int:
        """Commands decided so far (memory's position; the database's is checked after)."""
        return sum(min(owned.cursor.next_offset, until[p]) for p, owned in writer.owned.items())

    async def _applied_all(self, writer: Writer, until: dict[int, int]) -> bool:
        """Whether the fresh ledger has durably applied every partition up to its stop."""
        stored = await store_offsets(writer.conns[0])
        return all(stored.get(p, 0) >= o for p, o in until.items())

    async def _hash_fresh(self, run: ReplayRun) -> None:
        conn = await asyncpg.connect(self.options.into_dsn)
        try:
            self.say("hashing the fresh ledger ...")
            run.fresh = await state_hash(conn, _hashed("fresh", self.say))
        finally:
            await conn.close()


async def store_offsets(conn: asyncpg.Connection) -> dict[int, int]:
    rows = await conn.fetch("SELECT partition, next_offset FROM ledger_partitions")
    return {r["partition"]: r["next_offset"] for r in rows}


def verdict(run: ReplayRun, compare: bool) -> tuple[int, list[str]]:
    """The exit code and the closing lines of the report."""
    assert run.fresh is not None
    lines = [
        f"replayed {run.commands} commands in {run.seconds:.1f} s: {run.rate:,.0f} commands/s",
        f"cpu: replay process {run.cpu_seconds:.1f} s, its Postgres backends "
        + ("unknown" if run.backend_cpu_seconds is None else f"{run.backend_cpu_seconds:.1f} s"),
        f"fresh ledger: state hash {run.fresh.describe()}",
    ]
    if not compare:
        return EXIT_MATCH, lines
    if run.live is None:
        lines.append("live ledger: not compared (no --live-dsn)")
        return EXIT_NOT_COMPARED, lines
    lines.append(f"live ledger:  state hash {run.live.describe()}")
    live_at = {p: run.live.offsets.get(p, 0) for p in run.until}
    if live_at != run.until:
        lines.append(f"NOT COMPARED: the live ledger is at offsets {live_at}, not {run.until}")
        return EXIT_NOT_COMPARED, lines
    if run.live.digest != run.fresh.digest:
        lines.append("MISMATCH: the fresh ledger differs from the live one at the same offsets")
        return EXIT_MISMATCH, lines
    lines.append("MATCH: same commands, same ledger")
    return EXIT_MATCH, lines


def parse_args(argv: Sequence[str] | None, settings: LedgerSettings) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m ledger.replay", description=__doc__)
    p.add_argument("--into-dsn", required=True, help="the fresh database to replay into")
    p.add_argument(
        "--live-dsn",
        default=settings.pg_dsn,
        help="the live ledger to compare with (default: WALLET_PG_DSN)",
    )
    p.add_argument(
        "--topic-prefix",
        default=settings.topic_prefix,
        help="topic namespace (default: WALLET_TOPIC_PREFIX)",
    )
    p.add_argument(
        "--until-offsets",
        default="live",
        help="live (the live ledger's applied offsets, default), end (the log's end at start), "
        'or a JSON file {"partition": next_offset}',
    )
    p.add_argument(
        "--max-rate",
        type=float,
        default=None,
        help="at most this many commands per second (default: unlimited)",
    )
    p.add_argument(
        "--no-compare", action="store_true", help="only replay and hash the fresh ledger"
    )
    p.add_argument(
        "--progress-seconds", type=float, default=5.0, help="seconds between progress lines"
    )
    args = p.parse_args(argv)
    if args.max_rate is not None and args.max_rate <= 0:
        p.error("--max-rate must be positive")
    return args


async def _main(options: ReplayOptions, settings: LedgerSettings, compare: bool) -> int:
    if options.live_dsn is not None and options.live_dsn == options.into_dsn:
        _print("refused: --into-dsn is the live ledger")
        return EXIT_REFUSED
    try:
        run = await Replay(options, settings).run()
    except Refused as exc:
        _print(f"refused: {exc}")
        return EXIT_REFUSED
    code, lines = verdict(run, compare)
    for line in lines:
        _print(line)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m ledger.replay``: see the module docstring."""
    settings = load_settings(LedgerSettings)
    args = parse_args(argv, settings)
    setup_logging("ledger-replay", "WARNING", stream=sys.stderr)
    compare = not args.no_compare
    options = ReplayOptions(
        into_dsn=args.into_dsn,
        live_dsn=args.live_dsn if compare else None,
        topic_prefix=args.topic_prefix,
        until=args.until_offsets,
        max_rate=args.max_rate,
        progress_seconds=args.progress_seconds,
    )
    return asyncio.run(_main(options, settings, compare))


if __name__ == "__main__":
    sys.exit(main())
