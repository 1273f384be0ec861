"""Crashes and outages: the ledger stopped (503, then the retry gets the stored outcome) and the
ledger SIGKILLed under load (restarted, nothing lost or doubled)."""

from __future__ import annotations

import asyncio
import random
import signal
import uuid

import asyncpg
import pytest

from ledger.audit import audit
from wallet_clients import Answer, Operator, Wallet
from wallet_stack import Stack, wait_ready

pytestmark = pytest.mark.e2e


async def count_entries(stack: Stack, request_ids: list[str]) -> dict[str, int]:
    conn = await asyncpg.connect(stack.dsn)
    try:
        rows = await conn.fetch(
            "SELECT request_id, count(*) AS n FROM journal_entries WHERE request_id = ANY($1) "
            "GROUP BY request_id",
            request_ids,
        )
    finally:
        await conn.close()
    return {r["request_id"]: r["n"] for r in rows}


async def settled_audit(stack: Stack) -> dict[str, int]:
    """Audit once the projection has caught up (it is eventually consistent)."""
    conn = await asyncpg.connect(stack.dsn)
    try:
        for _ in range(100):
            result = await audit(conn)
            if result.ok:
                break
            await asyncio.sleep(0.1)
    finally:
        await conn.close()
    return result.failures


async def test_ledger_down_is_503_and_the_retry_gets_the_stored_outcome(
    stack: Stack, operator: Operator, wallet: Wallet
) -> None:
    customer, balance = await operator.customer_with_balance("USD", "10.00")
    stack.ledger.signal(signal.SIGTERM)
    assert stack.ledger.wait(30) == 0  # a clean stop

    queued = await wallet.debit(customer, balance, "4.00", request_id="while-down")

    stack.ledger.start()
    await wait_ready(stack.ledger)
    retried = await wallet.debit(customer, balance, "4.00", request_id="while-down")
    for _ in range(15):  # the rebalance after a restart may take a few seconds
        if retried.status != 503:
            break
        retried = await wallet.debit(customer, balance, "4.00", request_id="while-down")

    assert (queued.status, queued.json["error"]) == (503, "ledger_timeout")
    assert retried.status == 201 and retried.json["balance_current_amount"] == "6.00"
    assert await count_entries(stack, ["while-down"]) == {"while-down": 1}


async def call_until_definitive(
    wallet: Wallet, kind: str, customer: str, balance: str, request_id: str, amount: str
) -> Answer:
    """Quadcode's behaviour: retry with the same request_id until the answer is not a 5xx."""
    for _ in range(200):
        try:
            answer = await (wallet.debit if kind == "debit" else wallet.credit)(
                customer, balance, amount, request_id=request_id
            )
        except OSError:
            await asyncio.sleep(0.1)
            continue
        if answer.status < 500:
            return answer
        await asyncio.sleep(0.1)
    raise AssertionError(f"{request_id} never got a definitive answer")


async def test_ledger_killed_mid_stream_loses_and_doubles_nothing(
    stack: Stack, operator: Operator, wallet: Wallet
) -> None:
    rng = random.Random(7)
    accounts = [await operator.customer_with_balance("USD", "20.00") for _ in range(10)]
    plan = [
        (
            rng.choice(["debit", "debit", "credit"]),
            *rng.choice(accounts),
            uuid.uuid4().hex,
            f"{rng.randint(1, 300) / 100:.2f}",
        )
        for _ in range(400)
    ]
    limiter = asyncio.Semaphore(32)
    answered = 0

    async def run(kind: str, customer: str, balance: str, request_id: str, amount: str) -> Answer:
        nonlocal answered
        async with limiter:
            answer = await call_until_definitive(
                wallet, kind, customer, balance, request_id, amount
            )
            answered += 1
            return answer

    async def killer() -> None:
        while answered < 100:
            await asyncio.sleep(0.01)
        stack.ledger.signal(signal.SIGKILL)
        stack.ledger.wait(10)
        await asyncio.sleep(0.5)
        stack.ledger.start()

    async with asyncio.timeout(180):
        results, _ = await asyncio.gather(asyncio.gather(*(run(*item) for item in plan)), killer())

    assert stack.ledger.proc is not None and stack.ledger.proc.poll() is None
    entries = await count_entries(stack, [item[3] for item in plan])
    for item, answer in zip(plan, results, strict=True):
        expected = 1 if answer.status == 201 else 0
        assert entries.get(item[3], 0) == expected, (item, answer)
    assert {a.status for a in results} <= {201, 402}
    assert await settled_audit(stack) == {}
