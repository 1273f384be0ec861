"""``python -m bench.batch_write``: what one ``ledger_apply_batch`` costs, this build's store
against a baseline store (an older ``services/ledger/store.py``), with the same batches.

Makes two scratch databases on the local Postgres (``WALLET_PG_DSN``'s server): the baseline's,
migrated without the definitions (so it holds the function of the migrations, e.g. 0005's 71
arrays), and this build's, migrated whole. Each gets the same customers, funded by one batch.
Then, for each batch size, ``--rounds`` rounds of one batch of that many debits per store (the
order alternates, A-B then B-A, so drift of the shared machine cancels out), each decided by
``ledger_core`` exactly as the writer does and turned into rows by the store under test.
Printed per size and store, medians over the rounds:

- ``write ms``: wall time of ``apply_batch`` (encode, send, run, commit);
- ``rows µs/cmd``: client CPU of the store to turn a decided command (its effects, outcome
  and serialised facts) into rows;
- ``apply µs/cmd``: client CPU inside ``apply_batch`` per command (asyncpg's encoding);
- ``server µs/cmd``: CPU of the Postgres backend per command (from /proc, 10 ms ticks: summed
  over all rounds, so read it as an average).

The old store comes from a worktree: ``git worktree add --detach /tmp/old HEAD`` then
``--baseline /tmp/old/services/ledger/store.py``. Without ``--baseline`` only this build is
measured. The scratch databases are dropped at the end. Keep runs short on a shared machine.

``--without outcomes facts`` adds a third store: this build's, with those rows (the idempotency
records, the outbox's facts) left out of every batch, neither encoded nor written. It answers
issue 14's "fewer rows per callback" before anyone builds it: what those rows cost at most.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import statistics
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import ModuleType
from typing import Any

import asyncpg

from bench.procstat import cpu_seconds
from bench.stack import drop_database
from ledger import store as current_store
from ledger_core.commands import (
    CreateCustomer,
    MoneyCommand,
    OpenBalance,
    fingerprint,
    idempotency_key,
)
from ledger_core.decide import StoredOutcome, apply, decide
from ledger_core.facts import facts_for
from ledger_core.state import PartitionState
from wallet_platform.schema import WALLET, MigrationSet, migrate

ADMIN_DSN = os.environ.get("WALLET_PG_DSN", "postgresql://wallet@127.0.0.1:25432/wallet")
PARTITION = 0
AT = datetime(2026, 1, 1, tzinfo=UTC)


def dsn_of(database: str) -> str:
    return ADMIN_DSN.rsplit("/", 1)[0] + "/" + database


def load_store(path: str) -> ModuleType:
    """An older ``ledger/store.py`` as a module of its own (it imports this build's libs)."""
    spec = importlib.util.spec_from_file_location("baseline_store", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["baseline_store"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@dataclass
class Subject:
    """One store under test, on its own database, with the writer's memory of partition 0."""

    label: str
    store: Any
    database: str
    conn: asyncpg.Connection | None = None
    cursor: Any = None
    state: PartitionState = field(default_factory=lambda: PartitionState(PARTITION))
    write_ms: dict[int, list[float]] = field(default_factory=dict)
    rows_cpu: dict[int, list[float]] = field(default_factory=dict)
    apply_cpu: dict[int, list[float]] = field(default_factory=dict)
    server_cpu: dict[int, float] = field(default_factory=dict)
    # Row kinds left out of every batch (``--without``): what writing them costs.
    without: tuple[str, ...] = ()

    async def open(self, definitions: bool) -> None:
        admin = await asyncpg.connect(ADMIN_DSN)
        try:
            await admin.execute(f'CREATE DATABASE "{self.database}"')
        finally:
            await admin.close()
        self.conn = await asyncpg.connect(dsn_of(self.database))
        await migrate(self.conn, WALLET if definitions else MigrationSet())
        await current_store.ensure_currencies(self.conn)
        self.cursor = await self.store.take_over(self.conn, PARTITION)

    async def write(self, commands: list[Any]) -> tuple[float, float, float, float]:
        """Decide and write one batch; (write seconds, rows CPU, apply CPU, server CPU)."""
        assert self.conn is not None
        rows = self.store.BatchRows()
        rows_cpu = 0.0
        offset = self.cursor.next_offset
        seq = self.cursor.outbox_seq
        for i, cmd in enumerate(commands):
            decision = decide(self.state, cmd, None)
            assert decision.outcome.status < 400, decision.outcome  # the same rows in A and B
            apply(self.state, decision)
            outcome = StoredOutcome(
                fingerprint(cmd), decision.outcome.status, decision.outcome.body
            )
            facts = facts_for(decision, PARTITION, int(AT.timestamp() * 1000))
            started = time.process_time()  # the store's part only: rows from a decision
            rows.add_effects(decision, PARTITION, offset + i, AT)
            if decision.record:
                rows.add_outcome(idempotency_key(cmd), outcome, decision.entry_id, PARTITION, AT)
            for fact in facts:
                seq += 1
                if hasattr(rows, "add_fact"):
                    rows.add_fact(PARTITION, seq, fact.event_id, fact.key, fact.payload)
                else:  # the column arrays of the 71-array function
                    rows.add(rows.outbox, (PARTITION, seq, fact.event_id, fact.key, fact.payload))
            rows_cpu += time.process_time() - started
        end = offset + len(commands)
        started = time.process_time()
        self.cursor.outbox_seq = seq
        rows.add_cursor(self.cursor, end)
        rows_cpu += time.process_time() - started
        for kind in self.without:
            getattr(rows, kind).clear()
        backend = self.conn.get_server_pid()
        server_before = cpu_seconds(backend)
        cpu_before = time.process_time()
        wall_before = time.perf_counter()
        await self.store.apply_batch(self.conn, rows)
        wall = time.perf_counter() - wall_before
        apply_cpu = time.process_time() - cpu_before
        server = cpu_seconds(backend) - server_before
        self.cursor.next_offset = end
        return wall, rows_cpu, apply_cpu, server

    async def close(self) -> None:
        if self.conn is not None:
            await self.conn.close()
        await drop_database(ADMIN_DSN, self.database)


def funding(customers: int) -> list[Any]:
    commands: list[Any] = []
    for c in range(customers):
        commands.append(CreateCustomer(f"c{c}", f"create-{c}"))
        commands.append(MoneyCommand("deposit", f"c{c}", "usd", f"fund-{c}", "1000000", "USD", ""))
    return commands


def open_balances(customers: int) -> list[Any]:
    return [OpenBalance(f"c{c}", "usd", "USD", f"open-{c}") for c in range(customers)]


def debits(size: int, round_: int, customers: int) -> list[Any]:
    return [
        MoneyCommand(
            "debit", f"c{i % customers}", "usd", f"r{round_}-{size}-{i}", "1.25", "USD", "stake"
        )
        for i in range(size)
    ]


async def run(args: argparse.Namespace) -> None:
    tag = uuid.uuid4().hex[:8]
    subjects = []
    if args.baseline:
        subjects.append(Subject("baseline", load_store(args.baseline), f"bench_batch_a_{tag}"))
    subjects.append(Subject("this build", current_store, f"bench_batch_b_{tag}"))
    if args.without:
        label = "without " + ",".join(args.without)
        subjects.append(
            Subject(label, current_store, f"bench_batch_c_{tag}", without=tuple(args.without))
        )
    try:
        for subject in subjects:
            await subject.open(definitions=subject.store is current_store)
            # Customers, then their balances, then the deposits: one batch each.
            setup = funding(args.customers)
            await subject.write(setup[0::2])
            await subject.write(open_balances(args.customers))
            await subject.write(setup[1::2])
        for size in args.sizes:
            for s in subjects:
                s.server_cpu[size] = 0.0
            for round_ in range(args.rounds + 1):  # round 0 warms up (prepare, type lookup)
                order = subjects if round_ % 2 == 0 else list(reversed(subjects))
                for subject in order:
                    wall, rows_cpu, apply_cpu, server = await subject.write(
                        debits(size, round_, args.customers)
                    )
                    if round_ == 0:
                        continue
                    subject.write_ms.setdefault(size, []).append(wall * 1000)
                    per = max(size, 1)  # size 0: per call
                    subject.rows_cpu.setdefault(size, []).append(rows_cpu / per * 1e6)
                    subject.apply_cpu.setdefault(size, []).append(apply_cpu / per * 1e6)
                    subject.server_cpu[size] += server
        width = max(len(s.label) for s in subjects)
        print(
            f"{'batch':>5}  {'store':<{width}}  {'write ms':>8}  {'rows µs/cmd':>11}  "
            f"{'apply µs/cmd':>12}  {'server µs/cmd':>13}"
        )
        for size in args.sizes:
            for s in subjects:
                server = s.server_cpu[size] / (max(size, 1) * args.rounds) * 1e6
                print(
                    f"{size:>5}  {s.label:<{width}}  {statistics.median(s.write_ms[size]):>8.2f}  "
                    f"{statistics.median(s.rows_cpu[size]):>11.1f}  "
                    f"{statistics.median(s.apply_cpu[size]):>12.1f}  {server:>13.1f}"
                )
    finally:
        for subject in subjects:
            await subject.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.batch_write", description=__doc__)
    parser.add_argument("--baseline", help="an older ledger/store.py to compare against")
    parser.add_argument(
        "--sizes",
        type=int,
        nargs="+",
        default=[10, 50, 200],
        help="debits per batch; 0 writes batches that only move the partition's cursor (what a "
        "call costs whatever it carries; its figures are per call)",
    )
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--customers", type=int, default=100)
    parser.add_argument(
        "--without",
        nargs="+",
        choices=("outcomes", "facts"),
        help="also measure this build with these rows left out of every batch (its database "
        "then holds a ledger that is not whole: a measurement of what the rows cost, no more)",
    )
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
