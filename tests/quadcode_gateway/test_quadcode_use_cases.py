"""The README's use cases for external balances, end to end against the simulator process."""

from __future__ import annotations

import asyncio
import sys
from decimal import Decimal

import aiohttp
import orjson
import pytest

from quadcode_gateway import (
    CountryRestricted,
    CustomerBlocked,
    NewCustomer,
    TradingBalance,
    TradingRoomStatus,
    Visit,
    open_trading_room,
)
from quadcode_harness import REPO, ClientFactory, FakeWallet, SimulatorHooks

pytestmark = pytest.mark.integration

ANNA = NewCustomer(customer_id="anna-7", country_code="DE", ip="203.0.113.7", email="anna@ex.com")
USD = TradingBalance(balance_id="1234_USD", currency_code="USD")
VISIT = Visit(country_code="DE", ip="203.0.113.7", locale="en_US", site_domain="trade.example.com")


def calls(exchanges: list[dict[str, object]]) -> list[tuple[object, object, object]]:
    return [(e["method"], e["path"], e["status"]) for e in exchanges]


async def test_first_open_creates_the_customer_and_asks_again_once(
    sim: SimulatorHooks, make_client: ClientFactory, http: aiohttp.ClientSession
) -> None:
    outcome = await open_trading_room(make_client(), ANNA, USD, VISIT)
    assert outcome.status is TradingRoomStatus.URL
    assert outcome.customer_created is True
    assert outcome.user_message == ""
    assert calls(await sim.exchanges()) == [
        ("POST", "/v1/b2b-gateway/customers/anna-7/session", 404),
        ("POST", "/v1/b2b-gateway/customers", 201),
        ("POST", "/v1/b2b-gateway/customers/anna-7/session", 201),
    ]
    # The one-time URL opens the (simulated) trading room once.
    assert outcome.url is not None
    assert outcome.url.startswith(f"http://127.0.0.1:{sim.process.port}/traderoom?token=")
    async with http.get(outcome.url) as first:
        assert first.status == 200
    async with http.get(outcome.url) as second:
        assert second.status == 410


async def test_repeat_open_is_a_single_call(
    sim: SimulatorHooks, make_client: ClientFactory
) -> None:
    client = make_client()
    await open_trading_room(client, ANNA, USD, VISIT)
    await sim.reset()
    await client.create_customer(ANNA)
    outcome = await open_trading_room(client, ANNA, USD, VISIT)
    assert outcome.status is TradingRoomStatus.URL
    assert outcome.customer_created is False
    assert calls(await sim.exchanges())[1:] == [
        ("POST", "/v1/b2b-gateway/customers/anna-7/session", 201)
    ]


async def test_user_from_restricted_country_is_told_so(
    sim: SimulatorHooks, make_client: ClientFactory
) -> None:
    client = make_client()
    await client.create_customer(ANNA)
    from_us = Visit(country_code="US", ip="198.51.100.4", locale="en_US", site_domain="t.ex.com")
    outcome = await open_trading_room(client, ANNA, USD, from_us)
    assert outcome.status is TradingRoomStatus.COUNTRY_RESTRICTED
    assert outcome.user_message == "Sorry. Your current country is not allowed access."
    assert isinstance(outcome.error, CountryRestricted)
    assert calls(await sim.exchanges())[-1][2] == 451


async def test_new_customer_from_restricted_country_is_told_so_without_looping(
    sim: SimulatorHooks, make_client: ClientFactory
) -> None:
    sam = NewCustomer(customer_id="sam-1", country_code="US", ip="198.51.100.4", email="s@ex.us")
    from_us = Visit(country_code="US", ip="198.51.100.4", locale="en_US", site_domain="t.ex.com")
    outcome = await open_trading_room(make_client(), sam, USD, from_us)
    assert outcome.status is TradingRoomStatus.COUNTRY_RESTRICTED
    assert [status for *_, status in calls(await sim.exchanges())] == [404, 451]


async def test_restricted_currency_is_its_own_outcome(make_client: ClientFactory) -> None:
    client = make_client()
    await client.create_customer(ANNA)
    jpy = TradingBalance(balance_id="77_JPY", currency_code="JPY")
    outcome = await open_trading_room(client, ANNA, jpy, VISIT)
    assert outcome.status is TradingRoomStatus.CURRENCY_RESTRICTED
    assert "currency" in outcome.user_message


