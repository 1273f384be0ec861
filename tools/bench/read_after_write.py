"""``python -m bench.read_after_write``: what read-your-writes costs a balance read.

Starts its own ledger, projection and two edges (each on a port of its own) on a fresh database
and topic namespace of the local Postgres and Kafka, funds customers through ledger.commands,
then plays Quadcode's pattern: a debit through one edge and, as soon as its 201 arrives, a GET of
the same balance through the *other* edge. Every GET must show the debit's balance; the tool
counts those that do not (stale) and those refused (503), and reports the GETs' latency:

- quiet: one debit-then-GET round after another, nothing else running;
- load: the same rounds while the benchmark's load generator (``bench.loadgen``) sends an
  open-loop mix of debits, credits and GETs at ``--rate`` per second through the first edge.

It also reports the projection's CPU over each phase. Run it twice in one sitting to compare
settings, e.g. with ``--service-env WALLET_PROJECTION_READ_WAIT_MS=0`` (no waiting: the old,
eventually consistent read) against the default.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
from typing import Any

import aiohttp
import jwt
import orjson

from bench.__main__ import HOME, make_key
from bench.loadgen import percentiles
from bench.procstat import cpu_seconds
from bench.stack import BenchStack, Proc, free_port, wait_ready
from ledger_core.commands import CreateCustomer, MoneyCommand, OpenBalance
from wallet_platform.command_bus import open_command_bus


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.read_after_write", description=__doc__)
    p.add_argument("--rounds", type=int, default=400, help="quiet debit-then-GET rounds")
    p.add_argument("--rate", type=float, default=300.0, help="background load, requests/s")
    p.add_argument("--duration", type=float, default=15.0, help="seconds of background load")
    p.add_argument("--customers", type=int, default=200, help="funded customers for the load")
    p.add_argument(
        "--pg-dsn",
        default=os.environ.get("WALLET_PG_DSN", "postgresql://wallet@127.0.0.1:25432/wallet"),
    )
    p.add_argument("--kafka", default=os.environ.get("WALLET_KAFKA_BOOTSTRAP", "127.0.0.1:29092"))
    p.add_argument(
        "--service-env",
        action="append",
        default=[],
        metavar="WALLET_X=VALUE",
        help="a setting for the services under test (repeatable)",
    )
    return p.parse_args(argv)


class TwoEdges(BenchStack):
    """The benchmark's stack with two edges on ports of their own (a GET may reach either)."""

    async def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)

        def proc(name: str, port_setting: str, **env: str) -> Proc:
            port = free_port()
            ops_setting = port_setting.replace("_PORT", "_OPS_PORT")
            ops_port = None if name.startswith("ledger") else free_port()
            ops = {} if ops_port is None else {ops_setting: str(ops_port)}
            return Proc(
                name,
                port,
                self._env(**{port_setting: str(port)}, **ops, **env),
                self.workdir / f"{name.replace('#', '-')}.log",
                ops_port=ops_port,
            )

        ledger = proc("ledger#0", "WALLET_LEDGER_PORT")
        projection = proc("projection", "WALLET_PROJECTION_PORT")
        self.procs = [ledger, projection] + [
            proc(
                f"edge#{i}",
                "WALLET_EDGE_PORT",
                WALLET_EDGE_REPLY_PARTITION=str(i),
                WALLET_PROJECTION_URL=projection.url,
                WALLET_PROJECTION_OPS_URL=projection.ops_url,
            )
            for i in range(2)
        ]
        for p in self.procs:
            p.start()
        for p in self.procs:
            await wait_ready(p)
        await asyncio.sleep(1.0)  # the writer owns its partitions (group settled)


async def fund(stack: BenchStack, customers: list[str]) -> None:
    async with open_command_bus(
        stack.kafka, "raw-setup", topic_prefix=stack.prefix, reply_partition=7
    ) as bus:
        for make in (
            lambda c: CreateCustomer(c, "setup"),
            lambda c: OpenBalance(c, f"{c}_USD", "USD", "setup"),
            lambda c: MoneyCommand(
                "deposit", c, f"{c}_USD", "setup", "1000000.00", "USD", "funding"
            ),
        ):
            answers = await asyncio.gather(*(bus.submit(make(c), 60.0) for c in customers))
            bad = [a for a in answers if a[0] >= 300]
            if bad:
                raise RuntimeError(f"setup failed: {bad[:3]}")


