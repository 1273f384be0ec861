"""Poison beside the load: commands the ledger can never apply, sent straight to ledger.commands.

The ``open-poison`` scenario runs the open loop of good callbacks while this injector sends, at
its own steady rate, credits the ledger must refuse: most carry a NUL in their comment (text
Postgres can not hold, refused before the database sees it), every n-th a comment a trigger in
the benchmark's database refuses (a deterministic database refusal, which the writer narrows
down by halving its batch: a few round trips each, so these are meant to be rare). They go to
the same customers as the good traffic, so they share its partitions. The edge would refuse
both kinds at the door; sending them to Kafka directly tests the ledger's own guard. Compare
the good callbacks' latency with an ``open-control`` run in the same sitting, which sends as many
good deposits the same way (the same extra load, no poison):
``--scenarios open-control,open-poison,open-control,open-poison``.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from typing import Any

import asyncpg
import orjson

from ledger_core.commands import MoneyCommand
from wallet_platform.command_bus import CommandBus, OutcomeTimeout

REFUSED_MARK = "bench-poison-refuse"

# Installed once per benchmark database when a poison scenario runs (and left there: the
# benchmark database is dropped afterwards). It fires on every journal entry, so install it
# before the clean run too, to compare like with like.
TRIGGER = f"""
CREATE OR REPLACE FUNCTION bench_refuse_marked() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.comment = '{REFUSED_MARK}' THEN
        RAISE EXCEPTION 'refused by the benchmark' USING ERRCODE = '22023';
    END IF;
    RETURN NEW;
END $$;
DROP TRIGGER IF EXISTS bench_refuse_marked ON journal_entries;
CREATE TRIGGER bench_refuse_marked BEFORE INSERT ON journal_entries
    FOR EACH ROW EXECUTE FUNCTION bench_refuse_marked();
"""


async def install_trigger(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(TRIGGER)
    finally:
        await conn.close()


async def inject(
    bus: CommandBus,
    customers: int,
    currency: str,
    rate: float,
    refused_every: int,
    stop: asyncio.Event,
    *,
    control: bool = False,
) -> dict[str, Any]:
    """Send poison at ``rate`` per second until ``stop``, every ``refused_every``-th one refused
    by the database (the others carry NUL); count the answers by status and code. With
    ``control``, the same commands are good deposits of 0.01 instead: the same extra load, no
    poison (deposits are outside the benchmark's debit and credit checks)."""
    rng = random.Random(11)
    answers: Counter[str] = Counter()
    pending: set[asyncio.Task[None]] = set()

    async def one(i: int) -> None:
        c = f"bc-{rng.randrange(customers)}"
        if control:
            cmd = MoneyCommand(
                "deposit", c, f"{c}_{currency}", f"control-{i}", "0.01", currency, "bench control"
            )
        else:
            comment = REFUSED_MARK if i % refused_every == 0 else "bench \x00 poison"
            cmd = MoneyCommand(
                "credit", c, f"{c}_{currency}", f"poison-{i}", "1.00", currency, comment
            )
        try:
            status, body = await bus.submit(cmd, 10.0)
            code = orjson.loads(body).get("error", "") if status >= 300 else ""
            answers[f"{status} {code}".strip()] += 1
        except OutcomeTimeout:
            answers["timeout"] += 1

    started = time.monotonic()
    sent = 0
    while not stop.is_set():
        due = int((time.monotonic() - started) * rate)
        while sent < due:
            task = asyncio.create_task(one(sent))
            pending.add(task)
            task.add_done_callback(pending.discard)
            sent += 1
        await asyncio.sleep(0.01)
    if pending:
        await asyncio.gather(*pending)
    return {
        "sent": sent,
        "rate": rate,
        "refused_by_database_every": refused_every,
        "answers": dict(answers),
    }
