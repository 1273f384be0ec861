"""``make bench`` / ``python -m bench``: the callback benchmark with its correctness audit.

Starts its own services (N ledger writers, M edges sharing one port, one projection) on a fresh
database and topic namespace of the local Postgres and Kafka, funds the balances through the
normal command path, runs the scenarios one after another with the load generator as a separate
process, audits after each one, prints a table and writes the full result as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from bench import downstream, metrics, poison
from bench.checks import run_checks, run_entries
from bench.procstat import Group, Sampler
from bench.stack import BenchStack
from ledger.audit import audit
from ledger_core.commands import CreateCustomer, MoneyCommand, OpenBalance
from wallet_platform import topics
from wallet_platform.command_bus import open_command_bus

REPO = Path(__file__).resolve().parents[2]
HOME = Path(os.environ.get("WALLET_HOME", REPO / ".run"))

SCENARIOS = ("quiet", "closed-uniform", "closed-hotspot", "open")
# Also on request: "memory" (a long open loop), "open-poison" and "open-control" (bench.poison).
LEDGER_HISTOGRAMS = (
    "ledger_batch_commands",
    "ledger_batch_seconds",
    "ledger_batch_cycle_seconds",
    "ledger_lookup_seconds",
    "ledger_command_queued_seconds",
)
EDGE_HISTOGRAMS = ("edge_command_seconds", "edge_reply_delay_seconds")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument(
        "--scenarios",
        default=",".join(SCENARIOS),
        help=f"comma-separated, from {', '.join(SCENARIOS)}, memory, open-poison, open-control",
    )
    p.add_argument(
        "--poison-rate",
        type=float,
        default=100.0,
        help="open-poison: commands per second the ledger must refuse, beside the open loop",
    )
    p.add_argument(
        "--poison-refused-every",
        type=int,
        default=10,
        help="open-poison: every n-th poison command is refused by the database (a trigger), "
        "the others carry text Postgres can not hold",
    )
    p.add_argument("--balances", type=int, default=10_000)
    p.add_argument("--duration", type=float, default=60.0, help="seconds per loaded scenario")
    p.add_argument("--warmup", type=float, default=10.0, help="seconds of unmeasured load first")
    p.add_argument("--concurrency", type=int, default=64, help="closed-loop connections")
    p.add_argument("--rate", type=float, default=1000.0, help="open-loop offered rate per second")
    p.add_argument(
        "--memory-minutes", type=float, default=5.0, help="length of the memory scenario"
    )
    p.add_argument("--quiet-requests", type=int, default=1000)
    p.add_argument("--retry-fraction", type=float, default=0.02)
    p.add_argument("--edges", type=int, default=1)
    p.add_argument("--writers", type=int, default=1)
    p.add_argument("--results-dir", type=Path, default=REPO / "results")
    p.add_argument(
        "--pg-dsn",
        default=os.environ.get("WALLET_PG_DSN", "postgresql://wallet@127.0.0.1:25432/wallet"),
    )
    p.add_argument("--kafka", default=os.environ.get("WALLET_KAFKA_BOOTSTRAP", "127.0.0.1:29092"))
    p.add_argument("--label", default="", help="free text stored with the result")
    p.add_argument(
        "--service-env",
        action="append",
        default=[],
        metavar="WALLET_X=VALUE",
        help="a setting for the services under test (repeatable; named in the report)",
    )
    p.add_argument(
        "--with-downstream",
        action="store_true",
        help="also run the accounting consumer and the reconciler; report their CPU, the books' "
        "lag and the reconciler's verdicts per scenario, and audit the books against the ledger",
    )
    return p.parse_args(argv)


def make_key(workdir: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    private = workdir / "quadcode-private.pem"
    public = workdir / "quadcode-public.pem"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private, public


async def fund(
    stack: BenchStack,
    n: int,
    currency: str,
    names: Callable[[int], tuple[str, str]] | None = None,
) -> float:
    """Create n customers with one funded balance each, through ledger.commands.

    ``names(i)`` is the i-th (customer id, balance id); by default ``bc-<i>`` and
    ``bc-<i>_<currency>``.
    """
    limiter = asyncio.Semaphore(1000)
    async with open_command_bus(
        stack.kafka, "bench-setup", topic_prefix=stack.prefix, reply_partition=7
    ) as bus:
        started = time.perf_counter()

        async def send(cmd: Any) -> None:
            async with limiter:
                status, body = await bus.submit(cmd, 60.0)
                if status >= 300:
                    raise RuntimeError(f"setup command failed: {status} {body!r}")

        accounts = [names(i) if names else (f"bc-{i}", f"bc-{i}_{currency}") for i in range(n)]
        await asyncio.gather(*(send(CreateCustomer(c, "setup")) for c, _ in accounts))
        await asyncio.gather(*(send(OpenBalance(c, b, currency, "setup")) for c, b in accounts))
        await asyncio.gather(
            *(
                send(
                    MoneyCommand(
                        "deposit",
                        c,
                        b,
                        "setup",
                        "1000000.00",
                        currency,
                        "bench funding",
                    )
                )
                for c, b in accounts
            )
        )
        return time.perf_counter() - started


def run_loadgen(
    cfg: dict[str, Any], workdir: Path, sampler: Sampler | None, sample_every: float
) -> dict[str, Any]:
    cfg_path = workdir / f"{cfg['run_id']}.json"
    out_path = workdir / f"{cfg['run_id']}-out.json"
    cfg_path.write_bytes(orjson.dumps(cfg))
    proc = subprocess.Popen([sys.executable, "-m", "bench.loadgen", str(cfg_path), str(out_path)])
    if sampler is not None:
        sampler.groups.append(Group("loadgen", [proc.pid]))
        sampler.start()
    started = time.perf_counter()
    while proc.poll() is None:
        time.sleep(sample_every)
        if sampler is not None and proc.poll() is None:
            sampler.sample()
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"load generator failed with {proc.returncode}")
    result: dict[str, Any] = orjson.loads(out_path.read_bytes())
    if sampler is not None:
        # The load generator's own CPU comes from its rusage (it has exited by now).
        result["processes"] = sampler.report(elapsed)
        result["processes"]["loadgen"]["cpu_pct"] = round(
            result["loadgen_cpu_s"] / elapsed * 100, 1
        )
        result["processes"]["loadgen"]["rss_mb_peak"] = result["loadgen_peak_rss_mb"]
        sampler.groups.pop()
    return result


async def with_poison(
    stack: BenchStack,
    args: argparse.Namespace,
    cfg: dict[str, Any],
    workdir: Path,
    sampler: Sampler,
    control: bool,
) -> dict[str, Any]:
    """The open loop, with poison (or, as a control, as many good deposits) sent straight to
    ledger.commands for as long as it runs."""
    stop = asyncio.Event()
    async with open_command_bus(
        stack.kafka, "bench-poison", topic_prefix=stack.prefix, reply_partition=6
    ) as bus:
        injector = asyncio.create_task(
            poison.inject(
                bus,
                args.balances,
                "USD",
                args.poison_rate,
                args.poison_refused_every,
                stop,
                control=control,
            )
        )
        try:
            result = await asyncio.to_thread(run_loadgen, cfg, workdir, sampler, 1.0)
        finally:
            stop.set()
        result["poison"] = await injector
    return result


async def audit_run(
    stack: BenchStack, run_id: str, result: dict[str, Any], runs: dict[str, int]
) -> dict[str, Any]:
    """The run's own checks plus the ledger-wide audit (after the projection caught up)."""
    conn = await asyncpg.connect(stack.dsn)
    try:
        rows = await conn.fetch(
            """SELECT request_id, kind, count(*) AS n FROM journal_entries
                WHERE kind IN ('debit', 'credit') GROUP BY request_id, kind"""
        )
        entries = {r["request_id"]: (r["kind"], r["n"]) for r in rows}
        checks = run_checks(entries, result, run_id, runs)
        result_audit = None
        for _ in range(150):
            result_audit = await audit(conn)
            if result_audit.ok:
                break
            await asyncio.sleep(0.2)
        assert result_audit is not None
        checks.update({name: result_audit.failures.get(name, 0) for name in result_audit.checked})
    finally:
        await conn.close()
    answered = {rid for rid, _, _ in result["writes_ok"]}
    mine = run_entries(entries, run_id)
    return {
        "checks": checks,
        "ok": not any(checks.values()),
        "entries": len(mine),
        "applied_but_unanswered": sum(1 for rid in mine if rid not in answered),
    }


