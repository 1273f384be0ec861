"""The downstream services in a benchmark (``python -m bench --with-downstream``): the reference
accounting consumer and the reconciler run beside the services under test. While a scenario runs
this samples, every 0.5 s, the consumer's lag from its /metrics and the reconciler's verdict from
its /ready. It reads both processes' CPU, and after the run it has the reconciler compare the
books with the ledger.

The parsing and summarising are pure functions (unit-tested); ``DownstreamWatch`` and
``audit_books`` do the I/O around them.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import aiohttp
import orjson

from bench import metrics
from bench.procstat import cpu_seconds
from bench.stack import Proc

LAG_FACTS: Final = "accounting_lag_facts"
LAG_SECONDS: Final = "accounting_lag_seconds"
BOOKED: Final = "accounting_facts_booked_total"
SAMPLE_EVERY: Final = 0.5
SETTLE_SECONDS: Final = 5.0
"""How long after the load stopped the lag is read once more (it should be back at 0 by then)."""
CATCH_UP_SECONDS: Final = 180.0
"""Longest wait for the books to catch up with the topic (funding writes 30,000 facts)."""

# `accounting_lag_facts{partition="3"} 12.0`; the value may be written as 1.2e+06.
_LAG_FACTS = re.compile(r'^accounting_lag_facts\{partition="(\d+)"\} ([0-9.e+]+)$')
_BOOKED = re.compile(r"^accounting_facts_booked_total ([0-9.e+]+)$")


@dataclass(frozen=True, slots=True)
class BooksReading:
    """One scrape of the accounting consumer's /metrics."""

    at: float
    """When it was read (``time.monotonic()``)."""
    lag_facts: int | None
    """Facts in ledger.events not yet read, summed over the partitions; None when no partition
    reports one yet (the consumer has not fetched), or the scrape failed."""
    lag_seconds: dict[str, float] = field(default_factory=dict)
    """The ``accounting_lag_seconds`` histogram: cumulative buckets by ``le``, sum and count."""
    booked: float = 0.0
    """``accounting_facts_booked_total``."""


@dataclass(frozen=True, slots=True)
class ReadyReading:
    """One answer of the reconciler's /ready."""

    ok: bool
    failed: tuple[str, ...]
    """The checks that did not pass (``unreachable`` when /ready did not answer its JSON)."""
    last_run_at: str | None = None


def read_books_metrics(text: str, at: float) -> BooksReading:
    """The lag and booking figures in the accounting consumer's Prometheus text."""
    partitions: dict[str, float] = {}
    booked = 0.0
    for line in text.splitlines():
        if m := _LAG_FACTS.match(line):
            partitions[m.group(1)] = float(m.group(2))
        elif m := _BOOKED.match(line):
            booked = float(m.group(1))
    lag = int(sum(partitions.values())) if partitions else None
    histogram = metrics.parse(text, {LAG_SECONDS}).get(LAG_SECONDS, {})
    return BooksReading(at, lag, histogram, booked)


def read_ready(status: int | None, body: bytes) -> ReadyReading:
    """The reconciler's verdict from /ready's status and JSON body (None: no answer)."""
    try:
        doc = orjson.loads(body) if status is not None else None
    except orjson.JSONDecodeError:
        doc = None
    if not isinstance(doc, dict) or not isinstance(doc.get("checks"), dict):
        return ReadyReading(False, ("unreachable",))
    failed = tuple(sorted(name for name, ok in doc["checks"].items() if ok is not True))
    last = doc.get("last_run_at")
    return ReadyReading(
        status == 200 and not failed, failed, last if isinstance(last, str) else None
    )


