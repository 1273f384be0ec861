"""What every HTTP listener allows a client: a request head within the head timeout, a capped
number of open connections (the excess answered 503 and closed), and idle kept-alive connections
closed after the keep-alive timeout; and what it leaves alone: slow handlers, pauses between
kept-alive requests, heads split over several reads, pipelined requests.

An app served in this process by ``serve_until_signalled``, over real sockets, with a client that
controls every byte. Each bound is checked with a wait far longer than the limit (a connection
that the fix did not close stays open through it), never with a timing assertion.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import orjson
import pytest
from aiohttp import web

from http_serving import Ports, RawConnection, get, serving
from wallet_platform.http import json_errors_middleware
from wallet_platform.service import REFUSAL, add_operational_app

pytestmark = pytest.mark.integration

HEAD_TIMEOUT_MS = 300
CAP = 3
KEEPALIVE_TIMEOUT_MS = 1500


async def fast(_: web.Request) -> web.Response:
    return web.json_response({"ok": True})


async def slow(_: web.Request) -> web.Response:
    await asyncio.sleep(3 * HEAD_TIMEOUT_MS / 1000)
    return web.json_response({"slow": True})


async def echo(request: web.Request) -> web.Response:
    return web.Response(body=await request.read())


def app() -> web.Application:
    app = web.Application(middlewares=[json_errors_middleware])
    app.router.add_get("/fast", fast)
    app.router.add_get("/slow", slow)
    app.router.add_post("/echo", echo)
    add_operational_app(app)
    return app


@pytest.fixture
async def ports() -> AsyncIterator[Ports]:
    async with serving(
        app(),
        http_head_timeout_ms=HEAD_TIMEOUT_MS,
        http_max_connections=CAP,
        http_keepalive_timeout_ms=KEEPALIVE_TIMEOUT_MS,
    ) as ports:
        yield ports


Connect = Callable[[int], Awaitable[RawConnection]]


@pytest.fixture
async def connect() -> AsyncIterator[Connect]:
    """Opens raw connections, every one closed when the test ends."""
    opened: list[RawConnection] = []

    async def open_one(port: int) -> RawConnection:
        opened.append(await RawConnection.open(port))
        return opened[-1]

    yield open_one
    for conn in opened:
        conn.close()


async def test_a_head_sent_one_byte_at_a_time_is_cut_off_after_the_head_timeout(
    ports: Ports,
    connect: Connect,
) -> None:
    conn = await connect(ports.public)

    async def dribble() -> None:
        for byte in get("/fast", "X-Padding: " + "a" * 200):
            await conn.send(bytes([byte]))
            await asyncio.sleep(0.05)

    dribbling = asyncio.create_task(dribble())
    try:
        assert await conn.closed_by_server(within=5.0)  # the head would take 11 s
    finally:
        dribbling.cancel()


async def test_a_connection_that_sends_nothing_is_closed_after_the_head_timeout(
    ports: Ports,
    connect: Connect,
) -> None:
    conn = await connect(ports.public)
    assert await conn.closed_by_server(within=5.0)


async def test_a_head_split_over_several_reads_within_the_timeout_is_served(
    ports: Ports, connect: Connect
) -> None:
    conn = await connect(ports.public)
    head = get("/fast")
    for part in (head[:5], head[5:20], head[20:]):
        await conn.send(part)
        await asyncio.sleep(0.05)
    assert await conn.response() == (200, b'{"ok": true}')


async def test_a_handler_slower_than_the_head_timeout_is_answered(
    ports: Ports, connect: Connect
) -> None:
    conn = await connect(ports.public)
    await conn.send(get("/slow"))
    assert await conn.response() == (200, b'{"slow": true}')


async def test_a_slow_body_after_a_complete_head_is_not_cut_by_the_head_timeout(
    ports: Ports,
    connect: Connect,
) -> None:
    conn = await connect(ports.public)
    await conn.send(b"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 4\r\n\r\nab")
    await asyncio.sleep(3 * HEAD_TIMEOUT_MS / 1000)
    await conn.send(b"cd")
    assert await conn.response() == (200, b"abcd")


async def test_pauses_between_kept_alive_requests_do_not_count_against_the_head_timeout(
    ports: Ports,
    connect: Connect,
) -> None:
    conn = await connect(ports.public)
    for _ in range(3):
        await conn.send(get("/fast"))
        assert await conn.response() == (200, b'{"ok": true}')
        await asyncio.sleep(2 * HEAD_TIMEOUT_MS / 1000)  # idle, under the keep-alive timeout


async def test_pipelined_requests_are_all_answered(ports: Ports, connect: Connect) -> None:
    conn = await connect(ports.public)
    await conn.send(get("/slow") + get("/fast"))
    assert await conn.response() == (200, b'{"slow": true}')
    assert await conn.response() == (200, b'{"ok": true}')


async def test_an_idle_kept_alive_connection_is_closed_after_the_keepalive_timeout(
    ports: Ports,
    connect: Connect,
) -> None:
    conn = await connect(ports.public)
    await conn.send(get("/fast"))
    await conn.response()
    assert not await conn.closed_by_server(within=KEEPALIVE_TIMEOUT_MS / 2000)
    assert await conn.closed_by_server(within=5.0)


async def test_connections_beyond_the_cap_get_a_503_and_are_closed(
    ports: Ports, connect: Connect
) -> None:
    held = [await connect(ports.public) for _ in range(CAP)]
    for conn in held:  # each is served, and kept alive
        await conn.send(get("/fast"))
        assert (await conn.response())[0] == 200

    excess = await connect(ports.public)
    answer = await excess.read_all(within=5.0)

    assert answer == REFUSAL
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503 ")
    assert b"\r\nConnection: close" in head
    assert orjson.loads(body)["error"] == "unavailable"

    held.pop().close()
    await asyncio.sleep(0.1)  # the server sees the close
    again = await connect(ports.public)
    await again.send(get("/fast"))
    assert await again.response() == (200, b'{"ok": true}')


async def test_a_refused_client_that_sent_its_request_still_reads_the_503(
    ports: Ports, connect: Connect
) -> None:
    held = [await connect(ports.public) for _ in range(CAP)]
    for conn in held:
        await conn.send(get("/fast"))
        await conn.response()

    excess = await connect(ports.public)
    await excess.send(get("/fast"))

    assert await excess.read_all(within=5.0) == REFUSAL


async def test_a_full_public_port_leaves_the_operational_port_its_own_budget(
    ports: Ports,
    connect: Connect,
) -> None:
    held = [await connect(ports.public) for _ in range(CAP)]
    for conn in held:
        await conn.send(get("/fast"))
        await conn.response()

    ops = await connect(ports.operations)
    await ops.send(get("/health"))

    assert await ops.response() == (200, b'{"status":"ok"}')
