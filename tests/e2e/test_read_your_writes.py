"""Read-your-writes: a GET that follows a 201 shows that write and every earlier one, through
the edge that answered the write and through another edge process, while other customers trade
at the same time."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest

from wallet_clients import Answer, Operator, Wallet
from wallet_stack import QuadcodeKey, Stack, wait_ready

pytestmark = pytest.mark.e2e

ROUNDS = 30  # per customer
CUSTOMERS = 8  # trading at once, over several partitions of ledger.events


@pytest.fixture(scope="module")
async def second_wallet(
    stack: Stack, http: aiohttp.ClientSession, quadcode_key: QuadcodeKey
) -> AsyncIterator[Wallet]:
    """Quadcode's calls through a second edge process of the same stack."""
    edge = stack.add(
        "edge",
        "WALLET_EDGE_PORT",
        WALLET_PROJECTION_URL=stack.projection.url,
        WALLET_EDGE_REPLY_PARTITION="1",
    )
    edge.start()
    try:
        await wait_ready(edge)
        yield Wallet(http, edge.url, quadcode_key)
    finally:
        edge.stop()


async def read_until_answered(reader: Wallet, customer: str, balance: str) -> tuple[Answer, int]:
    """A GET, retried after a 503 as Quadcode retries it (a 503 is never a stale balance; the
    projection answers it when it could not show itself current in time on a busy machine)."""
    refused = 0
    read = await reader.get(customer, balance)
    while read.status == 503 and refused < 5:
        refused += 1
        read = await reader.get(customer, balance)
    return read, refused


async def test_every_get_right_after_a_debit_shows_it_through_either_edge(
    operator: Operator, wallet: Wallet, second_wallet: Wallet
) -> None:
    accounts = [await operator.customer_with_balance("USD", "1000.00") for _ in range(CUSTOMERS)]
    # write edge, read edge: the same one, or the other one either way round
    routes = [(wallet, wallet), (wallet, second_wallet), (second_wallet, wallet)]
    refusals = 0

    async def trade(customer: str, balance: str) -> list[tuple[int, str, object]]:
        nonlocal refusals
        missed = []
        for i in range(ROUNDS):
            writer, reader = routes[i % len(routes)]
            debit = await writer.debit(customer, balance, "1.25")
            assert debit.status == 201, debit
            read, refused = await read_until_answered(reader, customer, balance)
            refusals += refused
            shown = read.json.get("amount") if read.status == 200 else read.json
            if shown != debit.json["balance_current_amount"]:
                missed.append((i, debit.json["balance_current_amount"], shown))
        return missed

    missed = await asyncio.gather(*(trade(c, b) for c, b in accounts))

    assert missed == [[] for _ in accounts]
    assert refusals <= CUSTOMERS * ROUNDS // 20  # the bound is for bad moments, not the rule


async def test_a_get_right_after_credits_and_an_operator_deposit_shows_all_of_them(
    operator: Operator, wallet: Wallet, second_wallet: Wallet
) -> None:
    customer, balance = await operator.customer_with_balance("USD", "10.00")

    assert (await wallet.credit(customer, balance, "5.00")).status == 201
    assert (await second_wallet.credit(customer, balance, "2.50")).status == 201
    await operator.deposit(customer, balance, "100.00")  # answered through ledger.replies too
    reads = [(await read_until_answered(w, customer, balance))[0] for w in (wallet, second_wallet)]

    assert [(r.status, r.json["amount"]) for r in reads] == [(200, "117.50")] * 2
