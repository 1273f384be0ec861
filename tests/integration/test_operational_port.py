"""The operational routes live on a port of their own: the public port serves the contract and
nothing else, and /ready runs one round of checks however many callers ask at once.

An app served in this process by ``serve_until_signalled``, as every service is, over real
sockets; the readiness check is injected so its rounds can be counted.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import orjson
import pytest
from aiohttp import web

from http_serving import Ports, free_port, serving, until_listening
from wallet_platform.config import CommonSettings
from wallet_platform.http import json_errors_middleware
from wallet_platform.service import READINESS, add_operational_app, serve_until_signalled

pytestmark = pytest.mark.integration


class CountingCheck:
    """A readiness check that counts its calls and takes a moment, as a Kafka round trip does."""

    def __init__(self) -> None:
        self.calls = 0
        self.__name__ = "kafka"

    async def __call__(self) -> dict[str, bool]:
        self.calls += 1
        await asyncio.sleep(0.2)
        return {"kafka": True}


async def contract(_: web.Request) -> web.Response:
    return web.json_response({"contract": True})


def public_app(check: CountingCheck) -> web.Application:
    app = web.Application(middlewares=[json_errors_middleware])
    app.router.add_get("/v1/contract", contract)
    add_operational_app(app)

    async def resources(app: web.Application) -> AsyncIterator[None]:
        # As the edge does: the check joins when its resource opens, inside the public app.
        app[READINESS].append(check)
        yield

    app.cleanup_ctx.append(resources)
    return app


@pytest.fixture
def check() -> CountingCheck:
    return CountingCheck()


@pytest.fixture
async def ports(check: CountingCheck) -> AsyncIterator[Ports]:
    async with serving(public_app(check)) as ports:
        yield ports


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    # No pool limit: every concurrent call gets a connection of its own.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        yield session


@pytest.mark.parametrize("path", ["/metrics", "/ready", "/health"])
async def test_the_public_port_answers_operational_routes_with_404(
    ports: Ports, http: aiohttp.ClientSession, path: str
) -> None:
    async with http.get(f"http://127.0.0.1:{ports.public}{path}") as resp:
        assert resp.status == 404
        assert orjson.loads(await resp.read())["error"] == "route_not_found"
    async with http.get(f"http://127.0.0.1:{ports.public}/v1/contract") as resp:
        assert resp.status == 200


async def test_the_operational_port_answers_health_ready_and_metrics(
    ports: Ports, http: aiohttp.ClientSession
) -> None:
    base = f"http://127.0.0.1:{ports.operations}"
    async with http.get(base + "/health") as health:
        assert (health.status, await health.json()) == (200, {"status": "ok"})
    async with http.get(base + "/ready") as ready:
        assert ready.status == 200
        assert await ready.json() == {
            "status": "ready",
            "checks": {"listening": True, "kafka": True},
        }
    async with http.get(base + "/metrics") as metrics:
        assert metrics.status == 200
        assert "http_open_connections" in await metrics.text()
    async with http.get(base + "/v1/contract") as contract_there:
        assert contract_there.status == 404  # and the contract is not served here


async def test_fifty_concurrent_ready_calls_cause_one_round_of_checks(
    ports: Ports, http: aiohttp.ClientSession, check: CountingCheck
) -> None:
    async def ready() -> int:
        async with http.get(f"http://127.0.0.1:{ports.operations}/ready") as resp:
            await resp.read()
            return resp.status

    statuses = await asyncio.gather(*(ready() for _ in range(50)))

    assert statuses == [200] * 50
    assert check.calls == 1


async def test_stopping_closes_both_ports(check: CountingCheck) -> None:
    async with serving(public_app(check)) as ports:
        pass
    for port in (ports.public, ports.operations):
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", port)


async def test_ready_says_not_ready_until_the_public_port_listens(
    http: aiohttp.ClientSession,
) -> None:
    """The operational port opens first; a /ready that passed every check while the public
    port was still opening sent a caller to a port that refused it."""
    opened = asyncio.Event()
    app = web.Application(middlewares=[json_errors_middleware])
    add_operational_app(app)

    async def slow_resources(app: web.Application) -> AsyncIterator[None]:
        app[READINESS].append(CountingCheck())  # passes
        await opened.wait()
        yield

    app.cleanup_ctx.append(slow_resources)
    ports = Ports(free_port(), free_port())
    stop = asyncio.Event()
    task = asyncio.create_task(
        serve_until_signalled(
            app, CommonSettings(), ports.public, ops_port=ports.operations, stop=stop
        )
    )
    try:
        await until_listening(ports.operations, task)
        async with http.get(f"http://127.0.0.1:{ports.operations}/ready") as resp:
            assert resp.status == 503
            assert (await resp.json())["checks"]["listening"] is False
    finally:
        opened.set()
        await until_listening(ports.public, task)
        stop.set()
        await task
