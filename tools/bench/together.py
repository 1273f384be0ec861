"""``python -m bench.together``: the whole stack's CPU per callback, A/B, under one machine's load.

This machine's speed drifts up to 2x within minutes, so two runs of the same code one after the
other can differ more than two versions do. Here every version runs at the same time instead:
each ``--code NAME=DIR`` (``DIR`` holds ``libs/`` and ``services/`` of a version, for example a
``git archive`` extract; ``NAME=.`` is this work tree) gets a complete stack of its own on the
shared local Postgres and Kafka: its own scratch database, migrated by its own migrations, its own
topic namespace, its own ledger writer, projection and edge, and ``--balances`` funded balances.
Two names may share a ``DIR`` and differ by ``--env NAME:WALLET_X=VALUE`` (a setting for that
version's services).

Then ``--rounds`` rounds, ``--pause`` s apart: every version is loaded at once, each by its own
open-loop load generator (``--rate`` per second for ``--duration`` s). Per round and version:
the CPU seconds (user + system, from /proc) of its edge, ledger and projection and of its
Postgres backends (the connections to its database in ``pg_stat_activity``, sampled at the
round's start and end: a backend that came and went between the two samples is missed), each
divided by the requests answered; its throughput, p50, p99 and statuses. The Kafka broker and
Postgres' background processes (WAL writer, checkpointer, ...) are shared by every version (and
by whatever else runs on the machine), so their CPU is reported per callback of the round as a
whole. At the end: the medians per version and component, their sum, each version's ratio to the
first version, and each stack's audit (``make bench``'s, run with that version's code). A failed
audit makes the exit status non-zero. Everything it started is stopped by pid, and its
databases and topics dropped, also on Ctrl-C or a failure.

A developer tool: nothing in the test suite runs it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import aiohttp
import asyncpg
import orjson

from bench.__main__ import HOME, infra_groups, make_key, run_loadgen
from bench.procstat import Group, cpu_seconds
from bench.stack import BenchStack, Proc, drop_database, free_port

COMPONENTS = ("edge", "ledger", "projection", "postgres")
"""Each version's own processes; "postgres" is its backends."""
SHARED = ("kafka", "postgres_background")
"""Shared by every version: reported per callback of all versions together."""
_NAME = re.compile(r"[A-Za-z0-9_.-]+")
# The tool sets these itself to keep the stacks apart: a version may not override them.
_OWN_SETTINGS = frozenset({"WALLET_PG_DSN", "WALLET_KAFKA_BOOTSTRAP", "WALLET_TOPIC_PREFIX"})
_STEP_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class Version:
    """A version of the code to run: its name, the directory holding its ``libs/`` and
    ``services/``, and the settings its services get on top of the defaults."""

    name: str
    code: Path
    env: dict[str, str] = field(default_factory=dict)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (``--help`` prints the module's description)."""
    p = argparse.ArgumentParser(
        prog="python -m bench.together",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--code",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="a version to run (repeatable, at least two; the first is the baseline of the "
        "ratios); DIR holds its libs/ and services/",
    )
    p.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME:WALLET_X=VALUE",
        help="a setting for the named version's services (repeatable)",
    )
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=float, default=20.0, help="seconds of load per round")
    p.add_argument("--rate", type=float, default=1000.0, help="open-loop requests/s per version")
    p.add_argument("--balances", type=int, default=2000, help="funded balances per version")
    p.add_argument("--pause", type=float, default=3.0, help="seconds of rest between rounds")
    p.add_argument(
        "--warmup", type=float, default=3.0, help="seconds of unmeasured load first (0: none)"
    )
    p.add_argument("--save", type=Path, default=None, metavar="FILE", help="all rounds as JSON")
    p.add_argument(
        "--pg-dsn",
        default=os.environ.get("WALLET_PG_DSN", "postgresql://wallet@127.0.0.1:25432/wallet"),
    )
    p.add_argument("--kafka", default=os.environ.get("WALLET_KAFKA_BOOTSTRAP", "127.0.0.1:29092"))
    args = p.parse_args(argv)
    if args.rounds < 1 or args.duration <= 0 or args.rate <= 0 or args.balances < 1:
        p.error("--rounds, --duration, --rate and --balances must be positive")
    return args


