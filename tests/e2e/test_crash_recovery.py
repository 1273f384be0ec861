"""Crashes and outages: the ledger stopped (503, then the retry gets the stored outcome) and the
ledger SIGKILLed under load (restarted, nothing lost or doubled)."""

from __future__ import annotations

import asyncio
import signal

import pytest

from callback_load import CallbackLoad, assert_booked_exactly_once, count_entries, plan_calls
from wallet_clients import Operator, Wallet
from wallet_stack import Stack, wait_ready

pytestmark = pytest.mark.e2e


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


async def test_ledger_killed_mid_stream_loses_and_doubles_nothing(
    stack: Stack, operator: Operator, wallet: Wallet
) -> None:
    accounts = [await operator.customer_with_balance("USD", "20.00") for _ in range(10)]
    calls = plan_calls(accounts, 400)
    load = CallbackLoad(wallet, calls, concurrency=32)

    async def killer() -> None:
        await load.answered_at_least(100)
        stack.ledger.signal(signal.SIGKILL)
        stack.ledger.wait(10)
        await asyncio.sleep(0.5)
        stack.ledger.start()

    async with asyncio.timeout(180):
        answers, _ = await asyncio.gather(load.run(), killer())

    assert stack.ledger.proc is not None and stack.ledger.proc.poll() is None
    await assert_booked_exactly_once(stack, calls, answers)
