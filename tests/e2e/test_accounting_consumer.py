"""The reference accounting consumer as a process, on real Kafka and Postgres: its books equal
the ledger after callbacks and an exchange; it books duplicates once, parks facts behind a gap
until a republish heals it (a republish consumed twice counts once), and a restart mid-stream
doubles nothing."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import aiohttp
import asyncpg
import orjson
import pytest

from ledger_core.commands import ExchangeReserve, ExchangeSettle, OpenBalance
from wallet_clients import Operator, Wallet
from wallet_platform import topics
from wallet_platform.kafka import make_producer
from wallet_stack import (
    KAFKA,
    Service,
    Stack,
    create_database,
    create_topics,
    delete_topics,
    drop_database,
    dsn_for,
    wait_ready,
)

pytestmark = pytest.mark.e2e


async def ledger_balances(dsn: str) -> dict[str, int]:
    """Every account's balance in the ledger (sum of its postings), non-zero ones."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT account_id::text AS a, sum(amount) AS s FROM postings GROUP BY account_id"
        )
    finally:
        await conn.close()
    return {r["a"]: int(r["s"]) for r in rows if r["s"]}


async def books_balances(dsn: str) -> dict[str, int]:
    conn = await asyncpg.connect(dsn)
    try:
        if not await conn.fetchval("SELECT to_regclass('accounting.accounts') IS NOT NULL"):
            return {}
        rows = await conn.fetch("SELECT account_id::text AS a, balance FROM accounting.accounts")
    finally:
        await conn.close()
    return {r["a"]: int(r["balance"]) for r in rows if r["balance"]}


async def count(dsn: str, sql: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval(sql))
    except asyncpg.UndefinedTableError:  # the consumer has not created its books yet
        return 0
    finally:
        await conn.close()