def nearest_rank(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile of ``values`` by nearest rank (a value that was observed)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def slowest_bucket(histogram: Mapping[str, float]) -> float:
    """The upper bound of the highest bucket that holds an observation (0 when none does)."""
    count = histogram.get("count", 0.0)
    if not count:
        return 0.0
    bounds = sorted(
        (math.inf if le == "+Inf" else float(le), n)
        for le, n in histogram.items()
        if le not in ("sum", "count")
    )
    return next((bound for bound, n in bounds if n >= count), math.inf)


def books_lag(
    readings: Sequence[BooksReading], load_ended: float, settled: BooksReading
) -> dict[str, Any]:
    """The consumer's lag over a scenario.

    ``readings`` were taken every 0.5 s from the start of the load until it ended (at
    ``load_ended``, monotonic), ``settled`` is the reading taken 5 s after that. In facts: max
    and p99 of the samples taken under load, and the lag when settled. In seconds (publication
    to booking, per fact, from the consumer's histogram, as bucket upper bounds): every fact
    booked from the start of the load until settled, so also the backlog booked after the load
    stopped. A fact still waiting when settled was published before the load stopped, so the
    lag in seconds then is at least the time since: that lower bound is given (0 when none
    waits).
    """
    under_load = [r.lag_facts for r in readings if r.at <= load_ended and r.lag_facts is not None]
    # The first scrape that answered: a failed one has no counters to subtract.
    first = next((r for r in readings if r.lag_facts is not None), settled)
    window = metrics.delta({LAG_SECONDS: settled.lag_seconds}, {LAG_SECONDS: first.lag_seconds})
    histogram = window.get(LAG_SECONDS, {})
    summary = metrics.summary(histogram)
    waiting = settled.lag_facts
    return {
        "facts": {
            "max": max(under_load) if under_load else None,
            "p99": nearest_rank(under_load, 0.99) if under_load else None,
            "after_settling": waiting,
            "samples": len(under_load),
        },
        "seconds": {
            "booked": int(summary["count"]),
            "mean": summary.get("mean"),
            "p50_le": summary.get("p50_le"),
            "p99_le": summary.get("p99_le"),
            "max_le": slowest_bucket(histogram),
            # Cumulative, as Prometheus has them: facts booked within each bound.
            "buckets": {le: int(n) for le, n in histogram.items() if le not in ("sum", "count")},
            "after_settling_at_least": (
                None
                if waiting is None
                else 0.0
                if waiting == 0
                else round(settled.at - load_ended, 1)
            ),
        },
        "facts_booked": int(settled.booked - first.booked),
        "settle_seconds": round(settled.at - load_ended, 1),
    }


def reconciler_health(readings: Sequence[ReadyReading]) -> dict[str, Any]:
    """How often the reconciler's /ready said every check passed, which checks failed how often,
    and how many distinct rounds the samples saw."""
    failed: dict[str, int] = {}
    for r in readings:
        for name in r.failed:
            failed[name] = failed.get(name, 0) + 1
    ok = sum(1 for r in readings if r.ok)
    return {
        "samples": len(readings),
        "ready": ok,
        "always_ok": bool(readings) and ok == len(readings),
        "failed_checks": failed,
        "rounds_seen": len({r.last_run_at for r in readings if r.last_run_at}),
    }


@dataclass(frozen=True, slots=True)
class CpuMarks:
    """A process's CPU seconds when the load started, when it ended, and when settled."""

    started: float
    load_ended: float
    settled: float


def cpu_cost(marks: CpuMarks, load_seconds: float, callbacks: int) -> dict[str, Any]:
    """CPU seconds per 1,000 callbacks (from the start of the load until settled, so the backlog
    booked after the load counts) and % of one core while the load ran."""
    spent = marks.settled - marks.started
    return {
        "cpu_s": round(spent, 2),
        "cpu_s_per_1000_callbacks": round(spent / callbacks * 1000, 3) if callbacks else None,
        "cpu_pct": round((marks.load_ended - marks.started) / load_seconds * 100, 1)
        if load_seconds > 0
        else None,
    }


def summarise(
    books: Sequence[BooksReading],
    settled: BooksReading,
    ready: Sequence[ReadyReading],
    load_ended: float,
    load_seconds: float,
    callbacks: int,
    accounting_cpu: CpuMarks,
    reconciler_cpu: CpuMarks,
) -> dict[str, Any]:
    """The ``downstream`` part of a scenario's result."""
    lag = books_lag(books, load_ended, settled)
    spent = accounting_cpu.settled - accounting_cpu.started
    booked = lag["facts_booked"]
    return {
        "accounting": {
            **cpu_cost(accounting_cpu, load_seconds, callbacks),
            # Per fact too: a callback answered 503 (or a GET) makes no fact to book.
            "cpu_ms_per_fact_booked": round(spent / booked * 1000, 3) if booked > 0 else None,
            "lag": lag,
        },
        "reconciler": {
            **cpu_cost(reconciler_cpu, load_seconds, callbacks),
            "health": reconciler_health(ready),
        },
        "callbacks": callbacks,
    }


def format_summary(d: Mapping[str, Any]) -> list[str]:
    """The lines ``python -m bench`` prints for a scenario's ``downstream`` part."""
    acc, rec = d["accounting"], d["reconciler"]
    facts, secs = acc["lag"]["facts"], acc["lag"]["seconds"]
    health = rec["health"]
    failed = ", ".join(f"{k} x{v}" for k, v in health["failed_checks"].items()) or "none"
    return [
        f"   accounting consumer: cpu {acc['cpu_s_per_1000_callbacks']} s per 1,000 callbacks, "
        f"{acc['cpu_pct']} % of a core; {acc['lag']['facts_booked']} facts booked, "
        f"{acc['cpu_ms_per_fact_booked']} ms cpu each",
        f"     lag facts max {facts['max']}, p99 {facts['p99']} ({facts['samples']} samples), "
        f"{facts['after_settling']} after {acc['lag']['settle_seconds']} s",
        f"     lag seconds mean {secs['mean']}, p50<= {secs['p50_le']}, p99<= {secs['p99_le']}, "
        f"max<= {secs['max_le']}, "
        f">= {secs['after_settling_at_least']} after settling",
        f"   reconciler: cpu {rec['cpu_pct']} % of a core; /ready ok in {health['ready']} of "
        f"{health['samples']} samples ({health['rounds_seen']} rounds), failed: {failed}",
    ]


class DownstreamWatch:
    """Samples the accounting consumer and the reconciler during one scenario."""

    def __init__(self, http: aiohttp.ClientSession, accounting: Proc, reconciler: Proc) -> None:
        self.http = http
        self.accounting = accounting
        self.reconciler = reconciler
        self.books: list[BooksReading] = []
        self.ready: list[ReadyReading] = []
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._started = 0.0
        self._cpu_started: tuple[float, float] = (0.0, 0.0)
        self._load_ended = 0.0
        self._cpu_load_ended: tuple[float, float] = (0.0, 0.0)

    def _cpu(self) -> tuple[float, float]:
        return cpu_seconds(self.accounting.pid), cpu_seconds(self.reconciler.pid)

    async def read_books(self) -> BooksReading:
        """One scrape of the consumer's /metrics (a reading without figures if it failed)."""
        at = time.monotonic()
        try:
            timeout = aiohttp.ClientTimeout(total=2)
            async with self.http.get(self.accounting.ops_url + "/metrics", timeout=timeout) as r:
                return read_books_metrics(await r.text(), at)
        except (aiohttp.ClientError, TimeoutError):
            return BooksReading(at, None)

    async def read_ready(self) -> ReadyReading:
        """One answer of the reconciler's /ready."""
        try:
            timeout = aiohttp.ClientTimeout(total=2)
            async with self.http.get(self.reconciler.ops_url + "/ready", timeout=timeout) as r:
                return read_ready(r.status, await r.read())
        except (aiohttp.ClientError, TimeoutError):
            return read_ready(None, b"")

    async def caught_up(self, within: float = CATCH_UP_SECONDS) -> bool:
        """Wait until the books have read everything on the topic (lag 0); False on timeout."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if (await self.read_books()).lag_facts == 0:
                return True
            await asyncio.sleep(SAMPLE_EVERY)
        return False

    async def _sample(self) -> None:
        while not self._stop.is_set():
            tick = time.monotonic()
            books, ready = await asyncio.gather(self.read_books(), self.read_ready())
            self.books.append(books)
            self.ready.append(ready)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._stop.wait(), max(0.0, SAMPLE_EVERY - (time.monotonic() - tick))
                )

    def start(self) -> None:
        """The load starts now: mark the CPU and sample every 0.5 s."""
        self._started = time.monotonic()
        self._cpu_started = self._cpu()
        self._task = asyncio.create_task(self._sample(), name="downstream-samples")

    def load_ended(self) -> None:
        """The load generator has exited."""
        self._load_ended = time.monotonic()
        self._cpu_load_ended = self._cpu()

    async def settle(self, callbacks: int) -> dict[str, Any]:
        """Sample on until 5 s after the load ended, then summarise the scenario."""
        await asyncio.sleep(max(0.0, self._load_ended + SETTLE_SECONDS - time.monotonic()))
        self._stop.set()
        if self._task is not None:
            await self._task
        settled = await self.read_books()
        cpu_settled = self._cpu()
        marks = [
            CpuMarks(self._cpu_started[i], self._cpu_load_ended[i], cpu_settled[i]) for i in (0, 1)
        ]
        return summarise(
            self.books,
            settled,
            self.ready,
            self._load_ended,
            self._load_ended - self._started,
            callbacks,
            marks[0],
            marks[1],
        )


def reconciler_once_failures(stdout: str) -> dict[str, int]:
    """The audit's checks from ``python -m reconciler once --json``: 1 per failed check, 0 per
    passed one (``fresh`` says nothing about a single round and is left out). Books the
    reconciler found ``absent`` fail too: the consumer ran, so they must be there, and a check
    that compared nothing proves nothing."""
    try:
        doc = orjson.loads(stdout)
    except orjson.JSONDecodeError:
        return {"reconciler_once_answered": 1}
    checks = doc.get("checks") if isinstance(doc, dict) else None
    if not isinstance(checks, dict) or not checks:
        return {"reconciler_once_answered": 1}
    failures = {
        f"reconciler_{name}": 0 if ok is True else 1
        for name, ok in checks.items()
        if name != "fresh"
    }
    books = (doc.get("details") or {}).get("books")
    if not isinstance(books, dict) or books.get("status") != "ok":
        failures["reconciler_books"] = 1
    return failures


async def audit_books(watch: DownstreamWatch) -> dict[str, int]:
    """After a scenario: the books caught up with the topic, and one round of the reconciler
    (``python -m reconciler once``, in the benchmark's database and topics) passes, its
    ``books`` check comparing the consumer's books with the ledger account by account."""
    checks = {"books_caught_up_with_the_topic": 0 if await watch.caught_up(60.0) else 1}
    proc = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "reconciler", "once", "--json"],
        env=watch.reconciler.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    checks.update(reconciler_once_failures(proc.stdout))
    return checks