def versions_of(code: Sequence[str], env: Sequence[str]) -> list[Version]:
    """The versions named by ``--code NAME=DIR`` and their ``--env NAME:WALLET_X=VALUE``, in the
    order given; SystemExit with the reason when they can not be run side by side."""
    dirs: dict[str, Path] = {}
    for spec in code:
        name, sep, directory = spec.partition("=")
        if not sep or not directory or not _NAME.fullmatch(name):
            raise SystemExit(f"--code {spec}: expected NAME=DIR, NAME of letters, digits, _.-")
        if name in dirs:
            raise SystemExit(f"--code {spec}: {name} is named twice")
        path = Path(directory).resolve()
        if not (path / "libs").is_dir() or not (path / "services").is_dir():
            raise SystemExit(f"--code {spec}: {path} holds no libs/ and services/")
        dirs[name] = path
    if len(dirs) < 2:
        raise SystemExit("--code: at least two versions (two names may share a DIR)")
    settings: dict[str, dict[str, str]] = {name: {} for name in dirs}
    for spec in env:
        name, _, setting = spec.partition(":")
        key, sep, value = setting.partition("=")
        if name not in dirs:
            raise SystemExit(f"--env {spec}: no version named {name!r}")
        if not sep or not key.startswith("WALLET_"):
            raise SystemExit(f"--env {spec}: expected NAME:WALLET_X=VALUE")
        if key in _OWN_SETTINGS:
            raise SystemExit(f"--env {spec}: {key} is set per stack by bench.together")
        settings[name][key] = value
    return [Version(name, path, settings[name]) for name, path in dirs.items()]


def backend_seconds(before: Mapping[int, float], after: Mapping[int, float]) -> float:
    """CPU seconds a database's backends spent between two samples (pid -> CPU seconds).

    A backend in both samples counts what it added, one born in between all of its CPU. One that
    ended before the second sample is missed, and so is one that came and went between them."""
    return sum(max(0.0, seconds - before.get(pid, 0.0)) for pid, seconds in after.items())


def per_callback(cpu_s: Mapping[str, float], requests: int) -> dict[str, float]:
    """Milliseconds of CPU per answered request for each component, plus their ``sum``."""
    ms = {name: seconds / max(1, requests) * 1000 for name, seconds in cpu_s.items()}
    ms["sum"] = sum(ms.values())
    return {name: round(value, 4) for name, value in ms.items()}


def round_record(
    number: int,
    results: Mapping[str, Mapping[str, Any]],
    cpu_s: Mapping[str, Mapping[str, float]],
    shared_s: Mapping[str, float],
) -> dict[str, Any]:
    """One round: per version (load generator results, CPU seconds per component) what it
    answered and its CPU per callback; the shared processes per callback of all versions."""
    versions: dict[str, Any] = {}
    for name, result in results.items():
        versions[name] = {
            "requests": result["requests"],
            "throughput_per_s": result["throughput_per_s"],
            "p50_ms": result["latency_ms"].get("p50"),
            "p99_ms": result["latency_ms"].get("p99"),
            "statuses": result["statuses"],
            "connection_errors": result["connection_errors"],
            "cpu_s": {k: round(v, 3) for k, v in cpu_s[name].items()},
            "ms_per_callback": per_callback(cpu_s[name], result["requests"]),
        }
    total = sum(v["requests"] for v in versions.values())
    return {
        "round": number,
        "versions": versions,
        "shared_by_all": {
            "requests": total,
            "cpu_s": {k: round(v, 3) for k, v in shared_s.items()},
            "ms_per_callback": per_callback(shared_s, total),
        },
    }


def _median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return round(statistics.median(present), 4) if present else None