async def test_blocked_user_is_told_the_account_is_blocked(
    sim: SimulatorHooks, make_client: ClientFactory
) -> None:
    client = make_client()
    await client.create_customer(ANNA)
    await client.block_customer(ANNA.customer_id)
    outcome = await open_trading_room(client, ANNA, USD, VISIT)
    assert outcome.status is TradingRoomStatus.BLOCKED
    assert outcome.user_message == "Sorry. Your account is blocked."
    assert isinstance(outcome.error, CustomerBlocked)


async def test_second_404_is_an_error_not_a_loop(
    sim: SimulatorHooks, make_client: ClientFactory
) -> None:
    await sim.force(status=404, path="/session", times=5)
    outcome = await open_trading_room(make_client(), ANNA, USD, VISIT)
    assert outcome.status is TradingRoomStatus.ERROR
    assert outcome.customer_created is True
    assert [status for *_, status in calls(await sim.exchanges())] == [404, 201, 404]


async def test_customer_created_concurrently_is_not_an_error(
    sim: SimulatorHooks, make_client: ClientFactory
) -> None:
    client = make_client()
    await client.create_customer(ANNA)
    await sim.force(status=404, path="/session", times=1)  # stale 404, then "exists"
    outcome = await open_trading_room(client, ANNA, USD, VISIT)
    assert outcome.status is TradingRoomStatus.URL
    assert outcome.customer_created is False


async def test_gateway_down_is_an_error_outcome(
    sim: SimulatorHooks, make_client: ClientFactory
) -> None:
    await sim.force(status=500, path="/session", times=10)
    outcome = await open_trading_room(make_client(), ANNA, USD, VISIT)
    assert outcome.status is TradingRoomStatus.ERROR
    assert outcome.url is None
    assert "try again" in outcome.user_message


async def test_open_the_room_then_trade_against_the_wallet(
    sim: SimulatorHooks, make_client: ClientFactory, fake_wallet: FakeWallet
) -> None:
    fake_wallet.balances[("anna-7", "1234_USD")] = ("USD", Decimal("100.00"))
    fake_wallet.drop_first = {"debit"}
    fake_wallet.drop_for = 1.0
    outcome = await open_trading_room(make_client(), ANNA, USD, VISIT)
    assert outcome.status is TradingRoomStatus.URL

    status, report = await sim.trade(
        customer_id="anna-7",
        balance_id="1234_USD",
        currency_code="USD",
        trades=3,
        stake="1.00",
        wallet_base_url=fake_wallet.base_url,
        wallet_timeout=0.4,
    )
    assert status == 200, report
    assert report["balance_before"] == "100.00"
    # Three stakes of 1.00 out; two wins paying 1.80 each back.
    assert report["balance_after"] == "100.60"
    assert fake_wallet.balances[("anna-7", "1234_USD")] == ("USD", Decimal("100.60"))
    first_debit = report["trades"][0]["debit"]
    assert first_debit["attempts"] == ["timeout", 201]
    assert [t["outcome"] for t in report["trades"]] == ["win", "loss", "win"]
    # The retry carried the same request_id, and the wallet applied the debit once.
    debit_ids = [s["request_id"] for s in fake_wallet.seen if s["operation"] == "debit"]
    assert debit_ids.count(first_debit["request_id"]) == 2
    assert len(set(debit_ids)) == 3
    # One Quadcode token for the whole run (reused while valid).
    assert len(set(fake_wallet.tokens)) == 1


async def test_trading_needs_an_open_room(sim: SimulatorHooks, make_client: ClientFactory) -> None:
    await make_client().create_customer(ANNA)
    status, body = await sim.trade(
        customer_id="anna-7",
        balance_id="1234_USD",
        currency_code="USD",
        trades=1,
        stake="1.00",
        wallet_base_url="http://127.0.0.1:9",
    )
    assert status == 409
    assert body["error"] == "no_open_session"


async def test_trade_cli_prints_the_report(
    sim: SimulatorHooks, make_client: ClientFactory, fake_wallet: FakeWallet
) -> None:
    fake_wallet.balances[("anna-7", "1234_USD")] = ("USD", Decimal("5.00"))
    await open_trading_room(make_client(), ANNA, USD, VISIT)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "simulators.quadcode",
        "trade",
        "--simulator-url",
        sim.base_url,
        "--customer-id",
        "anna-7",
        "--balance-id",
        "1234_USD",
        "--currency",
        "USD",
        "--trades",
        "2",
        "--stake",
        "2.50",
        "--wallet-base-url",
        fake_wallet.base_url,
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, stderr.decode()
    report = orjson.loads(stdout)
    assert report["balance_before"] == "5.00"
    # 5.00 - 2.50 + 4.50 (win) - 2.50 (loss) = 4.50
    assert report["balance_after"] == "4.50"
