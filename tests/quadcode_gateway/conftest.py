"""Fixtures for the Quadcode gateway tests: keys, the simulator as a real process, a fake wallet,
and our OpenAPI description of the gateway.

The simulator runs once per session as a subprocess on a free loopback port (``--port 0``; the
port is read from its ``simulator_ready`` log line) and is reset before each test that uses it.
It is stopped by its pid at the end.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

from api_contract import QUADCODE_GATEWAY
from quadcode_gateway import generate_keypair
from quadcode_harness import (
    ClientFactory,
    FakeWallet,
    Keys,
    SimulatorHooks,
    SimulatorProcess,
    start_simulator,
    stop_simulator,
)


@pytest.fixture(scope="session")
def gateway_description() -> Path:
    """Our description of the gateway calls our client makes (docs/api/quadcode-gateway.yaml).

    The tests validate against it, never against Quadcode's files, so a clone without
    Quadcode's files beside it passes; ``python -m api_contract`` (run by CI) compares the two.
    """
    return QUADCODE_GATEWAY


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    base = tmp_path_factory.mktemp("quadcode-keys")
    for name in ("ours", "qc", "stranger"):
        generate_keypair(base / f"{name}-private.pem", base / f"{name}-public.pem")
    return Keys(
        ours_private=base / "ours-private.pem",
        ours_public=base / "ours-public.pem",
        qc_private=base / "qc-private.pem",
        qc_public=base / "qc-public.pem",
        stranger_private=base / "stranger-private.pem",
    )


@pytest.fixture(scope="session")
def simulator(keys: Keys, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimulatorProcess]:
    log_path = tmp_path_factory.mktemp("quadcode-sim") / "simulator.log"
    process, port = start_simulator(keys, log_path)
    try:
        yield SimulatorProcess(f"http://127.0.0.1:{port}", port, process.pid, log_path)
    finally:
        stop_simulator(process)


@pytest_asyncio.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest_asyncio.fixture
async def sim(simulator: SimulatorProcess, http: aiohttp.ClientSession) -> SimulatorHooks:
    hooks = SimulatorHooks(simulator, http)
    await hooks.reset()
    return hooks


@pytest_asyncio.fixture
async def make_client(sim: SimulatorHooks, keys: Keys) -> AsyncIterator[ClientFactory]:
    factory = ClientFactory(sim.base_url, keys)
    yield factory
    for client in factory.made:
        await client.close()


@pytest_asyncio.fixture
async def fake_wallet(keys: Keys) -> AsyncIterator[FakeWallet]:
    wallet = FakeWallet(qc_public_key=keys.qc_public)
    app = web.Application()
    base = "/v1/customers/{customer}/balances/{balance}"
    app.router.add_get(base, wallet.balance)
    app.router.add_post(base + "/{operation:debit|credit}", wallet.move)
    # A short shutdown timeout: a dropped (sleeping) response must not hold the test up.
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    wallet.base_url = f"http://127.0.0.1:{port}"
    try:
        yield wallet
    finally:
        await runner.cleanup()
