"""Exchanges end to end: the operator API (and the CLI) driving real orders at the Swapgate
simulator, booked by the real ledger on Kafka and Postgres. Completed, refunded, the ledger
SIGKILLed between reserve and settle, the operator API SIGKILLed mid-exchange, two exchanges
racing for the same funds, bad input; the audit (conservation per currency included) is clean
after each."""

from __future__ import annotations

import asyncio
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest

from callback_load import settled_audit
from exchange_stack import (
    Exchanges,
    exchange_env,
    funded_customer,
    start_operator_api,
    swapgate_simulator,
)
from exchange_stack import exchange_request as request
from ledger_core.money import to_minor
from operator_client import OperatorClient
from wallet_clients import Operator, Wallet
from wallet_stack import Service, Stack, wait_ready

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def swapgate(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The Swapgate simulator as a process, with our API key seeded."""
    with swapgate_simulator(tmp_path_factory.mktemp("swapgate") / "simulator.log") as url:
        yield url


@pytest.fixture(scope="module")
async def api(
    stack: Stack, swapgate: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Service]:
    directory = tmp_path_factory.mktemp("operator-api-exchange")
    service = await start_operator_api(stack, swapgate, directory)
    yield service
    service.stop()


@pytest.fixture(scope="module")
async def exchanges(http: aiohttp.ClientSession, api: Service) -> Exchanges:
    return Exchanges(http, api)


async def clean_audit(stack: Stack) -> None:
    """The audit, once the projection has caught up; and conservation spelled out per currency."""
    assert await settled_audit(stack) == {}
    conn = await asyncpg.connect(stack.dsn)
    try:
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
    assert (no_token.status, no_token.json["error"]) == (403, "malformed_signature_headers")
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


async def test_a_key_whose_markup_bounds_exclude_ours_may_not_start_an_exchange(
    operator: Operator, exchanges: Exchanges
) -> None:
    customer = await funded_customer(operator)
    credentials = exchanges.credentials
    async with OperatorClient(
        credentials.base_url, credentials.public_key, credentials.secret_key
    ) as admin:
        made = {}
        for name, bounds in (("narrow", {"maxMarkup": "0.2"}), ("wide", {"maxMarkup": "0.5"})):
            status, made[name] = await admin.post(
                "/v1/api-keys",
                {
                    "name": name,
                    "whiteListIp": ["127.0.0.1"],
                    "settings": {"role": "operator", **bounds},
                },
            )
            assert status == 201
        path = f"/v1/customers/{customer}/exchanges"
        async with OperatorClient(
            credentials.base_url, made["narrow"]["publicKey"], made["narrow"]["secretKey"]
        ) as narrow:
            status, answer = await narrow.post(path, request(customer, "10"))
        assert (status, answer["error"]) == (403, "markup_not_allowed")  # ours is 0.3
        async with OperatorClient(
            credentials.base_url, made["wide"]["publicKey"], made["wide"]["secretKey"]
        ) as wide:
            status, answer = await wide.post(path, request(customer, "10"))
        assert status == 202, answer
        await exchanges.wait_for(customer, answer["exchange_id"], {"settled"})
