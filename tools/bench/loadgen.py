"""The load generator: a separate process playing Quadcode against the edge.

``python -m bench.loadgen CONFIG.json OUTPUT.json``. Closed loop: C connections, each sending the
next request as soon as the previous answer arrives (maximum throughput). Open loop: requests are
scheduled at a fixed rate and latency is measured from the *scheduled* send time, so a stalled
server is charged for the requests that waited (no coordinated omission).

Traffic: 70 % debit, 25 % credit, 5 % GET balance by default; uniform over all balances or a hot
spot (90 % of the traffic on 1 % of the balances); a fraction of writes is sent a second time with
the same request_id and body, and the two answers must be identical. Tokens are ES256 like
Quadcode's, reused for their lifetime and renewed a minute before they expire.
"""

from __future__ import annotations

import asyncio
import random
import resource
import sys
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import orjson

from bench.http1 import Connection, encode_request


@dataclass
class Config:
    host: str
    port: int
    private_key: str  # path of the PEM key playing Quadcode's
    audience: str
    customers: int
    currency: str
    mode: str  # "closed" | "open"
    duration: float
    concurrency: int = 64
    rate: float = 1000.0
    distribution: str = "uniform"  # | "hotspot"
    mix: tuple[float, float, float] = (0.70, 0.25, 0.05)  # debit, credit, get
    retry_fraction: float = 0.02
    max_requests: int = 0  # stop after this many (0: run for ``duration``)
    seed: int = 1
    run_id: str = "run"
    record_writes: bool = True

    @classmethod
    def load(cls, path: str) -> Config:
        raw = orjson.loads(Path(path).read_bytes())
        raw["mix"] = tuple(raw.get("mix", (0.70, 0.25, 0.05)))
        return cls(**raw)


@dataclass
class Results:
    latencies: dict[str, list[float]] = field(
        default_factory=lambda: {"debit": [], "credit": [], "get": []}
    )
    statuses: Counter[int] = field(default_factory=Counter)
    writes_ok: list[tuple[str, str, str]] = field(
        default_factory=list
    )  # (request_id, kind, customer)
    sent_writes: int = 0
    replays: int = 0
    replay_mismatches: list[dict[str, Any]] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)


class Tokens:
    """Quadcode-style tokens: reused for their lifetime, renewed a minute before expiry."""

    def __init__(self, key_pem: bytes, audience: str) -> None:
        self.key_pem = key_pem
        self.audience = audience
        self.token = ""
        self.renew_at = 0.0
        self.issued = 0

    def current(self) -> str:
        now = time.time()
        if now >= self.renew_at:
            iat = int(now)
            self.token = jwt.encode(
                {"iss": "qc", "aud": self.audience, "iat": iat, "exp": iat + 600},
                self.key_pem,
                algorithm="ES256",
            )
            self.renew_at = iat + 540
            self.issued += 1
        return self.token


