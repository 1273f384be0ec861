"""``make bench-compare`` / ``python -m bench.compare``: the product beside the naive wallet.

One sitting, in this order: the naive wallet (``../shared/bench/naive/run.sh``: aiohttp + asyncpg,
``SELECT ... FOR UPDATE`` per callback), then the product (its own edge, ledger and projection on a
fresh database and topic namespace of the local Postgres and Kafka, as ``make bench`` starts them,
with the same 10,000 balances funded through ledger.commands), then the naive wallet again. Both
are driven by the same wrk with the same Quadcode mix (``mix.lua``: 70 % debit, 25 % credit, 5 %
GET; ``HOT`` = share of the traffic on 1 % of the balances), for every connections x distribution.
It prints the side-by-side table with the product's ratio over each naive run, and the product's
audit. Absolute numbers drift with the machine; the ratios of one sitting are the measurement.

A developer tool: it needs ``../shared`` and root (run.sh runs its own Postgres), and neither
``make test`` nor CI runs it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from bench.__main__ import HOME, REPO, fund, make_key, versions
from bench.loadgen import Tokens
from bench.side_by_side import (
    BALANCES,
    HOT_SHARE,
    SideBySide,
    WrkRun,
    parse_wrk_output,
    sitting_record,
    table,
    wrk_arguments,
)
from bench.stack import BenchStack
from ledger.audit import audit

NAIVE = REPO.parent / "shared" / "bench" / "naive"
# The product's audience (BenchStack sets WALLET_ENVIRONMENT=sandbox); run.sh mints its own.
AUDIENCE = "sandbox"

# run.sh calls `wrk` from PATH; this stand-in, first on PATH, adds --latency, keeps wrk's whole
# report for us (run.sh prints only mix.lua's last line) and skips the distributions not asked
# for (run.sh always runs both, telling them apart by HOT). Everything else is run.sh's own.
WRK_STAND_IN = """#!/usr/bin/env bash
set -euo pipefail
hot=${HOT:-0}
case " $BENCH_COMPARE_HOT " in
  *" $hot "*) ;;
  *) echo "skipped by bench.compare: HOT=$hot not asked for"; exit 0 ;;
esac
"$BENCH_COMPARE_WRK" --latency "$@" | tee "$BENCH_COMPARE_OUT/hot-$hot.txt"
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__)
    p.add_argument("--duration", type=int, default=30, help="seconds per wrk run")
    p.add_argument("--connections", default="32,256", help="comma-separated wrk connection counts")
    p.add_argument(
        "--distribution",
        "--distributions",
        default=",".join(HOT_SHARE),
        help=f"comma-separated, from {', '.join(HOT_SHARE)}",
    )
    p.add_argument("--naive-dir", type=Path, default=NAIVE, help="where run.sh and mix.lua are")
    p.add_argument(
        "--save",
        action="store_true",
        help="also write the sitting to docs/benchmarks/<date>-bench-compare-<time>.json",
    )
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
        help="a setting for the product's services (repeatable; named in the result)",
    )
    args = p.parse_args(argv)
    args.connections = [int(c) for c in args.connections.split(",") if c.strip()]
    args.distribution = [d.strip() for d in args.distribution.split(",") if d.strip()]
    if unknown := set(args.distribution) - set(HOT_SHARE):
        p.error(f"unknown distribution {', '.join(sorted(unknown))}")
    if any(c < 2 for c in args.connections):
        p.error("wrk runs two threads: at least 2 connections")
    # Both sides mint one token per run, valid 590 to 600 s; it must outlive the run.
    if not 1 <= args.duration <= 540:
        p.error("--duration must be 1 to 540 seconds")
    return args


def locate_wrk() -> str:
    """wrk from PATH, installed from Debian's package first if missing (as run.sh does)."""
    found = shutil.which("wrk")
    if found is None:
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True)
        found = shutil.which("wrk")
    if found is None:
        raise SystemExit("wrk is not installed and apt-get could not install it")
    return found


