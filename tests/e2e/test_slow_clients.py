"""Slow and greedy clients against the real edge process: a request head that dribbles in is cut
off after the head timeout, connections beyond the cap get a clean 503, and neither keeps a real
callback from being answered; a well-behaved kept-alive client is left alone.

The stack runs with a head timeout of 500 ms and a cap of 20 connections per port. Each bound is
checked with a wait far longer than the limit, never with a timing assertion.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import orjson
import pytest

from http_serving import RawConnection
from wallet_clients import Operator, Wallet
from wallet_platform.service import REFUSAL
from wallet_stack import QuadcodeKey, Stack

pytestmark = pytest.mark.e2e

HEAD_TIMEOUT_MS = 500
CAP = 20


@pytest.fixture(scope="module")
def stack_env() -> dict[str, str]:
    return {
        "WALLET_HTTP_HEAD_TIMEOUT_MS": str(HEAD_TIMEOUT_MS),
        "WALLET_HTTP_MAX_CONNECTIONS": str(CAP),
    }


@pytest.fixture
async def raw() -> AsyncIterator[list[RawConnection]]:
    """Raw connections a test opens, every one closed when it ends."""
    opened: list[RawConnection] = []
    yield opened
    for conn in opened:
        conn.close()


def callback_request(token: str, customer: str, balance: str, body: bytes | None = None) -> bytes:
    """A debit (with ``body``) or a GET balance, as Quadcode sends it, kept alive."""
    path = f"/v1/customers/{customer}/balances/{balance}"
    lines = [
        f"{'POST' if body else 'GET'} {path}{'/debit' if body else ''} HTTP/1.1",
        "Host: wallet",
        f"Authorization: Bearer {token}",
    ]
    if body:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")


def debit_body(amount: str = "1.00") -> bytes:
    return orjson.dumps(
        {
            "request_id": uuid.uuid4().hex,
            "amount": amount,
            "currency_code": "USD",
            "comment": "slow clients",
        }
    )


async def test_a_head_sent_one_byte_every_200_ms_is_cut_off_while_a_callback_succeeds(
    stack: Stack,
    operator: Operator,
    wallet: Wallet,
    quadcode_key: QuadcodeKey,
    raw: list[RawConnection],
) -> None:
    customer, balance = await operator.customer_with_balance("USD", "10.00")
    slow = await RawConnection.open(stack.edge.port)
    raw.append(slow)
    head = callback_request(quadcode_key.token(), customer, balance, debit_body())

    async def dribble() -> None:
        for byte in head:  # about 700 bytes: more than two minutes at this pace
            await slow.send(bytes([byte]))
            await asyncio.sleep(0.2)

    dribbling = asyncio.create_task(dribble())
    try:
        answer = await wallet.debit(customer, balance, "2.00")
        assert answer.status == 201, answer
        assert await slow.closed_by_server(within=10.0)
    finally:
        dribbling.cancel()
    assert (await wallet.read_eventually(customer, balance, "8.00")).json["amount"] == "8.00"


async def test_connections_beyond_the_cap_get_a_clean_503_and_a_callback_succeeds_after(
    stack: Stack, operator: Operator, wallet: Wallet, raw: list[RawConnection]
) -> None:
    customer, balance = await operator.customer_with_balance("USD", "10.00")
    for _ in range(CAP + 5):
        raw.append(await RawConnection.open(stack.edge.port))

    # Each one either gets the 503 at once, or is let in and, sending nothing, closed after the
    # head timeout: none hangs.
    answers = await asyncio.gather(*(conn.read_all(within=10.0) for conn in raw))

    refused = [a for a in answers if a]
    assert len(refused) >= 5  # the cap counts this test's own idle connections too
    assert set(refused) == {REFUSAL}
    assert orjson.loads(REFUSAL.partition(b"\r\n\r\n")[2])["error"] == "unavailable"
    assert b"\r\nConnection: close\r\n" in REFUSAL
    assert (await wallet.debit(customer, balance, "1.00")).status == 201


async def test_a_kept_alive_client_pausing_between_requests_is_unaffected(
    stack: Stack, operator: Operator, quadcode_key: QuadcodeKey, raw: list[RawConnection]
) -> None:
    customer, balance = await operator.customer_with_balance("USD", "10.00")
    conn = await RawConnection.open(stack.edge.port)
    raw.append(conn)
    token = quadcode_key.token()

    for _ in range(3):  # one connection throughout: pauses longer than the head timeout
        await conn.send(callback_request(token, customer, balance, debit_body()))
        status, _ = await conn.response()
        assert status == 201
        await asyncio.sleep(2 * HEAD_TIMEOUT_MS / 1000)
        await conn.send(callback_request(token, customer, balance))
        status, _ = await conn.response()
        assert status == 200
        await asyncio.sleep(2 * HEAD_TIMEOUT_MS / 1000)
