"""``python -m bench.replay_rate``: how fast a command log replays into a fresh ledger.

Produces ``--commands`` valid commands straight to ``ledger.commands`` under a private topic
prefix (per customer: create, open a USD balance, deposit; then debits and credits, two to one,
2 % of them sent twice with the same request id, as Quadcode's retries are), then runs
``python -m ledger.replay --until-offsets end --no-compare`` into a fresh database and reports
its rate and the CPU it used: the replay process's own, and that of Postgres and Kafka (all
their processes, so it includes whatever else ran meanwhile; run it on a quiet machine).
Topics and database are removed afterwards unless ``--keep``.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import re
import resource
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg

from bench.__main__ import infra_groups
from bench.stack import drop_database
from ledger_core.commands import (
    Command,
    CreateCustomer,
    Envelope,
    MoneyCommand,
    MoneyKind,
    OpenBalance,
    encode,
)
from wallet_platform import kafka_admin, topics
from wallet_platform.config import CommonSettings, load_settings
from wallet_platform.kafka import make_producer

REPO = Path(__file__).resolve().parents[2]


def command_log(count: int, customers: int, seed: int = 11) -> list[Command]:
    """``count`` commands: every customer set up and funded, then debits and credits."""
    rng = random.Random(seed)
    ids = [f"rr-{i}" for i in range(customers)]
    log: list[Command] = []
    for c in ids:
        log += [
            CreateCustomer(c, "setup"),
            OpenBalance(c, f"{c}_USD", "USD", "setup"),
            MoneyCommand("deposit", c, f"{c}_USD", "setup", "100000.00", "USD", "funding"),
        ]
    while len(log) < count:
        c = rng.choice(ids)
        kind: MoneyKind = "debit" if rng.random() < 2 / 3 else "credit"
        amount = f"{rng.randint(1, 5000) / 100:.2f}"
        cmd = MoneyCommand(kind, c, f"{c}_USD", uuid.uuid4().hex, amount, "USD", "bench")
        log.append(cmd)
        if rng.random() < 0.02 and len(log) < count:
            log.append(cmd)  # a retry: the stored outcome, no second entry
    return log[:count]


async def produce(bootstrap: str, topic: str, log: list[Command]) -> float:
    """Send the log (no reply wanted); returns the seconds it took."""
    producer = make_producer(bootstrap, "bench-replay-rate", linger_ms=5)
    await producer.start()
    started = time.perf_counter()
    try:
        pending: list[asyncio.Future[Any]] = []
        for cmd in log:
            value = encode(cmd, Envelope(uuid.uuid4().hex, -1))
            pending.append(await producer.send(topic, value, key=cmd.customer_id.encode()))
            if len(pending) >= 10_000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return time.perf_counter() - started


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


async def run(args: argparse.Namespace) -> int:
    settings = load_settings(CommonSettings)
    prefix = f"rr{uuid.uuid4().hex[:8]}."
    database = "replay_" + uuid.uuid4().hex[:8]
    into = settings.pg_dsn.rsplit("/", 1)[0] + "/" + database
    await kafka_admin.ensure_topics(settings.kafka_bootstrap, topics.topics(prefix))
    admin = await asyncpg.connect(settings.pg_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{database}"')
    finally:
        await admin.close()
    try:
        log = command_log(args.commands, args.customers)
        topic = topics.topic_name(topics.COMMANDS, prefix)
        seconds = await produce(settings.kafka_bootstrap, topic, log)
        print(f"produced {len(log)} commands to {topic} in {seconds:.1f} s", flush=True)
        command = [
            sys.executable, "-m", "ledger.replay", "--into-dsn", into, "--topic-prefix", prefix,
            "--until-offsets", "end", "--no-compare",
        ]  # fmt: skip
        if args.max_rate:
            command += ["--max-rate", str(args.max_rate)]
        groups = infra_groups()
        for group in groups:
            group.cpu_start = group.cpu()
        cpu_before, started = children_cpu(), time.perf_counter()
        done = await asyncio.to_thread(
            subprocess.run, command, cwd=REPO, capture_output=True, text=True, check=False
        )
        wall = time.perf_counter() - started
        replay_cpu = children_cpu() - cpu_before
        print(done.stdout, end="")
        if done.returncode != 0:
            print(done.stderr[-3000:], file=sys.stderr)
            return done.returncode
        rate = re.search(r"replayed (\d+) commands in ([\d.]+) s", done.stdout)
        assert rate is not None
        print(
            f"replay: {int(rate[1]):,} commands in {float(rate[2]):.1f} s of replay "
            f"({int(rate[1]) / float(rate[2]):,.0f} commands/s); {wall:.1f} s with start-up, "
            "migration and hashing"
        )
        # Postgres's share is the replay's own backends (printed by the replay: a backend's CPU
        # leaves /proc with it); the groups' figures cover what is still running.
        print(f"cpu: replay process {replay_cpu:.1f} s", end="")
        for group in groups:
            print(f", {group.name} {group.cpu() - group.cpu_start:.1f} s", end="")
        print(f" (over {wall:.1f} s)")
        return 0
    finally:
        if not args.keep:
            await kafka_admin.delete_topics(
                settings.kafka_bootstrap, [t.name for t in topics.topics(prefix)]
            )
            await drop_database(settings.pg_dsn, database)


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.replay_rate``: see the module docstring."""
    p = argparse.ArgumentParser(prog="python -m bench.replay_rate", description=__doc__)
    p.add_argument("--commands", type=int, default=100_000, help="commands in the log")
    p.add_argument("--customers", type=int, default=1000, help="customers they are spread over")
    p.add_argument("--max-rate", type=float, default=None, help="the replay's --max-rate")
    p.add_argument("--keep", action="store_true", help="keep the topics and the database")
    args = p.parse_args(argv)
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