def versions() -> dict[str, str]:
    import aiohttp as _a
    import aiokafka
    import asyncpg as _p

    out = {
        "python": platform.python_version(),
        "aiohttp": _a.__version__,
        "aiokafka": aiokafka.__version__,
        "asyncpg": _p.__version__,
        "kafka": "3.9.1",
    }
    with contextlib.suppress(OSError):
        out["postgres"] = subprocess.run(
            ["psql", "--version"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
    return out


def infra_groups() -> list[Group]:
    groups = []
    kafka_pid = HOME / "kafka" / "kafka.pid"
    if kafka_pid.exists():
        groups.append(Group("kafka", [int(kafka_pid.read_text().split()[0])]))
    pg_pid = HOME / "postgres" / "data" / "postmaster.pid"
    if pg_pid.exists():
        groups.append(Group("postgres", [int(pg_pid.read_text().split()[0])], with_children=True))
    return groups


async def run(args: argparse.Namespace) -> int:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    workdir = HOME / "bench" / stamp
    workdir.mkdir(parents=True, exist_ok=True)
    private, public = make_key(workdir)
    tuned = dict(item.split("=", 1) for item in args.service_env)
    stack = BenchStack(
        args.pg_dsn,
        args.kafka,
        workdir,
        public,
        writers=args.writers,
        edges=args.edges,
        extra_env=tuned,
        downstream=args.with_downstream,
    )
    await stack.create()
    scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    try:
        if {"open-poison", "open-control"} & set(scenarios):
            # For every scenario of the run, so a clean run beside it compares like with like.
            await poison.install_trigger(stack.dsn)
        await stack.start()  # stops what it started if a service does not come up
    except BaseException:
        await stack.drop()
        raise
    report: dict[str, Any] = {
        "started": stamp,
        "label": args.label,
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "mem_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        },
        "versions": versions(),
        "settings": {
            "balances": args.balances,
            "edges": args.edges,
            "writers": args.writers,
            "partitions": {t.name: t.partitions for t in topics.TOPICS},
            "postgres": "fsync=on, synchronous_commit=on (defaults)",
            "kafka_producers": "acks=all, enable_idempotence=true, linger_ms=0",
            "projection": "synchronous_commit=off on its own read-model connection (rebuildable);"
            " each fetch of facts returns at the first fact (at most 20 ms); balance reads"
            " wait for the read model to reach their partition's end offset",
            "kafka_broker": "single KRaft node, heap 512 MB, 1 network / 2 I/O / 2 background"
            " threads (deploy/local/kafka.sh)",
            "retry_fraction": args.retry_fraction,
            "tuned_service_settings": tuned,
            "downstream": "accounting consumer and reconciler (default settings), lag sampled"
            f" every {downstream.SAMPLE_EVERY} s"
            if args.with_downstream
            else "not run",
        },
        "scenarios": {},
    }
    ok = True
    try:
        report["setup_seconds"] = round(await fund(stack, args.balances, "USD"), 1)
        print(f"funded {args.balances} balances in {report['setup_seconds']} s")
        base = {
            "host": "127.0.0.1",
            "port": stack.edge_port,
            "private_key": str(private),
            "audience": "sandbox",
            "customers": args.balances,
            "currency": "USD",
            "retry_fraction": args.retry_fraction,
        }
        runs: dict[str, int] = {}  # run id -> the last write sequence number it sent
        if args.warmup > 0:
            warmup = run_loadgen(
                {
                    **base,
                    "mode": "closed",
                    "duration": args.warmup,
                    "concurrency": args.concurrency,
                    "run_id": "warmup",
                },
                workdir,
                None,
                1.0,
            )
            runs["warmup"] = warmup["last_write_seq"]
        async with aiohttp.ClientSession() as http:
            for name in scenarios:
                cfg = dict(base, run_id=f"{name}-{uuid.uuid4().hex[:6]}")
                if name == "quiet":
                    cfg.update(
                        mode="closed",
                        concurrency=1,
                        duration=600,
                        max_requests=args.quiet_requests,
                        mix=(1.0, 0.0, 0.0),
                        retry_fraction=0.0,
                    )
                elif name.startswith("closed"):
                    cfg.update(
                        mode="closed",
                        concurrency=args.concurrency,
                        duration=args.duration,
                        distribution="hotspot" if name.endswith("hotspot") else "uniform",
                    )
                elif name in ("open", "open-poison", "open-control"):
                    cfg.update(mode="open", rate=args.rate, duration=args.duration)
                elif name == "memory":
                    cfg.update(
                        mode="open",
                        rate=args.rate,
                        duration=args.memory_minutes * 60,
                        record_writes=True,
                    )
                else:
                    raise SystemExit(f"unknown scenario {name}")
                groups = [Group(p.name, [p.pid]) for p in stack.procs] + infra_groups()
                sampler = Sampler(groups)
                ledgers = [p.ops_url for p in stack.by_kind("ledger")]
                projection = stack.by_kind("projection")[0].ops_url
                names_l = set(LEDGER_HISTOGRAMS)
                names_p = {"projection_lag_seconds"}
                before_l = metrics.merge(*[await metrics.scrape(http, u, names_l) for u in ledgers])
                before_p = await metrics.scrape(http, projection, names_p)
                # Each edge has an operational port of its own: their metrics are summed.
                edges = [p.ops_url for p in stack.by_kind("edge")]
                names_e = set(EDGE_HISTOGRAMS)
                before_e = metrics.merge(*[await metrics.scrape(http, u, names_e) for u in edges])
                watch = None
                if args.with_downstream:
                    watch = downstream.DownstreamWatch(
                        http, stack.by_kind("accounting")[0], stack.by_kind("reconciler")[0]
                    )
                    # Funding and the scenarios before leave a backlog: measure from none.
                    if not await watch.caught_up():
                        raise RuntimeError("the accounting consumer did not catch up")
                    watch.start()
                print(f"running {name} ...", flush=True)
                if name in ("open-poison", "open-control"):
                    control = name == "open-control"
                    result = await with_poison(stack, args, cfg, workdir, sampler, control)
                else:
                    # In a thread: the event loop samples the downstream services meanwhile.
                    result = await asyncio.to_thread(
                        run_loadgen, cfg, workdir, sampler, 5.0 if name == "memory" else 1.0
                    )
                if watch is not None:
                    watch.load_ended()
                after_l = metrics.merge(*[await metrics.scrape(http, u, names_l) for u in ledgers])
                after_p = await metrics.scrape(http, projection, names_p)
                after_e = metrics.merge(*[await metrics.scrape(http, u, names_e) for u in edges])
                for hist, values in metrics.delta(after_e, before_e).items():
                    result[hist] = metrics.summary(values)
                ledger_delta = metrics.delta(after_l, before_l)
                for hist in LEDGER_HISTOGRAMS:
                    result[hist] = metrics.summary(ledger_delta.get(hist, {}))
                result["projection_lag_seconds"] = metrics.summary(
                    metrics.delta(after_p, before_p).get("projection_lag_seconds", {})
                )
                runs[cfg["run_id"]] = result["last_write_seq"]
                if watch is not None:
                    result["downstream"] = await watch.settle(result["requests"])
                result["audit"] = await audit_run(stack, cfg["run_id"], result, runs)
                if watch is not None:
                    result["audit"]["checks"].update(await downstream.audit_books(watch))
                    result["audit"]["ok"] = not any(result["audit"]["checks"].values())
                ok = ok and result["audit"]["ok"]
                result.pop("writes_ok")
                result["config"] = {k: v for k, v in cfg.items() if k not in ("private_key",)}
                # A scenario named twice (interleaved A/B runs) keeps every run: name, name#2...
                key, n = name, 1
                while key in report["scenarios"]:
                    n += 1
                    key = f"{name}#{n}"
                report["scenarios"][key] = result
                print_scenario(name, result)
    finally:
        stack.stop()
        # The result is written before the clean-up, which can not lose it.
        args.results_dir.mkdir(parents=True, exist_ok=True)
        out = args.results_dir / f"bench-{stamp}.json"
        out.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
        print(f"\nfull result: {out}")
        await stack.drop()
    print("AUDIT PASSED" if ok else "AUDIT FAILED")
    return 0 if ok else 1


def print_scenario(name: str, r: dict[str, Any]) -> None:
    lat = r["latency_ms"]
    print(
        f"\n== {name}: {r['throughput_per_s']:.0f} req/s over {r['elapsed_s']:.1f} s, "
        f"{r['requests']} requests, statuses {r['statuses']}"
    )
    print("   latency ms  " + "  ".join(f"{k} {v}" for k, v in lat.items()))
    b, lag = r["ledger_batch_commands"], r["projection_lag_seconds"]
    print(
        f"   ledger batch: mean {b.get('mean')} commands "
        f"(p50<= {b.get('p50_le')}, p99<= {b.get('p99_le')});"
        f" projection lag p50<= {lag.get('p50_le')} s, p99<= {lag.get('p99_le')} s"
    )
    stages = (
        "ledger_command_queued_seconds",
        "ledger_lookup_seconds",
        "ledger_batch_seconds",
        "ledger_batch_cycle_seconds",
    )
    print(
        "   ledger stages (mean ms): "
        + ", ".join(
            f"{s.split('_', 1)[1].rsplit('_', 1)[0]} {r[s].get('mean', 0) * 1000:.2f}"
            for s in stages
        )
    )
    if "edge_command_seconds" in r:
        print(
            "   edge (mean ms): command round trip "
            f"{r['edge_command_seconds'].get('mean', 0) * 1000:.2f}, reply delay "
            f"{r.get('edge_reply_delay_seconds', {}).get('mean', 0) * 1000:.2f}"
        )
    print("   process        cpu%   rss MB (first/last/peak)")
    for proc, v in r.get("processes", {}).items():
        print(
            f"   {proc:<13} {v['cpu_pct']:>6}   "
            f"{v['rss_mb_first']}/{v['rss_mb_last']}/{v['rss_mb_peak']}"
        )
    if "poison" in r:
        print(f"   poison: {r['poison']['sent']} sent, answers {r['poison']['answers']}")
    if "downstream" in r:
        print("\n".join(downstream.format_summary(r["downstream"])))
    bad = {k: v for k, v in r["audit"]["checks"].items() if v}
    print(
        f"   audit: {'ok' if not bad else 'FAILED ' + str(bad)} ({r['audit']['entries']} entries, "
        f"{r['replays']} replays)"
    )


def main() -> None:
    import uvloop

    # SIGTERM (a `timeout`, a kill by pid) ends a run as Ctrl-C does: the stack's services are
    # stopped and the scratch database dropped, instead of being left running.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    sys.exit(uvloop.run(run(parse_args())))


if __name__ == "__main__":
    main()
