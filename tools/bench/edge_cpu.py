"""``python -m bench.edge_cpu``: the edge's CPU per callback, A/B between versions of its code.

Starts one ledger writer and one projection on a fresh database and topic namespace, then one
edge per ``--code NAME=DIR`` (``DIR`` holds ``libs/`` and ``services/`` of the version to run,
for example a copy made with ``git archive``; ``NAME=.`` is this work tree), each on a port and
reply partition of its own. The same open-loop load (``bench.loadgen``) is sent to each edge in
turn, round after round (A, B, A, B, ...), and each run's edge CPU seconds (user + system, from
/proc) are divided by the requests it answered. CPU per request rather than latency, since the
machine is shared: it is far less sensitive to what else runs. With ``--together`` every version
gets its own load at the same time instead, so a busy moment weighs on all alike (the steadier
comparison on a shared machine); ``--env NAME:WALLET_X=V`` sets a setting for one version's edge.
``--profile NAME`` records that edge with py-spy (GIL-holding samples, collapsed stacks).

A developer tool: nothing in the test suite needs it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.__main__ import HOME, fund, make_key, run_loadgen
from bench.procstat import CLK_TCK, cpu_seconds
from bench.stack import BenchStack, Proc, free_port, wait_ready


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.edge_cpu", description=__doc__)
    p.add_argument(
        "--code",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="a version of the edge's code (repeatable; default: this work tree as 'tree')",
    )
    p.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME:WALLET_X=VALUE",
        help="a setting for the named version's edge only (repeatable), to A/B a setting",
    )
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=float, default=8.0, help="seconds per run")
    p.add_argument("--rate", type=float, default=1000.0, help="open-loop requests per second")
    p.add_argument("--balances", type=int, default=2000)
    p.add_argument("--pause", type=float, default=2.0, help="seconds of rest between runs")
    p.add_argument(
        "--together",
        action="store_true",
        help="load every version at the same time (each its own load generator at --rate), "
        "so a busy moment of a shared machine weighs on all of them alike",
    )
    p.add_argument(
        "--profile",
        default="",
        metavar="NAME",
        help="record the named edge with py-spy (on PATH) during its runs; collapsed stacks "
        "(flamegraph.pl input) are written to the work directory",
    )
    p.add_argument(
        "--pg-dsn",
        default=os.environ.get("WALLET_PG_DSN", "postgresql://wallet@127.0.0.1:25432/wallet"),
    )
    p.add_argument("--kafka", default=os.environ.get("WALLET_KAFKA_BOOTSTRAP", "127.0.0.1:29092"))
    return p.parse_args(argv)


def _variants(specs: list[str]) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for spec in specs or ["tree=."]:
        name, _, directory = spec.partition("=")
        path = Path(directory).resolve()
        if not (path / "libs").is_dir() or not (path / "services").is_dir():
            raise SystemExit(f"{spec}: {path} holds no libs/ and services/")
        out[name] = path
    return out


async def run(args: argparse.Namespace) -> dict[str, list[float]]:
    variants = _variants(args.code)
    workdir = HOME / "bench" / ("edge-cpu-" + time.strftime("%Y%m%d-%H%M%S"))
    workdir.mkdir(parents=True, exist_ok=True)
    private, public = make_key(workdir)
    stack = BenchStack(args.pg_dsn, args.kafka, workdir, public, writers=1, edges=0)
    await stack.create()
    edges: dict[str, Proc] = {}
    try:
        await stack.start()
        projection = stack.by_kind("projection")[0]
        for i, (name, code) in enumerate(variants.items()):
            port = free_port()
            env = stack._env(
                WALLET_EDGE_PORT=str(port),
                WALLET_EDGE_OPS_PORT=str(free_port()),
                WALLET_EDGE_REPLY_PARTITION=str(i),
                WALLET_PROJECTION_URL=projection.url,
                WALLET_PROJECTION_OPS_URL=projection.ops_url,
                # The version's own code before the editable install of this work tree.
                PYTHONPATH=f"{code / 'libs'}:{code / 'services'}",
            )
            for spec in args.env:
                version, _, setting = spec.partition(":")
                if version == name:
                    key, _, value = setting.partition("=")
                    env[key] = value
            proc = Proc("edge", port, env, workdir / f"edge-{name}.log")
            proc.ops_port = int(env["WALLET_EDGE_OPS_PORT"])
            proc.start()
            edges[name] = proc
        for proc in edges.values():
            await wait_ready(proc)
        await fund(stack, args.balances, "USD")
        base = {
            "host": "127.0.0.1",
            "private_key": str(private),
            "audience": "sandbox",
            "customers": args.balances,
            "currency": "USD",
            "mode": "open",
            "rate": args.rate,
            "record_writes": False,
        }
        # A short warm-up of each edge: connections, caches, the first token's verification.
        for name, proc in edges.items():
            run_loadgen(
                dict(base, port=proc.port, duration=2.0, run_id=f"warm-{name}"), workdir, None, 1
            )
        per_request: dict[str, list[float]] = {name: [] for name in edges}
        for r in range(args.rounds):
            await asyncio.sleep(args.pause)
            if args.together:
                # Every version at once, each with its own load: the same moment of the machine.
                await asyncio.gather(
                    *(
                        asyncio.to_thread(_measure, name, proc, r, args, base, workdir)
                        for name, proc in edges.items()
                    )
                )
                for name in edges:
                    per_request[name].append(_RESULTS.pop(name))
                continue
            for name, proc in edges.items():
                _measure(name, proc, r, args, base, workdir)
                per_request[name].append(_RESULTS.pop(name))
        return per_request
    finally:
        for proc in edges.values():
            proc.stop()
        stack.stop()
        await stack.drop()


_RESULTS: dict[str, float] = {}


def _measure(
    name: str, proc: Proc, r: int, args: argparse.Namespace, base: dict[str, Any], workdir: Path
) -> None:
    """One run of the load against one edge; its ms of CPU per request go to _RESULTS."""
    spy = (
        _profile(proc, workdir / f"{name}-{r}.folded", args.duration)
        if name == args.profile
        else None
    )
    before, system_before = cpu_seconds(proc.pid), _system_seconds(proc.pid)
    result = run_loadgen(
        dict(base, port=proc.port, duration=args.duration, run_id=f"{name}-{r}"), workdir, None, 1
    )
    used = cpu_seconds(proc.pid) - before
    system = _system_seconds(proc.pid) - system_before
    if spy is not None:
        spy.wait(30)
    ms = used / max(1, result["requests"]) * 1000
    _RESULTS[name] = ms
    print(
        f"round {r} {name:>8}: {result['requests']} requests "
        f"({result['throughput_per_s']:.0f}/s, statuses {result['statuses']}), "
        f"edge {used:.2f} CPU s ({system / max(used, 1e-9):.0%} system), {ms:.3f} ms/request, "
        f"p99 {result['latency_ms'].get('p99')} ms",
        flush=True,
    )


def _system_seconds(pid: int) -> float:
    """The kernel's share of a process's CPU seconds (socket writes on loopback carry the
    receiving side's TCP work too)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return int(fields[12]) / CLK_TCK


def _profile(proc: Proc, out: Path, seconds: float) -> subprocess.Popen[bytes]:
    """py-spy on the edge for the length of one run (it stops itself)."""
    command = ["py-spy", "record", "--pid", str(proc.pid), "--duration", str(round(seconds))]
    command += ["--rate", "250", "--gil", "--nonblocking", "--format", "raw", "--output", str(out)]
    return subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def report(per_request: dict[str, list[float]]) -> dict[str, Any]:
    """Median and spread of each version's ms of edge CPU per request; printed too."""
    out: dict[str, Any] = {}
    for name, values in per_request.items():
        out[name] = {
            "median_ms": round(statistics.median(values), 3),
            "min_ms": round(min(values), 3),
            "max_ms": round(max(values), 3),
        }
        print(
            f"{name:>8}: median {out[name]['median_ms']:.3f} ms CPU/request "
            f"(min {out[name]['min_ms']:.3f}, max {out[name]['max_ms']:.3f}, {len(values)} runs)"
        )
    return out


def main() -> None:
    import uvloop

    args = parse_args()
    report(uvloop.run(run(args)))
    sys.exit(0)


if __name__ == "__main__":
    main()