async def books_equal_ledger(books_dsn: str, ledger_dsn: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    want = await ledger_balances(ledger_dsn)
    got = await books_balances(books_dsn)
    while got != want and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        got = await books_balances(books_dsn)
    assert got == want


async def metric(service: Service, name: str) -> float:
    async with aiohttp.ClientSession() as http, http.get(service.ops_url + "/metrics") as resp:
        text = await resp.text()
    for row in text.splitlines():
        if row.startswith(name + " "):
            return float(row.split()[1])
    return 0.0


async def ready(service: Service) -> tuple[int, dict[str, object]]:
    async with aiohttp.ClientSession() as http, http.get(service.ops_url + "/ready") as resp:
        return resp.status, orjson.loads(await resp.read())


async def until(check: object, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if await check():  # type: ignore[operator]
                return
        except aiohttp.ClientError:  # the process is still starting
            pass
        await asyncio.sleep(0.2)
    raise AssertionError(f"not reached in {timeout}s: {check}")


def cli(module: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", module, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done


async def outbox(dsn: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        rows: list[asyncpg.Record] = await conn.fetch(
            "SELECT partition, seq, key, payload FROM outbox ORDER BY partition, seq"
        )
        return rows
    finally:
        await conn.close()


async def produce(prefix: str, rows: list[asyncpg.Record]) -> None:
    """Send stored facts to the ledger.events of ``prefix``, keyed as the ledger keys them."""
    producer = make_producer(KAFKA, "test-facts")
    await producer.start()
    try:
        topic = topics.topic_name(topics.EVENTS, prefix)
        for row in rows:
            await producer.send(topic, bytes(row["payload"]), key=row["key"].encode())
        await producer.flush()
    finally:
        await producer.stop()


@pytest.fixture(scope="module")
async def traffic(stack: Stack, operator: Operator, wallet: Wallet) -> None:
    """Real traffic in the stack's ledger: deposits, callbacks, an exchange, for a few
    customers (so several partitions carry facts)."""
    for _ in range(6):
        customer, usd = await operator.customer_with_balance("USD", "100.00")
        for i in range(4):
            assert (await wallet.debit(customer, usd, f"{i + 1}.25")).status == 201
            assert (await wallet.credit(customer, usd, f"{i}.50")).status == 201
    customer, usdt = await operator.customer_with_balance("USDT", "100")
    btc = f"{customer}_BTC"
    assert (await operator.send(OpenBalance(customer, btc, "BTC", uuid.uuid4().hex))).status == 201
    reserve = ExchangeReserve(customer, "x-1", usdt, btc, "60", "USDT", "BTC", "USDT -> BTC")
    assert (await operator.send(reserve)).status == 201
    settle = ExchangeSettle(
        customer, "x-1", "o-1", "BTC", "0.00119", "0.00000007", "0.00000024", "0.00000001"
    )
    assert (await operator.send(settle)).status in (200, 201)


@pytest.fixture
async def books_db(pg_template: str) -> AsyncIterator[str]:
    """A database of its own for a second set of books."""
    name = await create_database(pg_template)
    yield dsn_for(name)
    await drop_database(name)


@pytest.fixture
async def facts_prefix() -> AsyncIterator[str]:
    """A topic namespace of its own, into which a test produces the facts it wants."""
    prefix = f"a{uuid.uuid4().hex[:10]}."
    await create_topics(prefix)
    yield prefix
    await delete_topics(prefix)


async def test_books_equal_the_ledger_after_callbacks_and_an_exchange(
    stack: Stack, traffic: None, tmp_path: object
) -> None:
    books = stack.add("accounting", "WALLET_ACCOUNTING_PORT")
    books.start()
    await wait_ready(books)
    await books_equal_ledger(stack.dsn, stack.dsn)
    env = books.env
    # The trial balance: every currency's debit balances equal its credit balances, and each
    # (currency, account kind) equals the ledger's.
    out = cli("accounting", "trial-balance", "--csv", env=env).stdout
    rows = [r.split(",") for r in out.strip().splitlines()[1:]]
    totals = [r for r in rows if r[1] == "TOTAL"]
    assert {r[0] for r in totals} == {"USD", "USDT", "BTC"}
    assert all(r[4] == r[5] for r in totals)
    conn = await asyncpg.connect(stack.dsn)
    try:
        ledger = await conn.fetch(
            """SELECT a.currency, a.kind, sum(p.amount) AS s FROM postings p
                 JOIN accounts a USING (account_id) GROUP BY a.currency, a.kind"""
        )
        lines = await conn.fetchval("SELECT count(*) FROM postings")
    finally:
        await conn.close()
    assert len(rows) - len(totals) == len(ledger)
    # Export today's general ledger: one CSV row per posting.
    today = datetime.now(UTC).date().isoformat()
    export = os.path.join(str(tmp_path), "gl.csv")
    cli("accounting", "export", "--from", today, "--to", today, "--out", export, env=env)
    with open(export, newline="") as fh:
        assert fh.read().count("\r\n") == lines + 1
    daily = cli("accounting", "daily-balances", "--from", today, "--to", today, env=env).stdout
    assert daily.startswith("date,account,account_id,")
    assert await metric(books, "accounting_facts_booked_total") > 0
    books.stop()


async def test_a_gap_parks_the_balance_until_a_republish_heals_it_and_a_second_republish_counts_nothing(
    stack: Stack, traffic: None, books_db: str, facts_prefix: str
) -> None:
    rows = await outbox(stack.dsn)
    # The fact to lose: a posting of a balance that has later postings in its partition.
    posted = [r for r in rows if orjson.loads(r["payload"])["type"] == "entry.posted"]
    lost = next(
        r
        for r in posted
        if any(
            orjson.loads(later["payload"])["balance_id"] == orjson.loads(r["payload"])["balance_id"]
            and later["partition"] == r["partition"]
            and later["seq"] > r["seq"]
            for later in posted
        )
    )
    body = orjson.loads(lost["payload"])
    kept = [r for r in rows if r is not lost]
    # Partitions out of order (the last first), and the first half of every fact twice.
    by_partition = sorted(kept, key=lambda r: (-r["partition"], r["seq"]))
    await produce(facts_prefix, by_partition + kept[: len(kept) // 2])

    env = {"WALLET_ACCOUNTING_PG_DSN": books_db, "WALLET_TOPIC_PREFIX": facts_prefix}
    books = stack.add("accounting", "WALLET_ACCOUNTING_PORT", **env)
    books.start()

    async def parked() -> bool:
        lag = f'accounting_lag_facts{{partition="{lost["partition"]}"}}'
        return await metric(books, "accounting_parked_facts") > 0 and await metric(books, lag) == 0

    await until(parked)
    status, detail = await ready(books)
    assert status == 503 and detail["checks"]["no_gap"] is False  # type: ignore[index]
    assert await metric(books, "accounting_balances_with_gap") == 1
    got, want = await books_balances(books_db), await ledger_balances(stack.dsn)
    assert got != want
    account = body["postings"][0]["account_id"]
    assert got.get(account) != want[account]  # the balance stopped before the lost fact

    # A restart while parked: the parked facts are read again, nothing is booked twice.
    booked = await count(books_db, "SELECT count(*) FROM accounting.facts")
    books.signal(signal.SIGKILL)
    books.wait()
    books.start()
    await until(parked)
    assert await count(books_db, "SELECT count(*) FROM accounting.facts") == booked

    # The operator republishes the partition from the lost fact on: the books heal.
    republish_env = {**books.env, "WALLET_PG_DSN": stack.dsn, "WALLET_REPUBLISH_RATE": "500"}
    args = ("--partition", str(lost["partition"]), "--from-seq", str(lost["seq"]))
    done = cli("ledger.republish", *args, env=republish_env)
    assert f"partition {lost['partition']}: republished" in done.stderr  # the progress line
    assert done.stdout.startswith("republished ")
    await books_equal_ledger(books_db, stack.dsn)
    await wait_ready(books)
    assert await metric(books, "accounting_parked_facts") == 0
    # Again: every fact of the second republish is a duplicate.
    duplicates = await metric(books, "accounting_duplicate_facts_total")
    cli("ledger.republish", *args, env=republish_env)
    again = len(
        [r for r in rows if r["partition"] == lost["partition"] and r["seq"] >= lost["seq"]]
    )

    async def all_duplicates() -> bool:
        return await metric(books, "accounting_duplicate_facts_total") >= duplicates + again

    await until(all_duplicates)
    await books_equal_ledger(books_db, stack.dsn)
    assert await count(books_db, "SELECT count(*) FROM accounting.facts") == len(rows)
    books.stop()


async def test_a_restart_mid_stream_books_every_fact_once(
    stack: Stack, traffic: None, books_db: str, facts_prefix: str
) -> None:
    rows = await outbox(stack.dsn)
    half = len(rows) // 2
    await produce(facts_prefix, rows[:half])
    env = {
        "WALLET_ACCOUNTING_PG_DSN": books_db,
        "WALLET_TOPIC_PREFIX": facts_prefix,
        "WALLET_ACCOUNTING_MAX_BATCH": "7",
    }
    books = stack.add("accounting", "WALLET_ACCOUNTING_PORT", **env)
    books.start()

    async def some_booked() -> bool:
        return await count(books_db, "SELECT count(*) FROM accounting.facts") > 0

    await until(some_booked)
    books.signal(signal.SIGKILL)  # mid-stream: no goodbye
    books.wait()
    # The rest arrives, and the first half again (the ledger republishing after a takeover).
    await produce(facts_prefix, rows[half:] + rows[:half])
    books.start()
    await wait_ready(books)
    await books_equal_ledger(books_db, stack.dsn)

    async def all_read() -> bool:
        return await count(books_db, "SELECT count(*) FROM accounting.facts") == len(rows)

    await until(all_read)
    assert await count(books_db, "SELECT count(DISTINCT event_id) FROM accounting.facts") == len(
        rows
    )
    books.stop()