async def rounds(
    http: aiohttp.ClientSession,
    edges: list[str],
    token: str,
    customers: list[str],
    count: int,
    until: float | None = None,
) -> dict[str, Any]:
    """Debit through one edge, then GET through the other; the GET must show the debit."""
    headers = {"Authorization": f"Bearer {token}"}
    latencies: list[float] = []
    stale = refused = other = 0
    i = 0
    while (until is None and i < count) or (until is not None and time.monotonic() < until):
        customer = customers[i % len(customers)]
        write, read = edges[i % 2], edges[(i + 1) % 2]
        path = f"/v1/customers/{customer}/balances/{customer}_USD"
        body = {
            "request_id": uuid.uuid4().hex,
            "amount": "0.01",
            "currency_code": "USD",
            "comment": "option opened",
        }
        async with http.post(write + path + "/debit", json=body, headers=headers) as resp:
            debit = await resp.read()
            if resp.status != 201:
                other += 1
                i += 1
                continue
        expected = orjson.loads(debit)["balance_current_amount"]
        started = time.perf_counter()
        async with http.get(read + path, headers=headers) as resp:
            answer = await resp.read()
            status = resp.status
        latencies.append((time.perf_counter() - started) * 1000)
        if status == 503:
            refused += 1
        elif status != 200:
            other += 1
        elif orjson.loads(answer)["amount"] != expected:
            stale += 1
        i += 1
    return {
        "rounds": i,
        "get_latency_ms": percentiles(latencies),
        "stale": stale,
        "refused_503": refused,
        "other_errors": other,
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    workdir = HOME / "bench" / ("raw-" + time.strftime("%Y%m%d-%H%M%S"))
    workdir.mkdir(parents=True, exist_ok=True)
    private, public = make_key(workdir)
    tuned = dict(item.split("=", 1) for item in args.service_env)
    stack = TwoEdges(args.pg_dsn, args.kafka, workdir, public, extra_env=tuned)
    await stack.create()
    result: dict[str, Any] = {"settings": tuned}
    try:
        await stack.start()
        probe = [f"raw-{i}" for i in range(8)]
        await fund(stack, probe + [f"bc-{i}" for i in range(args.customers)])
        projection = stack.by_kind("projection")[0]
        edges = [p.url for p in stack.by_kind("edge")]
        token = jwt.encode(
            {"iss": "qc", "aud": "sandbox", "iat": int(time.time()), "exp": int(time.time()) + 600},
            private.read_bytes(),
            algorithm="ES256",
        )
        async with aiohttp.ClientSession() as http:
            await rounds(http, edges, token, probe, 50)  # warm-up
            cpu, t = cpu_seconds(projection.pid), time.perf_counter()
            result["quiet"] = quiet = await rounds(http, edges, token, probe, args.rounds)
            used, elapsed = cpu_seconds(projection.pid) - cpu, time.perf_counter() - t
            quiet["elapsed_s"] = round(elapsed, 2)
            quiet["projection_cpu_pct"] = round(used / elapsed * 100, 1)
            # Per round (a debit and a GET): faster rounds mean more of them per second.
            quiet["projection_cpu_ms_per_round"] = round(used / quiet["rounds"] * 1000, 3)
            cfg = {
                "host": "127.0.0.1",
                "port": int(edges[0].rsplit(":", 1)[1]),
                "private_key": str(private),
                "audience": "sandbox",
                "customers": args.customers,
                "currency": "USD",
                "mode": "open",
                "rate": args.rate,
                "duration": args.duration,
                "retry_fraction": 0.0,
                "record_writes": False,
                "run_id": "load",
            }
            cfg_path, out_path = workdir / "load.json", workdir / "load-out.json"
            cfg_path.write_bytes(orjson.dumps(cfg))
            loadgen = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bench.loadgen", str(cfg_path), str(out_path)
            )
            await asyncio.sleep(2.0)  # the load settles
            cpu, t = cpu_seconds(projection.pid), time.perf_counter()
            until = time.monotonic() + args.duration - 3.0
            result["load"] = loaded = await rounds(http, edges, token, probe, 0, until=until)
            used, elapsed = cpu_seconds(projection.pid) - cpu, time.perf_counter() - t
            loaded["elapsed_s"] = round(elapsed, 2)
            loaded["projection_cpu_pct"] = round(used / elapsed * 100, 1)
            await asyncio.wait_for(loadgen.wait(), 60)
            generated = orjson.loads(out_path.read_bytes())
            result["load"]["loadgen"] = {
                "throughput_per_s": generated["throughput_per_s"],
                "statuses": generated["statuses"],
                "get_latency_ms": generated["latency_ms_by_kind"].get("get", {}),
                "debit_latency_ms": generated["latency_ms_by_kind"].get("debit", {}),
            }
    finally:
        stack.stop()
        await stack.drop()
    return result


def main() -> None:
    import uvloop

    result = uvloop.run(run(parse_args()))
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