class Traffic:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.rng = random.Random(cfg.seed)
        self.seq = 0
        self.hot = max(1, cfg.customers // 100)
        self.host = f"{cfg.host}:{cfg.port}"

    def customer(self) -> int:
        if self.cfg.distribution == "hotspot" and self.rng.random() < 0.9:
            return self.rng.randrange(self.hot)
        return self.rng.randrange(self.cfg.customers)

    def next(self, token: str) -> tuple[str, str, str, bytes]:
        """(kind, request_id, customer id, raw request bytes)."""
        i = self.customer()
        customer = f"bc-{i}"
        balance = f"bc-{i}_{self.cfg.currency}"
        r = self.rng.random()
        debit, credit, _ = self.cfg.mix
        if r >= debit + credit:
            path = f"/v1/customers/{customer}/balances/{balance}"
            return "get", "", customer, encode_request("GET", path, self.host, token)
        kind = "debit" if r < debit else "credit"
        self.seq += 1
        request_id = f"{self.cfg.run_id}-{self.seq}"
        amount = f"{self.rng.randint(1, 500) / 100:.2f}"
        body = orjson.dumps(
            {
                "request_id": request_id,
                "amount": amount,
                "currency_code": self.cfg.currency,
                "comment": f"option {self.seq}",
            }
        )
        path = f"/v1/customers/{customer}/balances/{balance}/{kind}"
        return kind, request_id, customer, encode_request("POST", path, self.host, token, body)


class Driver:
    """Sends requests and records their answers, with callbacks instead of a task per request
    (the load generator shares the machine, so its own cost per request is kept small)."""

    def __init__(self, cfg: Config, traffic: Traffic, tokens: Tokens, results: Results) -> None:
        self.cfg = cfg
        self.traffic = traffic
        self.tokens = tokens
        self.results = results
        self.outstanding = 0
        self._drained: asyncio.Future[None] | None = None

    async def drain(self) -> None:
        """Wait until every request sent so far is answered."""
        if self.outstanding:
            self._drained = asyncio.get_running_loop().create_future()
            await self._drained

    def start(
        self, conn: Connection, scheduled: float | None, then: Callable[[Connection], None]
    ) -> None:
        """Send the next request on ``conn`` (latency from ``scheduled``, or from now); when it and
        its replay (if any) are answered, call ``then(conn)``. A lost connection is counted and
        not handed back."""
        kind, request_id, customer, raw = self.traffic.next(self.tokens.current())
        started = time.perf_counter() if scheduled is None else scheduled
        self.outstanding += 1

        def finished(ok: bool) -> None:
            self.outstanding -= 1
            if ok:
                then(conn)
            drained = self._drained
            if self.outstanding == 0 and drained is not None and not drained.done():
                drained.set_result(None)

        def answered(status: int, body: bytes) -> None:
            results = self.results
            if status == 0:
                results.errors["ConnectionError"] += 1
                finished(False)
                return
            results.latencies[kind].append((time.perf_counter() - started) * 1000)
            results.statuses[status] += 1
            if kind == "get":
                finished(True)
                return
            results.sent_writes += 1
            if status == 201 and self.cfg.record_writes:
                results.writes_ok.append((request_id, kind, customer))
            if self.traffic.rng.random() >= self.cfg.retry_fraction:
                finished(True)
                return

            def replayed(again_status: int, again_body: bytes) -> None:
                if again_status == 0:
                    results.errors["ConnectionError"] += 1
                    finished(False)
                    return
                results.replays += 1
                results.statuses[again_status] += 1
                if (again_status, again_body) != (status, body):
                    results.replay_mismatches.append(
                        {
                            "request_id": request_id,
                            "first": [status, body.decode()],
                            "again": [again_status, again_body.decode()],
                        }
                    )
                finished(True)

            conn.send(raw, replayed)

        conn.send(raw, answered)


async def closed_loop(cfg: Config, traffic: Traffic, tokens: Tokens, results: Results) -> None:
    """C connections, each sending its next request as soon as the previous one is answered."""
    conns = [await Connection.open(cfg.host, cfg.port) for _ in range(cfg.concurrency)]
    driver = Driver(cfg, traffic, tokens, results)
    deadline = time.perf_counter() + cfg.duration
    budget = cfg.max_requests or float("inf")

    def next_request(conn: Connection) -> None:
        nonlocal budget
        if time.perf_counter() < deadline and budget > 0:
            budget -= 1
            driver.start(conn, None, next_request)

    for conn in conns:
        next_request(conn)
    await driver.drain()
    for c in conns:
        c.close()


async def open_loop(cfg: Config, traffic: Traffic, tokens: Tokens, results: Results) -> None:
    """Requests scheduled at a fixed rate on whichever connection is free (a new one if none
    is); latency counts from the scheduled time, so a request sent late is charged its delay.

    Due requests go out whenever the loop is awake anyway (an answer arrived) and at least every
    millisecond from a timer: the event loop's timers have millisecond resolution, and a timer
    asked for less than that would spin the loop instead of sleeping."""
    loop = asyncio.get_running_loop()
    idle: deque[Connection] = deque([await Connection.open(cfg.host, cfg.port) for _ in range(64)])
    driver = Driver(cfg, traffic, tokens, results)
    connecting: set[asyncio.Task[None]] = set()
    interval = 1.0 / cfg.rate
    start = time.perf_counter()
    end = start + cfg.duration
    next_at = start
    ticking = loop.create_future()

    async def on_new_connection(scheduled: float) -> None:
        try:
            conn = await Connection.open(cfg.host, cfg.port)
        except OSError as exc:
            results.errors[type(exc).__name__] += 1
            return
        driver.start(conn, scheduled, free)

    def pump() -> None:
        nonlocal next_at
        now = time.perf_counter()
        while next_at <= now and next_at < end:
            if idle:
                driver.start(idle.popleft(), next_at, free)
            else:
                task = loop.create_task(on_new_connection(next_at))
                connecting.add(task)
                task.add_done_callback(connecting.discard)
            next_at += interval

    def free(conn: Connection) -> None:
        idle.append(conn)
        pump()

    def tick() -> None:
        pump()
        if next_at < end:
            loop.call_later(0.001, tick)
        elif not ticking.done():
            ticking.set_result(None)

    tick()
    await ticking
    if connecting:
        await asyncio.gather(*connecting)
    await driver.drain()
    for c in idle:
        c.close()


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)
    n = len(ordered)

    def q(p: float) -> float:
        return round(ordered[min(n - 1, int(p * n))], 3)

    return {
        "p50": q(0.5),
        "p90": q(0.9),
        "p99": q(0.99),
        "p99.9": q(0.999),
        "max": round(ordered[-1], 3),
        "mean": round(sum(ordered) / n, 3),
    }


async def main_async(cfg: Config, key_pem: bytes) -> dict[str, Any]:
    tokens = Tokens(key_pem, cfg.audience)
    traffic = Traffic(cfg)
    results = Results()
    started = time.perf_counter()
    if cfg.mode == "closed":
        await closed_loop(cfg, traffic, tokens, results)
    else:
        await open_loop(cfg, traffic, tokens, results)
    elapsed = time.perf_counter() - started
    all_latencies = [v for values in results.latencies.values() for v in values]
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "elapsed_s": round(elapsed, 3),
        "requests": len(all_latencies) + results.replays,
        "throughput_per_s": round((len(all_latencies) + results.replays) / elapsed, 1),
        "statuses": {str(k): v for k, v in sorted(results.statuses.items())},
        "latency_ms": percentiles(all_latencies),
        "latency_ms_by_kind": {k: percentiles(v) for k, v in results.latencies.items() if v},
        "sent_writes": results.sent_writes,
        # Write request ids are "<run_id>-<seq>" with seq 1..this: nothing else was ever sent.
        "last_write_seq": traffic.seq,
        "writes_ok": results.writes_ok,
        "replays": results.replays,
        "replay_mismatches": results.replay_mismatches,
        "connection_errors": dict(results.errors),
        "tokens_issued": tokens.issued,
        "loadgen_cpu_s": round(usage.ru_utime + usage.ru_stime, 3),
        "loadgen_peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
    }


def main() -> None:
    import uvloop

    cfg = Config.load(sys.argv[1])
    out = uvloop.run(main_async(cfg, Path(cfg.private_key).read_bytes()))
    Path(sys.argv[2]).write_bytes(orjson.dumps(out))


if __name__ == "__main__":
    main()