def summarise(rounds: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Medians over the rounds per version and component, and each version's ratio to the
    first (the baseline). The sum's median is the median of each round's sum, not the sum of the
    components' medians."""
    names = list(rounds[0]["versions"])
    columns = (*COMPONENTS, "sum")
    versions: dict[str, Any] = {}
    for name in names:
        per = [rd["versions"][name] for rd in rounds]
        versions[name] = {
            "ms_per_callback": {
                c: _median([p["ms_per_callback"][c] for p in per]) for c in columns
            },
            "throughput_per_s": _median([p["throughput_per_s"] for p in per]),
            "p50_ms": _median([p["p50_ms"] for p in per]),
            "p99_ms": _median([p["p99_ms"] for p in per]),
            "rounds": len(per),
        }
    first = versions[names[0]]["ms_per_callback"]
    for name in names:
        mine = versions[name]["ms_per_callback"]
        versions[name]["ratio"] = {
            c: round(mine[c] / first[c], 3) if first[c] else None for c in columns
        }
    shared_names = list(rounds[0]["shared_by_all"]["ms_per_callback"])
    shared = {
        c: _median([rd["shared_by_all"]["ms_per_callback"][c] for rd in rounds])
        for c in shared_names
    }
    return {
        "baseline": names[0],
        "rounds": len(rounds),
        "versions": versions,
        "shared_by_all": shared,
    }


def _cell(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def table(summary: Mapping[str, Any]) -> list[str]:
    """The summary as printed: ms of CPU per callback per version and component, then each
    version's ratio to the baseline, then the shared processes."""
    columns = (*COMPONENTS, "sum")
    base = summary["baseline"]
    lines = [
        f"ms of CPU per callback, median of {summary['rounds']} rounds "
        "(sum: the median of each round's sum)",
        f"{'version':<14}"
        + "".join(f"{c:>12}" for c in columns)
        + f"{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}",
    ]
    for name, v in summary["versions"].items():
        ms = v["ms_per_callback"]
        lines.append(
            f"{name:<14}"
            + "".join(f"{_cell(ms[c], 3):>12}" for c in columns)
            + f"{_cell(v['throughput_per_s'], 0):>9}"
            + f"{_cell(v['p50_ms'], 1):>9}{_cell(v['p99_ms'], 1):>9}"
        )
    for name, v in summary["versions"].items():
        if name != base:
            label = f"{name} / {base}"
            lines.append(
                f"{label:<14}" + "".join(f"{_cell(v['ratio'][c], 2):>12}" for c in columns)
            )
    shared = summary["shared_by_all"]
    lines.append(
        "shared by all versions (and anything else on the machine), per callback of all of "
        "them: " + ", ".join(f"{k} {_cell(v, 3)} ms" for k, v in shared.items())
    )
    lines.append(
        "postgres: each version's backends (pg_stat_activity by database) sampled at each "
        "round's start and end; a backend that came and went between the samples is missed"
    )
    return lines


@dataclass
class Stack:
    """One version's stack: its services on a database and topic namespace of their own."""

    version: Version
    bench: BenchStack
    created: bool = False  # its database exists
    topics: bool = False  # its topics may exist
    runs: dict[str, int] = field(default_factory=dict)  # run id -> last write sequence number
    outputs: dict[str, str] = field(default_factory=dict)  # run id -> load generator output

    @property
    def name(self) -> str:
        return self.version.name

    def service(self, kind: str) -> Proc:
        return self.bench.by_kind(kind)[0]

    def step_log(self) -> BinaryIO:
        """Where the output of its steps (migrate, topics, fund, audit) goes."""
        return open(self.bench.workdir / "steps.log", "ab")


def _make_stack(version: Version, args: argparse.Namespace, workdir: Path, key: Path) -> Stack:
    # The version's code before the editable install of this work tree (its own migrations,
    # command encoding and services); the benchmark's modules still come from this tree.
    env = {"PYTHONPATH": f"{version.code / 'libs'}:{version.code / 'services'}", **version.env}
    bench = BenchStack(
        args.pg_dsn, args.kafka, workdir / version.name, key, writers=1, edges=1, extra_env=env
    )
    bench.workdir.mkdir(parents=True, exist_ok=True)
    return Stack(version, bench)


async def _step(stack: Stack, argv: list[str], within: float = _STEP_TIMEOUT_S) -> None:
    """``python -m argv...`` with the version's code; its output goes to the stack's steps.log."""
    log = stack.bench.workdir / "steps.log"
    with stack.step_log() as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            *argv,
            env=stack.bench._env(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        code = await asyncio.wait_for(proc.wait(), within)
    except BaseException:
        # Cancelled (Ctrl-C) or out of time: the step is ours to end.
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        raise
    if code != 0:
        raise RuntimeError(f"{stack.name}: {' '.join(argv[:2])} failed ({code}), see {log}")


async def _ready(proc: Proc, within: float = 60.0) -> None:
    """Wait for /ready on the operational port, or on the only port (older versions serve it
    there: a67da7d's edge and projection have no operational port)."""
    deadline = time.monotonic() + within
    urls = [proc.ops_url + "/ready", proc.url + "/ready"]
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        while time.monotonic() < deadline:
            if proc.popen is not None and proc.popen.poll() is not None:
                raise RuntimeError(f"{proc.name} exited: {proc.log.read_text()[-2000:]}")
            for url in urls:
                with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                    async with session.get(url) as resp:
                        if resp.status == 200:
                            return
            await asyncio.sleep(0.2)
    raise TimeoutError(f"{proc.name} not ready: {proc.log.read_text()[-2000:]}")


async def _create(stack: Stack) -> None:
    """Its database (migrated by its own code), its topics, its services, ready."""
    bench = stack.bench
    admin = await asyncpg.connect(bench.pg_admin_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{bench.database}"')
        stack.created = True
    finally:
        await admin.close()
    await _step(stack, ["wallet_platform.schema", "migrate", "--dsn", bench.dsn])
    stack.topics = True
    await _step(
        stack,
        [
            *("wallet_platform.kafka_admin", "ensure-topics"),
            *("--bootstrap", bench.kafka, "--prefix", bench.prefix),
        ],
    )
    ledger_port = free_port()
    bench.procs.append(
        Proc(
            "ledger",
            ledger_port,
            bench._env(WALLET_LEDGER_PORT=str(ledger_port)),
            bench.workdir / "ledger.log",
        )
    )
    port, ops_port = free_port(), free_port()
    projection = Proc(
        "projection",
        port,
        bench._env(WALLET_PROJECTION_PORT=str(port), WALLET_PROJECTION_OPS_PORT=str(ops_port)),
        bench.workdir / "projection.log",
        ops_port=ops_port,
    )
    bench.procs.append(projection)
    bench.edge_port, ops_port = free_port(), free_port()
    bench.procs.append(
        Proc(
            "edge",
            bench.edge_port,
            bench._env(
                WALLET_EDGE_PORT=str(bench.edge_port),
                WALLET_EDGE_OPS_PORT=str(ops_port),
                WALLET_EDGE_REPLY_PARTITION="0",
                WALLET_PROJECTION_URL=projection.url,
                WALLET_PROJECTION_OPS_URL=projection.ops_url,
            ),
            bench.workdir / "edge.log",
            ops_port=ops_port,
        )
    )
    for proc in bench.procs:
        proc.start()
    for proc in bench.procs:
        await _ready(proc)
    # The writer must own its partitions before the load starts (its group settled).
    await asyncio.sleep(1.0)


async def _fund(stack: Stack, balances: int) -> None:
    argv = ["bench.together_steps", "fund", "--kafka", stack.bench.kafka]
    await _step(stack, [*argv, "--prefix", stack.bench.prefix, "--balances", str(balances)])


async def _remove(stack: Stack) -> None:
    """Stop its services (by pid) and drop its topics and database; say what failed."""
    stack.bench.stop()
    if stack.topics:
        argv = ["wallet_platform.kafka_admin", "delete-topics", "--bootstrap", stack.bench.kafka]
        try:
            await _step(stack, [*argv, "--prefix", stack.bench.prefix], within=60.0)
        except Exception as exc:  # the rest of the clean-up must still run
            print(f"{stack.name}: topics {stack.bench.prefix}* not deleted: {exc}", flush=True)
    if stack.created:
        try:
            await drop_database(stack.bench.pg_admin_dsn, stack.bench.database)
        except Exception as exc:  # the rest of the clean-up must still run
            print(f"{stack.name}: database {stack.bench.database} not dropped: {exc}", flush=True)


@dataclass
class Sample:
    """CPU seconds at one moment: each version's services and backends, the shared processes."""

    services: dict[str, dict[str, float]]
    backends: dict[str, dict[int, float]]
    kafka: float | None
    background: dict[int, float]


async def _sample(
    admin: asyncpg.Connection, stacks: Sequence[Stack], kafka: Group | None
) -> Sample:
    rows = await admin.fetch("SELECT pid, datname, backend_type FROM pg_stat_activity")
    databases = {s.bench.database: s.name for s in stacks}
    backends: dict[str, dict[int, float]] = {s.name: {} for s in stacks}
    background: dict[int, float] = {}
    for row in rows:
        if row["datname"] in databases:
            backends[databases[row["datname"]]][row["pid"]] = cpu_seconds(row["pid"])
        elif row["backend_type"] != "client backend":
            # WAL writer, checkpointer, autovacuum, ...: for every database on the server.
            background[row["pid"]] = cpu_seconds(row["pid"])
    services = {
        s.name: {
            kind: cpu_seconds(s.service(kind).pid) for kind in ("edge", "ledger", "projection")
        }
        for s in stacks
    }
    return Sample(services, backends, kafka.cpu() if kafka is not None else None, background)


def _used(before: Sample, after: Sample, name: str) -> dict[str, float]:
    cpu = {k: after.services[name][k] - before.services[name][k] for k in after.services[name]}
    cpu["postgres"] = backend_seconds(before.backends[name], after.backends[name])
    return cpu


async def _load(
    stacks: Sequence[Stack], base: Mapping[str, Any], label: str, seconds: float
) -> dict[str, dict[str, Any]]:
    """Every version loaded at once, each by its own load generator; their results by version."""

    def one(stack: Stack) -> dict[str, Any]:
        run_id = f"{stack.name}-{label}"
        cfg = dict(base, port=stack.bench.edge_port, duration=seconds, run_id=run_id)
        result = run_loadgen(cfg, stack.bench.workdir, None, 1)
        stack.runs[run_id] = result["last_write_seq"]
        stack.outputs[run_id] = str(stack.bench.workdir / f"{run_id}-out.json")
        return result

    async with asyncio.TaskGroup() as group:
        tasks = {s.name: group.create_task(asyncio.to_thread(one, s)) for s in stacks}
    for stack in stacks:
        for proc in stack.bench.procs:
            if proc.popen is not None and proc.popen.poll() is not None:
                raise RuntimeError(f"{stack.name}: {proc.name} exited, see {proc.log}")
    return {name: task.result() for name, task in tasks.items()}


def _print_round(record: Mapping[str, Any]) -> None:
    for name, v in record["versions"].items():
        ms = v["ms_per_callback"]
        print(
            f"round {record['round']} {name:>10}: {v['requests']} requests "
            f"({v['throughput_per_s']:.0f}/s, statuses {v['statuses']}, p50 {v['p50_ms']} ms, "
            f"p99 {v['p99_ms']} ms); ms CPU/callback "
            + ", ".join(f"{c} {ms[c]:.3f}" for c in (*COMPONENTS, "sum")),
            flush=True,
        )
    shared = record["shared_by_all"]["ms_per_callback"]
    print(
        f"round {record['round']} {'shared':>10}: "
        + ", ".join(f"{c} {v:.3f}" for c, v in shared.items() if c != "sum")
        + f" ms CPU per callback of all {record['shared']['requests']} requests",
        flush=True,
    )


async def _audit(stack: Stack) -> dict[str, Any]:
    """The stack's audit with its version's code: every run's checks and the ledger audit."""
    runs_file = stack.bench.workdir / "audit-runs.json"
    out = stack.bench.workdir / "audit.json"
    runs_file.write_bytes(orjson.dumps({"runs": stack.runs, "results": stack.outputs}))
    try:
        await _step(
            stack,
            [
                *("bench.together_steps", "audit", "--pg-dsn", stack.bench.pg_admin_dsn),
                *("--database", stack.bench.database, "--runs", str(runs_file), "--out", str(out)),
            ],
        )
        verdicts: dict[str, Any] = orjson.loads(out.read_bytes())
    except RuntimeError as exc:
        return {"ok": False, "error": str(exc), "runs": {}}
    failed = {
        run_id: {check: n for check, n in v["checks"].items() if n}
        for run_id, v in verdicts.items()
        if not v["ok"]
    }
    return {
        "ok": not failed and bool(verdicts),
        "entries": sum(v["entries"] for v in verdicts.values()),
        "failed": failed,
        "runs": verdicts,
    }


async def run(args: argparse.Namespace, versions: Sequence[Version]) -> int:
    """Set up every version's stack, run the rounds, audit, print; 0 when every audit passed."""
    main_task = asyncio.current_task()
    assert main_task is not None
    # SIGTERM ends the run like Ctrl-C does: through the clean-up below.
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    workdir = HOME / "bench" / f"together-{stamp}"
    workdir.mkdir(parents=True, exist_ok=True)
    private, public = make_key(workdir)
    stacks = [_make_stack(v, args, workdir, public) for v in versions]
    rounds: list[dict[str, Any]] = []
    audits: dict[str, Any] = {}
    summary: dict[str, Any] | None = None
    admin: asyncpg.Connection | None = None
    try:
        for stack in stacks:
            await _create(stack)
            print(f"{stack.name}: {stack.version.code} ready on {stack.bench.database}", flush=True)
        async with asyncio.TaskGroup() as group:
            for stack in stacks:
                group.create_task(_fund(stack, args.balances))
        print(f"funded {args.balances} balances in each stack (logs: {workdir})", flush=True)
        base = {
            "host": "127.0.0.1",
            "private_key": str(private),
            "audience": "sandbox",
            "customers": args.balances,
            "currency": "USD",
            "mode": "open",
            "rate": args.rate,
            # Every 201 is checked against the journal by the audit.
            "record_writes": True,
        }
        if args.warmup > 0:
            await _load(stacks, base, "warmup", args.warmup)
        admin = await asyncpg.connect(args.pg_dsn)
        kafka = next((g for g in infra_groups() if g.name == "kafka"), None)
        for number in range(args.rounds):
            await asyncio.sleep(args.pause)
            before = await _sample(admin, stacks, kafka)
            results = await _load(stacks, base, f"r{number}", args.duration)
            after = await _sample(admin, stacks, kafka)
            shared = {"postgres_background": backend_seconds(before.background, after.background)}
            if kafka is not None and before.kafka is not None and after.kafka is not None:
                shared = {"kafka": after.kafka - before.kafka, **shared}
            cpu = {s.name: _used(before, after, s.name) for s in stacks}
            rounds.append(round_record(number, results, cpu, shared))
            _print_round(rounds[-1])
        summary = summarise(rounds)
        print()
        print("\n".join(table(summary)))
        for stack in stacks:
            audits[stack.name] = await _audit(stack)
            verdict = audits[stack.name]
            if verdict["ok"]:
                print(f"audit {stack.name}: ok ({verdict['entries']} debit/credit entries)")
            else:
                print(f"audit {stack.name}: FAILED {verdict.get('error') or verdict['failed']}")
        ok = all(a["ok"] for a in audits.values())
        print("AUDIT PASSED" if ok else "AUDIT FAILED")
        return 0 if ok else 1
    finally:
        if admin is not None:
            await admin.close()
        if args.save is not None and rounds:
            save(args, stacks, rounds, summary, audits)
        for stack in reversed(stacks):
            await _remove(stack)


def save(
    args: argparse.Namespace,
    stacks: Sequence[Stack],
    rounds: Sequence[Mapping[str, Any]],
    summary: Mapping[str, Any] | None,
    audits: Mapping[str, Any],
) -> None:
    """Write the sitting (settings, versions, every round, the summary, the audits) as JSON."""
    record = {
        "settings": {
            k: getattr(args, k)
            for k in ("rounds", "duration", "rate", "balances", "pause", "warmup")
        },
        "versions": [
            {
                "name": s.name,
                "code": str(s.version.code),
                "env": s.version.env,
                "database": s.bench.database,
                "topic_prefix": s.bench.prefix,
            }
            for s in stacks
        ],
        "rounds": rounds,
        "summary": summary,
        "audits": audits,  # each run's checks too
        "complete": summary is not None and len(audits) == len(stacks),
    }
    args.save.parent.mkdir(parents=True, exist_ok=True)
    args.save.write_bytes(orjson.dumps(record, option=orjson.OPT_INDENT_2))
    print(f"saved: {args.save}")


def main() -> None:
    import uvloop

    args = parse_args()
    versions = versions_of(args.code, args.env)
    try:
        code = uvloop.run(run(args, versions))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted: everything started was stopped and dropped", file=sys.stderr)
        code = 130
    sys.exit(code)


if __name__ == "__main__":
    main()
