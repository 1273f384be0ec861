"""``python -m bench.statement_pages``: what a statement page and a balance-at-a-time cost on a
balance with a million postings, against a new one.

Makes a scratch database of its own on the local Postgres (``WALLET_PG_DSN``'s server), migrated
like any ledger database, and fills it with one bulk SQL insert per table: a customer with a
"big" balance of ``--postings`` postings (one deposit entry each, one millisecond apart) and a
"new" balance of 200 (so its pages are full pages too). Only in that scratch database are the
journal's append-only triggers and the postings' foreign keys dropped first, so the fill is a
plain bulk insert (the operator API only reads; nothing here changes the ledger's rules anywhere
else). Then it times the operator API's own read functions (:mod:`operator_api.ledger_reads`),
``--repeat`` times each, and prints the median and the worst in milliseconds, with Postgres'
plan of the last page, and, for contrast, the same last page fetched with ``OFFSET`` (what the
routes never do). The scratch database is dropped at the end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import asyncpg

from bench.stack import drop_database
from ledger_core.state import balance_account_id
from operator_api import ledger_reads as reads
from operator_api.ledger_requests import MAX_SEQ
from wallet_platform.schema import migrate

ADMIN_DSN = os.environ.get("WALLET_PG_DSN", "postgresql://wallet@127.0.0.1:25432/wallet")
CUSTOMER = "bench-statements"
START = datetime(2026, 1, 1, tzinfo=UTC)
NEW = 200  # a new balance with two pages' worth, so its pages are full pages too

_FILL_ENTRIES = """
INSERT INTO journal_entries (entry_id, partition, command_offset, kind, customer_id, balance_id,
                             request_id, currency, amount, comment, created_at)
SELECT md5($2 || g)::uuid, 0, g, 'deposit', $1, $2, 'r-' || g, 'USD', 100, 'bench deposit',
       $4::timestamptz + g * interval '1 millisecond'
  FROM generate_series(1, $3::int) g
"""
_FILL_POSTINGS = """
INSERT INTO postings (entry_id, account_id, seq, amount, balance_after)
SELECT md5($1 || g)::uuid, $3, g, 100, 100 * g FROM generate_series(1, $2::int) g
"""


def dsn_of(database: str) -> str:
    return ADMIN_DSN.rsplit("/", 1)[0] + "/" + database


async def scratch_database() -> str:
    name = "bench_statements_" + uuid.uuid4().hex[:8]
    admin = await asyncpg.connect(ADMIN_DSN)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return name


async def fill(conn: asyncpg.Connection, balances: dict[str, int]) -> None:
    await migrate(conn)
    # The scratch database only: a bulk fill without per-row triggers and foreign-key checks.
    await conn.execute(
        """DROP TRIGGER journal_entries_append_only ON journal_entries;
           DROP TRIGGER postings_append_only ON postings;
           ALTER TABLE postings DROP CONSTRAINT postings_entry_id_fkey;
           ALTER TABLE postings DROP CONSTRAINT postings_account_id_fkey;
           INSERT INTO currencies VALUES ('USD', 2) ON CONFLICT DO NOTHING"""
    )
    await conn.execute(
        "INSERT INTO customers VALUES ($1, 0, false, $2, $2)", CUSTOMER, START - timedelta(days=1)
    )
    for balance_id, count in balances.items():
        account_id = balance_account_id(CUSTOMER, balance_id)
        await conn.execute(
            """INSERT INTO accounts (account_id, partition, kind, customer_id, balance_id, currency)
               VALUES ($1, 0, 'customer', $2, $3, 'USD')""",
            account_id,
            CUSTOMER,
            balance_id,
        )
        started = time.perf_counter()
        await conn.execute(_FILL_ENTRIES, CUSTOMER, balance_id, count, START)
        await conn.execute(_FILL_POSTINGS, balance_id, count, account_id)
        print(f"filled {balance_id}: {count:,} postings in {time.perf_counter() - started:.1f} s")
    await conn.execute("ANALYZE")


async def timed(repeat: int, call: Callable[[], Awaitable[object]]) -> tuple[float, float]:
    """Median and worst of ``repeat`` calls, in milliseconds (after one warm-up call)."""
    await call()
    spent = []
    for _ in range(repeat):
        started = time.perf_counter()
        await call()
        spent.append((time.perf_counter() - started) * 1000)
    return statistics.median(spent), max(spent)


async def measure(conn: asyncpg.Connection, balance_id: str, count: int, repeat: int) -> None:
    account = await reads.account(conn, CUSTOMER, balance_id)
    assert account is not None
    whole = reads.SeqWindow()
    middle = START + timedelta(milliseconds=count // 2)
    window_end = middle + timedelta(milliseconds=1000)

    async def window_page() -> object:
        window = await reads.statement_window(
            conn, CUSTOMER, balance_id, account, middle, window_end
        )
        return await reads.statement_page(conn, account, window, 0, 100)

    cases: dict[str, Callable[[], Awaitable[object]]] = {
        "first page (100)": lambda: reads.statement_page(conn, account, whole, 0, 100),
        "last page (100)": lambda: reads.statement_page(conn, account, whole, count - 100, 100),
        "page of a from/to window in the middle": window_page,
        "balance at a time in the middle": lambda: reads.last_posting(
            conn, CUSTOMER, balance_id, account, middle
        ),
        "balance (total, held)": lambda: reads.balances(conn, CUSTOMER, balance_id),
    }
    for name, call in cases.items():
        median, worst = await timed(repeat, call)
        print(
            f"  {balance_id:>4} {count:>9,} postings  {name:<40} {median:7.2f} ms  max {worst:.2f}"
        )


async def run(args: argparse.Namespace) -> int:
    database = await scratch_database()
    print(f"scratch database {database}")
    try:
        conn = await asyncpg.connect(dsn_of(database))
        try:
            await fill(conn, {"big": args.postings, "new": NEW})
            print(f"median and worst of {args.repeat} runs each:")
            for balance_id, count in (("big", args.postings), ("new", NEW)):
                await measure(conn, balance_id, count, args.repeat)
            big = await reads.account(conn, CUSTOMER, "big")
            assert big is not None
            plan = await conn.fetch(
                "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + reads._STATEMENT,
                big.account_id,
                args.postings - 100,
                MAX_SEQ,
                101,
            )
            print("plan of the big balance's last page:")
            for row in plan:
                print("   ", row[0])
            median, worst = await timed(
                max(1, args.repeat // 10),
                lambda: conn.fetch(
                    """SELECT p.seq FROM postings p JOIN journal_entries e USING (entry_id)
                        WHERE p.account_id = $1 ORDER BY p.seq OFFSET $2 LIMIT 100""",
                    big.account_id,
                    args.postings - 100,
                ),
            )
            print(
                f"  for contrast, the same last page with OFFSET: {median:.1f} ms (max {worst:.1f})"
            )
        finally:
            await conn.close()
    finally:
        if args.keep:
            print(f"kept {database}")
        else:
            await drop_database(ADMIN_DSN, database)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.statement_pages", description=__doc__)
    parser.add_argument("--postings", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    return asyncio.run(run(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
