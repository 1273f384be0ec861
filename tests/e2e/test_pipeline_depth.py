"""The ledger without pipelining (WALLET_LEDGER_PIPELINE_DEPTH=1: each batch is decided only after
the previous write landed) gives the same answers as the default under concurrent load."""

from __future__ import annotations

import asyncio

import pytest

from wallet_clients import Operator, Wallet

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stack_env() -> dict[str, str]:
    return {"WALLET_LEDGER_PIPELINE_DEPTH": "1"}


async def test_concurrent_debits_and_credits_add_up_without_pipelining(
    operator: Operator, wallet: Wallet
) -> None:
    customer, balance = await operator.customer_with_balance("USD", "100.00")

    credits = await asyncio.gather(*(wallet.credit(customer, balance, "0.50") for _ in range(20)))
    debits = await asyncio.gather(*(wallet.debit(customer, balance, "1.00") for _ in range(150)))

    assert {a.status for a in credits} == {201}
    statuses = [a.status for a in debits]
    # 100.00 + 20 x 0.50 = 110.00 to spend: exactly 110 debits of 1.00 succeed.
    assert statuses.count(201) == 110 and statuses.count(402) == 40
    remaining = sorted(a.json["balance_current_amount"] for a in debits if a.status == 201)
    assert remaining[0] == "0.00" and len(set(remaining)) == 110
    assert (await wallet.read_eventually(customer, balance, "0.00")).json["amount"] == "0.00"
