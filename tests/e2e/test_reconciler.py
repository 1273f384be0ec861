"""The reconciler as a process beside the ledger, the projection and the accounting consumer, on
real Kafka and Postgres: every check passes after callbacks; a projection made to drift fails
the projection check (/ready 503 naming the balance, and a log line) until a rebuild; a drifted
book row fails the books check; a committed fact kept off the topic fails the unpublished check
after its bound, until the ledger republishes it."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import asyncpg
import orjson
import pytest

from wallet_clients import Operator, Wallet
from wallet_stack import Service, Stack, wait_ready

pytestmark = pytest.mark.e2e

INTERVAL = "0.5"
UNPUBLISHED_BOUND = "2"


async def ready(service: Service) -> tuple[int, dict[str, object]]:
    async with aiohttp.ClientSession() as http, http.get(service.ops_url + "/ready") as resp:
        return resp.status, orjson.loads(await resp.read())


async def metric(service: Service, sample: str) -> float | None:
    async with aiohttp.ClientSession() as http, http.get(service.ops_url + "/metrics") as resp:
        text = await resp.text()
    for row in text.splitlines():
        if row.startswith(sample + " "):
            return float(row.split()[1])
    return None


async def until(check: Callable[[], Awaitable[bool]], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if await check():
                return
        except aiohttp.ClientError:  # still starting
            pass
        await asyncio.sleep(0.2)
    raise AssertionError(f"not reached in {timeout}s: {check}")


async def execute(dsn: str, sql: str, *args: object) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(sql, *args)
    finally:
        await conn.close()


async def difference_of(reconciler: Service, check: str) -> dict[str, object] | None:
    """The first difference /ready shows for ``check`` once it answers 503 for it, else None."""
    status, body = await ready(reconciler)
    detail = body["details"][check]  # type: ignore[index]
    if status == 503 and body["checks"][check] is False:  # type: ignore[index]
        return detail.get("difference")  # type: ignore[no-any-return]
    return None


def logged_mismatches(reconciler: Service, check: str) -> list[dict[str, object]]:
    lines = reconciler.log_path.read_bytes().splitlines()
    events = [orjson.loads(line) for line in lines if line.startswith(b"{")]
    return [
        e for e in events if e.get("event") == "reconciliation_mismatch" and e.get("check") == check
    ]


@pytest.fixture(scope="module")
async def customers(operator: Operator, wallet: Wallet) -> list[tuple[str, str]]:
    """A few funded customers with callbacks (several partitions carry facts)."""
    made = []
    for _ in range(4):
        customer, usd = await operator.customer_with_balance("USD", "100.00")
        for i in range(3):
            assert (await wallet.debit(customer, usd, f"{i + 1}.25")).status == 201
            assert (await wallet.credit(customer, usd, f"{i}.50")).status == 201
        made.append((customer, usd))
    return made


@pytest.fixture(scope="module")
async def reconciler(stack: Stack, customers: list[tuple[str, str]]) -> AsyncIterator[Service]:
    """The accounting consumer and the reconciler (short interval and unpublished bound)."""
    books = stack.add("accounting", "WALLET_ACCOUNTING_PORT")
    books.start()
    await wait_ready(books)
    service = stack.add(
        "reconciler",
        "WALLET_RECONCILER_PORT",
        WALLET_RECONCILER_INTERVAL_SECONDS=INTERVAL,
        WALLET_RECONCILER_UNPUBLISHED_SECONDS=UNPUBLISHED_BOUND,
    )
    service.start()
    yield service
    service.stop()
    books.stop()


async def all_ok(reconciler: Service) -> bool:
    status, body = await ready(reconciler)
    return status == 200 and body["details"]["books"]["status"] == "ok"  # type: ignore[index]


async def test_every_check_passes_after_callbacks(reconciler: Service) -> None:
    await until(lambda: all_ok(reconciler))
    _, body = await ready(reconciler)
    assert set(body["checks"]) == {  # type: ignore[arg-type]
        "fresh",
        "trial_balance",
        "projection",
        "books",
        "unpublished",
        "offsets",
    }
    assert await metric(reconciler, 'reconciler_check_ok{check="projection"}') == 1
    assert (await metric(reconciler, "reconciler_last_run_timestamp") or 0) > time.time() - 30
    async with aiohttp.ClientSession() as http, http.get(reconciler.ops_url + "/health") as resp:
        assert resp.status == 200


async def test_a_drifted_projection_fails_until_it_is_rebuilt(
    stack: Stack, reconciler: Service, customers: list[tuple[str, str]]
) -> None:
    await until(lambda: all_ok(reconciler))
    customer, balance = customers[1]
    await execute(
        stack.dsn,
        "UPDATE balance_view SET amount = amount + 1 WHERE customer_id = $1 AND balance_id = $2",
        customer,
        balance,
    )

    async def projection_fails() -> bool:
        return await difference_of(reconciler, "projection") is not None

    await until(projection_fails)
    difference = await difference_of(reconciler, "projection")
    assert difference is not None
    assert difference["reason"] == "amount_differs"
    assert (difference["customer_id"], difference["balance_id"]) == (customer, balance)
    assert int(str(difference["found"])) == int(str(difference["expected"])) + 1
    assert await metric(reconciler, 'reconciler_check_ok{check="projection"}') == 0
    logged = logged_mismatches(reconciler, "projection")
    assert logged and logged[-1]["customer_id"] == customer
    assert logged[-1]["expected"] == difference["expected"]
    # One round from the command line says the same and exits 1.
    once = subprocess.run(
        [sys.executable, "-m", "reconciler", "once"],
        env=reconciler.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert once.returncode == 1, once.stderr
    assert f"amount_differs: customer_id={customer} balance_id={balance}" in once.stdout

    # The rebuild: stop the projection, clear its read model, start it: it replays the facts.
    stack.projection.stop()
    done = subprocess.run(
        [sys.executable, "-m", "projection", "rebuild"],
        env=stack.projection.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    stack.projection.start()
    await wait_ready(stack.projection)
    await until(lambda: all_ok(reconciler))


async def test_a_drifted_book_row_fails_the_books_check(
    stack: Stack, reconciler: Service, customers: list[tuple[str, str]]
) -> None:
    await until(lambda: all_ok(reconciler))
    customer, balance = customers[2]
    conn = await asyncpg.connect(stack.dsn)
    try:
        account_id = await conn.fetchval(
            "SELECT account_id FROM accounts WHERE customer_id = $1 AND balance_id = $2",
            customer,
            balance,
        )
        await conn.execute(
            "UPDATE accounting.accounts SET balance = balance - 7 WHERE account_id = $1",
            account_id,
        )

        async def books_fail() -> bool:
            return await difference_of(reconciler, "books") is not None

        await until(books_fail)
        difference = await difference_of(reconciler, "books")
        assert difference is not None
        assert difference["reason"] == "balance_differs"
        assert difference["account_id"] == str(account_id)
        assert (difference["customer_id"], difference["balance_id"]) == (customer, balance)
        assert int(str(difference["found"])) == int(str(difference["expected"])) - 7
        assert logged_mismatches(reconciler, "books")[-1]["account_id"] == str(account_id)
    finally:
        await conn.execute(
            "UPDATE accounting.accounts SET balance = balance + 7 WHERE account_id = $1",
            account_id,
        )
        await conn.close()
    await until(lambda: all_ok(reconciler))


async def test_a_committed_fact_kept_off_the_topic_fails_after_the_bound_until_republished(
    stack: Stack, reconciler: Service, customers: list[tuple[str, str]]
) -> None:
    await until(lambda: all_ok(reconciler))
    # With the ledger stopped (it records how far it published as it stops), commit one more
    # fact the way its batch does: an outbox row and the partition's outbox_seq. The fact is a
    # copy of a customer.created under a new event id, harmless to every consumer.
    stack.ledger.signal(signal.SIGTERM)
    assert stack.ledger.wait() == 0
    customer, _ = customers[3]
    conn = await asyncpg.connect(stack.dsn)
    try:
        row = await conn.fetchrow(
            """SELECT o.partition, o.key, o.payload, lp.outbox_seq, lp.published_seq
                 FROM outbox o JOIN ledger_partitions lp USING (partition)
                WHERE o.key = $1 ORDER BY o.seq LIMIT 1""",
            customer,
        )
        assert row is not None and row["outbox_seq"] == row["published_seq"]
        fact = orjson.loads(row["payload"])
        assert fact["type"] == "customer.created"
        fact["event_id"] = str(uuid.uuid4())
        seq = row["outbox_seq"] + 1
        async with conn.transaction():
            await conn.execute(
                """INSERT INTO outbox (partition, seq, event_id, key, payload)
                   VALUES ($1, $2, $3, $4, $5)""",
                row["partition"],
                seq,
                uuid.UUID(fact["event_id"]),
                row["key"],
                orjson.dumps(fact),
            )
            await conn.execute(
                "UPDATE ledger_partitions SET outbox_seq = $2 WHERE partition = $1",
                row["partition"],
                seq,
            )
    finally:
        await conn.close()
    noticed = time.monotonic()

    async def unpublished_fails() -> bool:
        return await difference_of(reconciler, "unpublished") is not None

    await until(unpublished_fails)
    assert time.monotonic() - noticed >= float(UNPUBLISHED_BOUND)
    difference = await difference_of(reconciler, "unpublished")
    assert difference is not None
    assert difference["reason"] == "fact_not_published"
    assert (difference["partition"], difference["outbox_seq"]) == (row["partition"], seq)
    assert (await metric(reconciler, "reconciler_unpublished_facts") or 0) >= 1

    # The ledger takes its partitions over again and republishes what was not published.
    stack.ledger.start()
    await wait_ready(stack.ledger)
    await until(lambda: all_ok(reconciler))
