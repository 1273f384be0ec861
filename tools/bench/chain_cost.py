"""``python -m bench.chain_cost``: what the journal's hash chain costs the writer, and how fast
``ledger.chain verify`` walks a large journal.

One scratch database on the local Postgres (``WALLET_PG_DSN``'s server), two partitions written
by this build's store with the same batches of debits: partition 0 chained (the writer's path:
each entry hashed and linked, the head moved with the offsets), partition 1 unchained (no
cursor given, NULL chain columns: the cost without the chain). The two alternate, A-B then B-A,
for ``--rounds`` rounds per batch size. Printed per size, medians per batch:

- ``write ms``: wall time of ``apply_batch``;
- ``rows µs/cmd``: client CPU to turn a decided command into rows and facts (the chain's
  hashing happens here);
- ``apply µs/cmd``: client CPU inside ``apply_batch`` (encoding);
- ``server µs/cmd``: CPU of the Postgres backend (from /proc, 10 ms ticks: an average).

With ``--verify-entries N`` it then writes N more chained deposits (batches of 1,000) and times
``verify_chains`` over the whole journal. The database is dropped at the end. Keep runs short
on a shared machine.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import statistics
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from bench.batch_write import ADMIN_DSN, AT, debits, dsn_of, funding, open_balances
from bench.procstat import cpu_seconds
from bench.stack import drop_database
from ledger import store
from ledger.chain import verify_chains
from ledger_core.batch_rows import BatchRows
from ledger_core.commands import MoneyCommand, fingerprint, idempotency_key
from ledger_core.decide import StoredOutcome, apply, decide
from ledger_core.facts import facts_for
from ledger_core.state import PartitionState
from wallet_platform.schema import migrate

AT_MS = int(AT.timestamp() * 1000)


@dataclass
class Partition:
    """One partition of the scratch ledger, written chained or not."""

    label: str
    partition: int
    chained: bool
    cursor: Any = None
    state: PartitionState = field(default_factory=lambda: PartitionState(0))
    write_ms: dict[int, list[float]] = field(default_factory=dict)
    rows_cpu: dict[int, list[float]] = field(default_factory=dict)
    apply_cpu: dict[int, list[float]] = field(default_factory=dict)
    server_cpu: dict[int, float] = field(default_factory=dict)

    async def take(self, conn: asyncpg.Connection) -> None:
        self.state = PartitionState(self.partition)
        self.cursor = await store.take_over(conn, self.partition)

    async def write(
        self, conn: asyncpg.Connection, commands: list[Any]
    ) -> tuple[float, float, float, float]:
        """Decide and write one batch; (write seconds, rows CPU, apply CPU, server CPU)."""
        rows = BatchRows()
        rows_cpu = 0.0
        offset = self.cursor.next_offset
        for i, cmd in enumerate(commands):
            decision = decide(self.state, cmd, None)
            assert decision.outcome.status < 400, decision.outcome
            apply(self.state, decision)
            outcome = StoredOutcome(
                fingerprint(cmd), decision.outcome.status, decision.outcome.body
            )
            started = time.process_time()  # rows and facts: where the chain's hashing is
            links = rows.add_effects(
                decision, self.partition, offset + i, AT, self.cursor if self.chained else None
            )
            if decision.record:
                key = idempotency_key(cmd)
                rows.add_outcome(key, outcome, decision.entry_id, self.partition, AT)
            for fact in facts_for(decision, self.partition, AT_MS, links):
                self.cursor.outbox_seq += 1
                seq = self.cursor.outbox_seq
                rows.add_fact(self.partition, seq, fact.event_id, fact.key, fact.payload)
            rows_cpu += time.process_time() - started
        end = offset + len(commands)
        rows.add_cursor(self.cursor, end)
        backend = conn.get_server_pid()
        server_before = cpu_seconds(backend)
        cpu_before = time.process_time()
        wall_before = time.perf_counter()
        await store.apply_batch(conn, rows)
        wall = time.perf_counter() - wall_before
        apply_cpu = time.process_time() - cpu_before
        self.cursor.next_offset = end
        return wall, rows_cpu, apply_cpu, cpu_seconds(backend) - server_before


def deposits(first: int, count: int, customers: int) -> list[MoneyCommand]:
    return [
        MoneyCommand("deposit", f"c{i % customers}", "usd", f"v{i}", "1.00", "USD", "load")
        for i in range(first, first + count)
    ]


async def run(args: argparse.Namespace) -> None:
    database = f"bench_chain_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(ADMIN_DSN)
    try:
        await admin.execute(f'CREATE DATABASE "{database}"')
    finally:
        await admin.close()
    conn = await asyncpg.connect(dsn_of(database))
    try:
        await migrate(conn)
        await store.ensure_currencies(conn)
        subjects = [Partition("chained", 0, True), Partition("unchained", 1, False)]
        for s in subjects:
            await s.take(conn)
            # Each partition its own customers (a customer lives in one partition).
            setup = [_rename(c, s.partition) for c in funding(args.customers)]
            await s.write(conn, setup[0::2])
            await s.write(conn, [_rename(c, s.partition) for c in open_balances(args.customers)])
            await s.write(conn, setup[1::2])
        for size in args.sizes:
            for s in subjects:
                s.server_cpu[size] = 0.0
            for round_ in range(args.rounds + 1):  # round 0 warms up
                order = subjects if round_ % 2 == 0 else list(reversed(subjects))
                for s in order:
                    batch = [_rename(c, s.partition) for c in debits(size, round_, args.customers)]
                    wall, rows_cpu, apply_cpu, server = await s.write(conn, batch)
                    if round_ == 0:
                        continue
                    s.write_ms.setdefault(size, []).append(wall * 1000)
                    s.rows_cpu.setdefault(size, []).append(rows_cpu / size * 1e6)
                    s.apply_cpu.setdefault(size, []).append(apply_cpu / size * 1e6)
                    s.server_cpu[size] += server
        print(
            f"{'batch':>5}  {'journal':<10}  {'write ms':>8}  {'rows µs/cmd':>11}  "
            f"{'apply µs/cmd':>12}  {'server µs/cmd':>13}"
        )
        for size in args.sizes:
            for s in subjects:
                server = s.server_cpu[size] / (size * args.rounds) * 1e6
                print(
                    f"{size:>5}  {s.label:<10}  {statistics.median(s.write_ms[size]):>8.2f}  "
                    f"{statistics.median(s.rows_cpu[size]):>11.1f}  "
                    f"{statistics.median(s.apply_cpu[size]):>12.1f}  {server:>13.1f}"
                )
        if args.verify_entries:
            chained = subjects[0]
            for first in range(0, args.verify_entries, 1000):
                count = min(1000, args.verify_entries - first)
                batch = [_rename(c, 0) for c in deposits(first, count, args.customers)]
                await chained.write(conn, batch)
            report = await verify_chains(conn, [0])
            assert report.intact, report.first_break
            print(
                f"verify: {report.entries} entries in {report.seconds:.2f} s "
                f"({report.entries / report.seconds:,.0f} entries/s)"
            )
    finally:
        await conn.close()
        await drop_database(ADMIN_DSN, database)


def _rename(cmd: Any, partition: int) -> Any:
    """The same command for a customer of ``partition`` (customers are per partition)."""
    return dataclasses.replace(cmd, customer_id=f"p{partition}-{cmd.customer_id}")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.chain_cost", description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 50, 200])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--customers", type=int, default=100)
    parser.add_argument("--verify-entries", type=int, default=0)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
