"""``python -m bench.plan_cost``: the ledger writer's CPU per command in its pure part, from the
command's bytes to everything its batch writes and sends: decode, then ``ledger_core.plan``'s
``plan_batch`` (decide, apply to memory, rows, the hash chain, facts).

No I/O and no services: one process, one partition of ``--customers`` funded balances, batches
of ``--batch`` callbacks in the Quadcode mix (70 % debits, 25 % credits, 5 % debits that are
refused for want of funds, each with its own request id), encoded as the edge encodes them.
Each round plans ``--batches`` batches and reports the process CPU per command; the median of
``--rounds`` rounds is printed. To compare two versions of the code, run it under each
(``PYTHONPATH=/tmp/old/libs:/tmp/old/services:/tmp/old/tools``) alternately, a few times each:
the figure is CPU time, but this machine's speed drifts, so only interleaved runs compare.
"""

from __future__ import annotations

import argparse
import statistics
import time

import orjson

from ledger_core.batch_rows import PartitionCursor
from ledger_core.commands import (
    Command,
    CreateCustomer,
    Envelope,
    MoneyCommand,
    OpenBalance,
    decode,
    encode,
    idempotency_key,
)
from ledger_core.plan import Incoming, plan_batch
from ledger_core.state import PartitionState, UndoLog

PARTITION = 0
AT_MS = 1_767_225_600_000  # 2026-01-01


class Memory:
    """The partition's memory, as the writer holds it."""

    def __init__(self) -> None:
        self.state = PartitionState(PARTITION)
        self.cursor = PartitionCursor(PARTITION, 1, 0, 0, 0)


def plan_encoded(memory: Memory, encoded: list[bytes]) -> None:
    """Decode and plan one batch, then keep its changes (as a landed batch does)."""
    start = memory.cursor.next_offset
    commands = []
    for i, value in enumerate(encoded):
        cmd, _ = decode(value)
        commands.append(Incoming(PARTITION, start + i, AT_MS + i, cmd, idempotency_key(cmd)))
    end = start + len(encoded)
    plan_batch(
        {PARTITION: memory}, commands, {PARTITION: end}, lambda p, k: None, UndoLog(), verified=True
    )


def setup(customers: int) -> tuple[Memory, list[bytes]]:
    memory = Memory()
    commands: list[Command] = []
    for c in range(customers):
        commands.append(CreateCustomer(f"c{c}", f"create-{c}"))
        commands.append(OpenBalance(f"c{c}", "usd", "USD", f"open-{c}"))
        commands.append(MoneyCommand("deposit", f"c{c}", "usd", f"fund-{c}", "1000", "USD", ""))
    return memory, [encode(cmd, Envelope(f"setup-{i}", 0)) for i, cmd in enumerate(commands)]


def callbacks(count: int, first: int, customers: int) -> list[bytes]:
    """The edge's commands for ``count`` callbacks of the mix."""
    out = []
    for i in range(first, first + count):
        customer = f"c{(i * 7919) % customers}"
        share = i % 20
        if share < 14:
            cmd = MoneyCommand("debit", customer, "usd", f"req-{i}", "1.25", "USD", "")
        elif share < 19:
            cmd = MoneyCommand("credit", customer, "usd", f"req-{i}", "2.50", "USD", "")
        else:  # refused: insufficient funds
            cmd = MoneyCommand("debit", customer, "usd", f"req-{i}", "100000", "USD", "")
        out.append(encode(cmd, Envelope(f"cmd-{i}", 0)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=10, help="commands per batch")
    parser.add_argument("--batches", type=int, default=2_000, help="batches per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args()
    memory, funding = setup(args.customers)
    for i in range(0, len(funding), 1000):
        plan_encoded(memory, funding[i : i + 1000])
    per_command: list[float] = []
    first = 0
    for round_ in range(args.rounds + 1):  # round 0 warms up
        batches = []
        for _ in range(args.batches):
            batches.append(callbacks(args.batch, first, args.customers))
            first += args.batch
        started = time.process_time()
        for batch in batches:
            plan_encoded(memory, batch)
        cpu = time.process_time() - started
        if round_:
            per_command.append(cpu / (args.batches * args.batch) * 1e6)
    result = {
        "batch": args.batch,
        "us_per_command_median": round(statistics.median(per_command), 2),
        "us_per_command_rounds": [round(x, 2) for x in per_command],
    }
    if args.json:
        print(orjson.dumps(result).decode())
    else:
        print(
            f"{result['us_per_command_median']} µs CPU per command (median of {args.rounds} "
            f"rounds, batches of {args.batch}): {result['us_per_command_rounds']}"
        )


if __name__ == "__main__":
    main()
