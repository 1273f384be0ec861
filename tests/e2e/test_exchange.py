"""Exchanges end to end: the operator API (and the CLI) driving real orders at the Swapgate
simulator, booked by the real ledger on Kafka and Postgres. Completed, refunded, the ledger
SIGKILLed between reserve and settle, the operator API SIGKILLed mid-exchange, two exchanges
racing for the same funds, bad input; the audit (conservation per currency included) is clean
after each."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest

from ledger.audit import audit
from ledger_core.money import to_minor
from quadcode_gateway import generate_keypair
from wallet_clients import Answer, Operator, Wallet
from wallet_stack import Service, Stack, free_port, wait_ready

pytestmark = pytest.mark.e2e

SECRET = "operator-secret-" + "e" * 32
SWAPGATE_PUBLIC, SWAPGATE_SECRET = "exchange-test-public-key", "exchange-test-secret-key"
STEP_S = 1.0  # time a simulated order spends in each stage
MARKUP = "0.3"
PAYOUT = "BTC:bc1q-treasury,USDT:T-treasury,ETH:0xtreasury"


def _listening_port(log_path: Path, process: subprocess.Popen[bytes]) -> int:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"simulator exited early:\n{log_path.read_text()}")
        for line in log_path.read_text().splitlines():
            if line.startswith("{") and orjson.loads(line).get("event") == "listening":
                return int(orjson.loads(line)["port"])
        time.sleep(0.05)
    raise RuntimeError(f"simulator did not start:\n{log_path.read_text()}")


@pytest.fixture(scope="module")
def swapgate(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The Swapgate simulator as a process, with our API key seeded."""
    log_path = tmp_path_factory.mktemp("swapgate") / "simulator.log"
    command = [
        sys.executable, "-m", "simulators.swapgate", "--host", "127.0.0.1", "--port", "0",
        "--step-s", str(STEP_S), "--platform-pct", "1", "--affiliate-pct", "20",
    ]  # fmt: skip
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=os.environ)
    try:
        url = f"http://127.0.0.1:{_listening_port(log_path, process)}"
        body = {"name": "wallet", "publicKey": SWAPGATE_PUBLIC, "secretKey": SWAPGATE_SECRET}
        import urllib.request

        request = urllib.request.Request(
            f"{url}/_sim/keys",
            data=orjson.dumps(body),
            headers={"content-type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=5):
            pass
        yield url
    finally:
        process.terminate()
        process.wait(10)


def exchange_env(stack: Stack, swapgate: str) -> dict[str, str]:
    """Settings of the exchange orchestration, for the operator API and the CLI."""
    return stack.env() | {
        "WALLET_SWAPGATE_BASE_URL": swapgate,
        "WALLET_SWAPGATE_PUBLIC_KEY": SWAPGATE_PUBLIC,
        "WALLET_SWAPGATE_SECRET_KEY": SWAPGATE_SECRET,
        "WALLET_SWAPGATE_MARKUP": MARKUP,
        "WALLET_SWAPGATE_PAYOUT_ADDRESSES": PAYOUT,
        "WALLET_EXCHANGE_LEDGER_TIMEOUT": "2",
        "WALLET_EXCHANGE_POLL_INITIAL": "0.1",
        "WALLET_EXCHANGE_POLL_MAX": "0.3",
        "WALLET_EXCHANGE_RESUME_INTERVAL": "1",
    }


@pytest.fixture(scope="module")
async def api(
    stack: Stack, swapgate: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Service]:
    directory = tmp_path_factory.mktemp("operator-api-exchange")
    generate_keypair(directory / "ours-private.pem", directory / "ours-public.pem")
    token = directory / "operator-token"
    token.write_text(SECRET)
    port = free_port()
    env = exchange_env(stack, swapgate) | {
        "WALLET_OPERATOR_API_PORT": str(port),
        "WALLET_OPERATOR_API_TOKEN_FILE": str(token),
        # Required by the trading room, unused here.
        "WALLET_QUADCODE_BASE_URL": "http://127.0.0.1:9",
        "WALLET_QUADCODE_ISSUER": "test",
        "WALLET_QUADCODE_ENVIRONMENT": "sandbox",
        "WALLET_QUADCODE_PRIVATE_KEY_PATH": str(directory / "ours-private.pem"),
    }
    service = Service("operator_api", port, env, directory / "operator_api.log")
    stack.services["operator_api"] = service
    service.start()
    await wait_ready(service, timeout=60)
    yield service
    service.stop()


class Exchanges:
    """The website's side of the exchange endpoints."""

    def __init__(self, http: aiohttp.ClientSession, api: Service) -> None:
        self.http = http
        self.api = api

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {SECRET}"}

    async def start(
        self, customer: str, body: dict[str, Any] | bytes, *, headers: dict[str, str] | None = None
    ) -> Answer:
        data = body if isinstance(body, bytes) else orjson.dumps(body)
        async with self.http.post(
            f"{self.api.url}/v1/customers/{customer}/exchanges",
            data=data,
            headers=self.headers() if headers is None else headers,
        ) as resp:
            return Answer(resp.status, await resp.read())

    async def get(self, customer: str, exchange_id: str) -> Answer:
        async with self.http.get(
            f"{self.api.url}/v1/customers/{customer}/exchanges/{exchange_id}",
            headers=self.headers(),
        ) as resp:
            return Answer(resp.status, await resp.read())

    async def wait_for(
        self, customer: str, exchange_id: str, states: set[str], timeout: float = 60
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        view: dict[str, Any] = {}
        while time.monotonic() < deadline:
            answer = await self.get(customer, exchange_id)
            if answer.status == 200:
                view = answer.json
                if view["state"] in states:
                    return view
            await asyncio.sleep(0.05)
        raise AssertionError(f"exchange never reached {states}: {view}")


@pytest.fixture(scope="module")
async def exchanges(http: aiohttp.ClientSession, api: Service) -> Exchanges:
    return Exchanges(http, api)


async def funded_customer(operator: Operator, usdt: str = "100") -> str:
    customer, _ = await operator.customer_with_balance("USDT", usdt)
    from ledger_core.commands import OpenBalance

    answer = await operator.send(OpenBalance(customer, f"{customer}_BTC", "BTC", uuid.uuid4().hex))
    assert answer.status == 201
    return customer


def request(customer: str, amount: str = "60", exchange_id: str | None = None) -> dict[str, str]:
    return {
        "exchange_id": exchange_id or "x-" + uuid.uuid4().hex[:12],
        "source_balance_id": f"{customer}_USDT",
        "target_balance_id": f"{customer}_BTC",
        "amount": amount,
        "currency_code": "USDT",
        "target_currency_code": "BTC",
    }


async def clean_audit(stack: Stack) -> None:
    """The audit, once the projection has caught up; and conservation spelled out per currency."""
    conn = await asyncpg.connect(stack.dsn)
    try:
        for _ in range(100):
            result = await audit(conn)
            if result.ok:
                break
            await asyncio.sleep(0.1)
        assert result.failures == {}
        sums = await conn.fetch(
            """SELECT a.currency, sum(p.amount) AS total FROM postings p
                 JOIN accounts a USING (account_id) GROUP BY a.currency"""
        )
        assert {r["currency"]: int(r["total"]) for r in sums} == dict.fromkeys(
            (r["currency"] for r in sums), 0
        )
    finally:
        await conn.close()


async def exchange_entries(stack: Stack, exchange_id: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(stack.dsn)
    try:
        rows: list[asyncpg.Record] = await conn.fetch(
            """SELECT e.entry_id, e.order_id, a.kind, a.balance_id, a.currency, p.amount
                 FROM journal_entries e JOIN postings p USING (entry_id)
                 JOIN accounts a USING (account_id)
                WHERE e.kind = 'exchange' AND e.request_id = $1 ORDER BY p.amount""",
            exchange_id,
        )
        return rows
    finally:
        await conn.close()


async def test_a_completed_exchange_holds_the_amount_then_posts_both_legs(
    stack: Stack, operator: Operator, exchanges: Exchanges, wallet: Wallet
) -> None:
    customer = await funded_customer(operator)
    body = request(customer, "60")
    started = await exchanges.start(customer, body)
    assert started.status == 202, started.body
    assert started.json["state"] in ("reserved", "ordering", "ordered")

    # The hold is immediate: Quadcode sees (and may spend) only the available amount.
    held = await wallet.read_eventually(customer, f"{customer}_USDT", "40.000000")
    assert held.json["amount"] == "40.000000"
    refused = await wallet.debit(customer, f"{customer}_USDT", "40.01", currency="USDT")
    assert (refused.status, refused.json["error"]) == (402, "insufficient_funds")

    view = await exchanges.wait_for(customer, body["exchange_id"], {"settled"})
    settlement = view["settlement"]
    assert view["order_id"] and view["ledger"]["status"] == 201
    assert settlement["order_status"] == "completed"
    assert settlement["paid"] == format(Decimal(settlement["exact"]["amount_paid_out"]), ".8f")

    entries = await exchange_entries(stack, body["exchange_id"])
    assert {r["order_id"] for r in entries} == {view["order_id"]}
    assert len({r["entry_id"] for r in entries}) == 1
    legs = {(r["kind"], r["currency"]): int(r["amount"]) for r in entries}
    paid = to_minor(settlement["paid"], "BTC")
    assert legs[("customer", "USDT")] == -60_000000
    assert legs[("exchange_clearing", "USDT")] == 60_000000
    assert legs[("customer", "BTC")] == paid
    assert legs[("markup_revenue", "BTC")] == to_minor(settlement["markup_revenue"], "BTC")
    assert legs[("affiliate_margin", "BTC")] == to_minor(settlement["affiliate_margin"], "BTC")
    assert legs[("exchange_clearing", "BTC")] == -sum(
        to_minor(settlement[k], "BTC")
        for k in ("paid", "markup_revenue", "affiliate_margin", "rounding")
    )
    usdt = await wallet.read_eventually(customer, f"{customer}_USDT", "40.000000")
    btc = await wallet.read_eventually(customer, f"{customer}_BTC", settlement["paid"])
    assert (usdt.json["amount"], btc.json["amount"]) == ("40.000000", settlement["paid"])

    # The same request again: the same exchange, not a second one.
    again = await exchanges.start(customer, body)
    assert (again.status, again.json["state"]) == (202, "settled")
    await clean_audit(stack)


async def test_a_refunded_exchange_releases_the_hold_and_moves_nothing(
    stack: Stack,
    operator: Operator,
    exchanges: Exchanges,
    wallet: Wallet,
    http: aiohttp.ClientSession,
    swapgate: str,
) -> None:
    customer = await funded_customer(operator)
    body = request(customer, "25")
    assert (await exchanges.start(customer, body)).status == 202
    ordered = await exchanges.wait_for(customer, body["exchange_id"], {"ordered"})
    async with http.post(
        f"{swapgate}/_sim/orders/{ordered['order_id']}/ending",
        json={"ending": "refunded", "reason": "deposit not accepted"},
    ) as resp:
        assert resp.status == 200, await resp.text()

    view = await exchanges.wait_for(customer, body["exchange_id"], {"voided"})
    assert view["settlement"]["order_status"] == "refunded"
    assert view["ledger"]["body"]["reason"] == "order refunded: deposit not accepted"
    assert await exchange_entries(stack, body["exchange_id"]) == []
    usdt = await wallet.read_eventually(customer, f"{customer}_USDT", "100.000000")
    assert usdt.json["amount"] == "100.000000"
    await clean_audit(stack)


async def test_two_exchanges_racing_for_the_same_funds_one_is_refused(
    stack: Stack, operator: Operator, exchanges: Exchanges
) -> None:
    customer = await funded_customer(operator)
    first, second = request(customer, "70"), request(customer, "70")
    answers = await asyncio.gather(
        exchanges.start(customer, first), exchanges.start(customer, second)
    )
    statuses = sorted(a.status for a in answers)
    assert statuses == [202, 402], [a.body for a in answers]
    loser = next(a for a in answers if a.status == 402)
    assert loser.json["error"] == "insufficient_funds"
    assert loser.json["exchange"]["state"] == "refused"
    winner, refused = (first, second) if answers[0].status == 202 else (second, first)
    await exchanges.wait_for(customer, winner["exchange_id"], {"settled"})
    # The refusal is kept: the loser's retry gets it again (a new exchange needs a new id).
    retried = await exchanges.start(customer, refused)
    assert (retried.status, retried.json["error"]) == (402, "insufficient_funds")
    await clean_audit(stack)


async def test_the_ledger_killed_between_reserve_and_settle_finishes_exactly_once(
    stack: Stack, operator: Operator, exchanges: Exchanges
) -> None:
    customer = await funded_customer(operator)
    body = request(customer, "30")
    assert (await exchanges.start(customer, body)).status == 202
    await exchanges.wait_for(customer, body["exchange_id"], {"ordered"})

    stack.ledger.signal(signal.SIGKILL)
    stack.ledger.wait(10)
    # The order completes meanwhile; the settlement is sent to a ledger that is not there.
    await exchanges.wait_for(customer, body["exchange_id"], {"settling"})
    await asyncio.sleep(3)  # at least one attempt timed out and was sent again
    stack.ledger.start()
    await wait_ready(stack.ledger)

    view = await exchanges.wait_for(customer, body["exchange_id"], {"settled"}, timeout=90)
    assert view["ledger"]["status"] == 201
    entries = await exchange_entries(stack, body["exchange_id"])
    assert len({r["entry_id"] for r in entries}) == 1
    conn = await asyncpg.connect(stack.dsn)
    try:
        outcomes = await conn.fetchval(
            "SELECT count(*) FROM idempotency WHERE request_id = $1", body["exchange_id"]
        )
        reservation = await conn.fetchval(
            "SELECT status FROM exchange_reservations WHERE exchange_id = $1", body["exchange_id"]
        )
    finally:
        await conn.close()
    assert (outcomes, reservation) == (2, "settled")  # one reserve, one settle
    await clean_audit(stack)


async def test_the_operator_api_killed_mid_exchange_is_resumed_after_a_restart(
    stack: Stack, operator: Operator, exchanges: Exchanges, api: Service
) -> None:
    customer = await funded_customer(operator)
    body = request(customer, "20")
    assert (await exchanges.start(customer, body)).status == 202
    await exchanges.wait_for(customer, body["exchange_id"], {"ordered"})
    api.signal(signal.SIGKILL)
    api.wait(10)
    api.start()
    await wait_ready(api)
    view = await exchanges.wait_for(customer, body["exchange_id"], {"settled"})
    assert len({r["entry_id"] for r in await exchange_entries(stack, body["exchange_id"])}) == 1
    assert view["ledger"]["status"] == 201
    await clean_audit(stack)


async def test_the_cli_runs_an_exchange_to_its_end(
    stack: Stack, operator: Operator, swapgate: str
) -> None:
    customer = await funded_customer(operator)
    exchange_id = "cli-" + uuid.uuid4().hex[:8]
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "exchange", "start", customer, f"{customer}_USDT", f"{customer}_BTC",
        "15", "USDT", "BTC", "--exchange-id", exchange_id,
        env=exchange_env(stack, swapgate), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stdout, stderr = await asyncio.wait_for(process.communicate(), 90)
    assert process.returncode == 0, (stdout, stderr)
    # The operator API's resumer may drive it too (any runner may): the CLI follows it anyway.
    states = [orjson.loads(line)["state"] for line in stdout.splitlines()]
    assert states[-1] == "settled", states
    order = ["reserving", "reserved", "ordering", "ordered", "settling", "settled"]
    assert [order.index(s) for s in states] == sorted(order.index(s) for s in states), states
    await clean_audit(stack)


def changed(**fields: str) -> Any:
    return lambda customer: orjson.dumps(request(customer) | fields)


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (lambda _: b"not json", 400, "malformed_json"),
        (lambda _: b"[]", 400, "malformed_json"),
        (lambda _: b'{"amount": "1"}', 400, "invalid_field"),
        (changed(surprise="x"), 400, "invalid_field"),
        (lambda c: orjson.dumps(request(c) | {"amount": 60}), 400, "invalid_field"),
        (changed(amount="-1"), 400, "invalid_amount"),
        (changed(amount="1.0000001"), 400, "invalid_amount"),
        (changed(amount="1" * 20), 400, "amount_too_large"),
        (changed(currency_code="XYZ"), 400, "unknown_currency"),
        (changed(target_currency_code="USDT"), 400, "exchange_not_supported"),
        (changed(target_currency_code="EUR"), 400, "exchange_not_supported"),
        (changed(exchange_id=""), 400, "invalid_id"),
        (
            lambda c: orjson.dumps(request(c) | {"target_balance_id": f"{c}_USDT"}),
            400,
            "invalid_field",
        ),
        (changed(amount="5"), 422, "amount_out_of_range"),  # below Swapgate's 10 USDT minimum
        (changed(currency_code="ETH"), 400, "currency_mismatch"),  # the ledger: not that balance's
    ],
)
async def test_bad_input_is_a_clear_error_and_changes_nothing(
    stack: Stack, operator: Operator, exchanges: Exchanges, body: Any, status: int, code: str
) -> None:
    customer = await funded_customer(operator)
    answer = await exchanges.start(customer, body(customer))
    assert (answer.status, answer.json["error"]) == (status, code), answer.body
    assert answer.json["message"]
    conn = await asyncpg.connect(stack.dsn)
    try:
        held = await conn.fetchval(
            "SELECT count(*) FROM exchange_reservations WHERE customer_id = $1", customer
        )
    finally:
        await conn.close()
    assert held == 0


async def test_refusals_by_the_ledger_and_by_the_api(
    stack: Stack, operator: Operator, exchanges: Exchanges
) -> None:
    unknown = await exchanges.start("nobody-" + uuid.uuid4().hex[:6], request("nobody"))
    assert (unknown.status, unknown.json["error"]) == (404, "customer_not_found")
    customer = await funded_customer(operator)
    body = request(customer, "50")
    assert (await exchanges.start(customer, body)).status == 202
    reused = await exchanges.start(customer, body | {"amount": "51"})
    assert (reused.status, reused.json["error"]) == (409, "request_id_reused")
    missing = await exchanges.get(customer, "no-such-exchange")
    assert (missing.status, missing.json["error"]) == (404, "exchange_not_found")
    no_token = await exchanges.start(customer, body, headers={})
    assert (no_token.status, no_token.json["error"]) == (403, "missing_token")
    await exchanges.wait_for(customer, body["exchange_id"], {"settled"})
    await clean_audit(stack)


async def test_an_order_with_no_clear_answer_keeps_the_hold_until_a_person_resolves_it(
    stack: Stack,
    operator: Operator,
    exchanges: Exchanges,
    wallet: Wallet,
    http: aiohttp.ClientSession,
    swapgate: str,
) -> None:
    customer = await funded_customer(operator)
    body = request(customer, "35")
    fault = {"status": 503, "count": 1, "pathPrefix": "/api/v2/orders/public/create"}
    async with http.post(f"{swapgate}/_sim/faults", json=fault) as resp:
        assert resp.status == 201
    assert (await exchanges.start(customer, body)).status == 202
    view = await exchanges.wait_for(customer, body["exchange_id"], {"attention"})
    assert "may or may not exist" in view["detail"] and view["order_id"] is None
    # Never created again blindly; the amount stays held meanwhile.
    await asyncio.sleep(2.5)  # two resume intervals
    assert (await exchanges.get(customer, body["exchange_id"])).json["state"] == "attention"
    held = await wallet.read_eventually(customer, f"{customer}_USDT", "65.000000")
    assert held.json["amount"] == "65.000000"

    # Someone checked Swapgate: there is no such order. The hold is released.
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "exchange", "resolve", customer, body["exchange_id"],
        "--void", "no order at Swapgate (checked by ops)",
        env=exchange_env(stack, swapgate), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, (stdout, stderr)
    assert orjson.loads(stdout.splitlines()[-1])["state"] == "voided"
    released = await wallet.read_eventually(customer, f"{customer}_USDT", "100.000000")
    assert released.json["amount"] == "100.000000"
    await clean_audit(stack)
