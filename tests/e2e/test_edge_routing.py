"""The edge's public port, dispatched by hand on aiohttp's low-level server, answers what its
router and middlewares answered: the order of checks (``Expect``, then authentication of all of
``/v1/``, then the route, then the method), HEAD like GET without a body, a JSON 405, and a
segment holding a brace, which no route matches, a 404."""

from __future__ import annotations

import asyncio
import uuid

import orjson
import pytest
from yarl import URL

from wallet_clients import Answer, Operator, Wallet

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
async def funded(operator: Operator) -> tuple[str, str]:
    return await operator.customer_with_balance("USD", "10.00")


async def raw_exchange(base_url: str, request: bytes) -> bytes:
    """Send ``request`` as it is and read everything until the edge closes the connection."""
    url = URL(base_url)
    reader, writer = await asyncio.open_connection(url.host, url.port)
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()


def debit_request(wallet: Wallet, customer: str, balance: str, expect: str) -> bytes:
    body = orjson.dumps(
        {"request_id": uuid.uuid4().hex, "amount": "1.00", "currency_code": "USD", "comment": "o"}
    )
    return (
        f"POST /v1/customers/{customer}/balances/{balance}/debit HTTP/1.1\r\n"
        f"Host: wallet\r\nAuthorization: Bearer {wallet.default_token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        f"Expect: {expect}\r\nConnection: close\r\n\r\n"
    ).encode() + body


async def call(wallet: Wallet, method: str, path: str, *, token: bool = True) -> Answer:
    headers = wallet.headers() if token else {}
    async with wallet.http.request(method, wallet.base_url + path, headers=headers) as resp:
        return Answer(resp.status, await resp.read())


async def test_a_callback_route_with_another_method_is_a_json_405(
    wallet: Wallet, funded: tuple[str, str]
) -> None:
    customer, balance = funded
    path = f"/v1/customers/{customer}/balances/{balance}"

    answers = [
        await call(wallet, "POST", path),
        await call(wallet, "GET", path + "/debit"),
        await call(wallet, "PUT", path + "/credit"),
        await call(wallet, "DELETE", path),
    ]

    assert [(a.status, a.json["error"]) for a in answers] == [(405, "method_not_allowed")] * 4


async def test_head_of_a_balance_answers_like_get_without_a_body(
    wallet: Wallet, funded: tuple[str, str]
) -> None:
    customer, balance = funded
    path = f"/v1/customers/{customer}/balances/{balance}"

    async with wallet.http.head(wallet.base_url + path, headers=wallet.headers()) as resp:
        status, length, body = resp.status, resp.headers["Content-Length"], await resp.read()
    get = await call(wallet, "GET", path)

    assert (status, body, int(length)) == (get.status, b"", len(get.body))


async def test_everything_under_v1_is_authenticated_before_it_is_routed(wallet: Wallet) -> None:
    unknown = await call(wallet, "GET", "/v1/nothing", token=False)
    known = await call(wallet, "GET", "/v1/nothing")

    assert (unknown.status, unknown.json["error"]) == (403, "missing_token")
    assert (known.status, known.json["error"]) == (404, "route_not_found")


async def test_a_path_outside_v1_is_a_404_without_a_token(wallet: Wallet) -> None:
    # The operational routes live on their own port only.
    for path in ("/health", "/metrics", "/"):
        answer = await call(wallet, "GET", path, token=False)
        assert (answer.status, answer.json["error"]) == (404, "route_not_found"), path


async def test_an_id_holding_a_brace_matches_no_route(
    wallet: Wallet, funded: tuple[str, str]
) -> None:
    customer, _ = funded

    answer = await call(wallet, "GET", f"/v1/customers/{customer}/balances/%7Bx%7D")

    assert (answer.status, answer.json["error"]) == (404, "route_not_found")


async def test_a_debit_that_expects_100_continue_gets_it_and_is_applied(
    wallet: Wallet, funded: tuple[str, str]
) -> None:
    customer, balance = funded

    answer = await raw_exchange(
        wallet.base_url, debit_request(wallet, customer, balance, "100-continue")
    )

    interim, _, final = answer.partition(b"\r\n\r\n")
    assert interim == b"HTTP/1.1 100 Continue"
    assert final.startswith(b"HTTP/1.1 201 Created\r\n")


async def test_an_unknown_expectation_is_417(wallet: Wallet, funded: tuple[str, str]) -> None:
    customer, balance = funded

    answer = await raw_exchange(
        wallet.base_url, debit_request(wallet, customer, balance, "something-else")
    )

    assert answer.startswith(b"HTTP/1.1 417 Expectation Failed\r\n")