def wrk_version(wrk: str) -> str:
    """wrk's first line of ``--version`` (it exits non-zero after printing its usage)."""
    out = subprocess.run([wrk, "--version"], capture_output=True, text=True, timeout=10)
    return (out.stdout or out.stderr).splitlines()[0].strip()


def run_naive(
    args: argparse.Namespace, wrk: str, workdir: Path, phase: str
) -> dict[tuple[int, str], WrkRun]:
    """run.sh once per connections count; its wrk is the stand-in that keeps the reports."""
    stand_in = workdir / "wrk-stand-in"
    stand_in.mkdir(parents=True, exist_ok=True)
    (stand_in / "wrk").write_text(WRK_STAND_IN)
    (stand_in / "wrk").chmod(0o755)
    runs: dict[tuple[int, str], WrkRun] = {}
    for connections in args.connections:
        out = workdir / f"{phase}-c{connections}"
        out.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "PATH": f"{stand_in}{os.pathsep}{os.environ.get('PATH', '')}",
            "BENCH_COMPARE_WRK": wrk,
            "BENCH_COMPARE_OUT": str(out),
            "BENCH_COMPARE_HOT": " ".join(HOT_SHARE[d] for d in args.distribution),
        }
        print(f"naive ({phase}), C={connections} ...", flush=True)
        # The first run builds run.sh's virtualenv and Postgres; hence the generous bound.
        done = subprocess.run(
            ["bash", str(args.naive_dir / "run.sh"), str(args.duration), str(connections)],
            env=env,
            capture_output=True,
            text=True,
            timeout=900 + 3 * args.duration,
        )
        (out / "run.sh.log").write_text(done.stdout + done.stderr)
        print(*(line for line in done.stdout.splitlines() if line.startswith("naive ")), sep="\n")
        if done.returncode != 0:
            raise RuntimeError(f"run.sh failed ({done.returncode}): {done.stderr[-2000:]}")
        for distribution in args.distribution:
            report = out / f"hot-{HOT_SHARE[distribution]}.txt"
            if not report.exists():
                raise RuntimeError(
                    f"run.sh ran no {distribution} run (HOT={HOT_SHARE[distribution]}): "
                    f"{done.stdout[-2000:]}"
                )
            runs[connections, distribution] = parse_wrk_output(report.read_text())
    return runs


async def audit_product(stack: BenchStack) -> dict[str, Any]:
    """The ledger audit, repeated for up to a minute while the projection catches up."""
    conn = await asyncpg.connect(stack.dsn)
    try:
        deadline = time.monotonic() + 60
        result = await audit(conn)
        while not result.ok and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            result = await audit(conn)
        entries = await conn.fetchval(
            "SELECT count(*) FROM journal_entries WHERE kind IN ('debit', 'credit')"
        )
    finally:
        await conn.close()
    return {
        "ok": result.ok,
        "checked": result.checked,
        "failures": result.failures,
        "callback_entries": entries,
    }


async def run_product(
    args: argparse.Namespace, wrk: str, workdir: Path
) -> tuple[dict[tuple[int, str], WrkRun], dict[str, Any]]:
    """The product's stack on a fresh database and topics, 10,000 balances, wrk, then its audit."""
    private, public = make_key(workdir)
    stack = BenchStack(
        args.pg_dsn,
        args.kafka,
        workdir / "product",
        public,
        extra_env=dict(item.split("=", 1) for item in args.service_env),
    )
    await stack.create()
    runs: dict[tuple[int, str], WrkRun] = {}
    try:
        await stack.start()
        # The names mix.lua sends (and run.sh's seed.sql creates): customer c<i>, balance b<i>.
        funded = await fund(stack, BALANCES, "USD", names=lambda i: (f"c{i}", f"b{i}"))
        print(f"product: funded {BALANCES} balances in {funded:.1f} s", flush=True)
        # The naive wallet starts from a seeded table; the product starts once its projection
        # has applied the 30,000 funding facts, not while it is still catching up on them.
        settled = await audit_product(stack)
        if not settled["ok"]:
            raise RuntimeError(f"the product's audit failed after funding: {settled}")
        url = f"http://127.0.0.1:{stack.edge_port}"
        for connections in args.connections:
            for distribution in args.distribution:
                print(f"product, C={connections} {distribution} ...", flush=True)
                env = {
                    **os.environ,
                    # A fresh token per run, as run.sh mints one per run.
                    "TOKEN": Tokens(private.read_bytes(), AUDIENCE).current(),
                    "NBAL": str(BALANCES),
                    "HOT": HOT_SHARE[distribution],
                }
                argv = wrk_arguments(
                    connections, args.duration, str(args.naive_dir / "mix.lua"), url
                )
                done = await asyncio.to_thread(
                    subprocess.run,
                    [wrk, *argv],
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=args.duration + 120,
                )
                report = workdir / f"product-c{connections}-{distribution}.txt"
                report.write_text(done.stdout + done.stderr)
                print(done.stdout.rstrip().splitlines()[-1] if done.stdout.strip() else "")
                runs[connections, distribution] = parse_wrk_output(done.stdout)
        # While the services still run: the projection must catch up for its part of the audit.
        product_audit = await audit_product(stack)
    finally:
        stack.stop()
        await stack.drop()
    return runs, product_audit


def print_audit(product_audit: dict[str, Any]) -> None:
    """The audit's verdict in one line, naming every failed check."""
    failures = product_audit["failures"]
    verdict = (
        "ok"
        if product_audit["ok"]
        else "FAILED " + ", ".join(f"{name} ({n} rows)" for name, n in failures.items())
    )
    print(
        f"product audit: {verdict} ({len(product_audit['checked'])} checks, "
        f"{product_audit['callback_entries']} debit/credit entries)"
    )


async def run(args: argparse.Namespace) -> int:
    """The sitting: naive, product, naive; the table; the JSON when asked."""
    if not (args.naive_dir / "run.sh").exists():
        raise SystemExit(f"no naive wallet at {args.naive_dir} (it comes with ../shared)")
    wrk = locate_wrk()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    workdir = HOME / "bench" / f"compare-{stamp}"
    workdir.mkdir(parents=True, exist_ok=True)
    before = run_naive(args, wrk, workdir, "naive-before")
    product, product_audit = await run_product(args, wrk, workdir)
    after = run_naive(args, wrk, workdir, "naive-after")
    rows = [
        SideBySide(c, d, before[c, d], product[c, d], after[c, d])
        for c in args.connections
        for d in args.distribution
    ]
    print()
    print(table(rows))
    print()
    print_audit(product_audit)
    record = sitting_record(
        rows,
        {
            "started": stamp,
            "label": args.label,
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
            "versions": {**versions(), "wrk": wrk_version(wrk)},
            "settings": {
                "duration_s": args.duration,
                "balances": BALANCES,
                "wrk": "-t2 --latency, the naive wallet's mix.lua",
                "naive": str(args.naive_dir / "run.sh"),
                "tuned_service_settings": dict(item.split("=", 1) for item in args.service_env),
            },
            "product_audit": product_audit,
        },
    )
    (workdir / "sitting.json").write_bytes(orjson.dumps(record, option=orjson.OPT_INDENT_2))
    print(f"wrk reports and the sitting: {workdir}")
    if args.save:
        name = time.strftime("%Y-%m-%d-bench-compare-%H%M%S.json")
        out = REPO / "docs" / "benchmarks" / name
        out.write_bytes(orjson.dumps(record, option=orjson.OPT_INDENT_2))
        print(f"saved: {out}")
    return 0 if product_audit["ok"] else 1


def main() -> None:
    """Entry point of ``python -m bench.compare``."""
    sys.exit(asyncio.run(run(parse_args())))


if __name__ == "__main__":
    main()
