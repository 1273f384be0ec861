"""Exchanges in a test stack: the Swapgate simulator as a process, the operator API (exchanges
on) as one more service of a :class:`~wallet_stack.Stack`, and the website's client of it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from ledger_core.commands import OpenBalance
from operator_client import load_credentials
from operator_keys_stack import create_key, write_master_keys
from quadcode_gateway import generate_keypair
from swapgate.signing import signed_headers
from wallet_clients import Answer, Operator
from wallet_stack import Service, Stack, wait_ready

SWAPGATE_PUBLIC, SWAPGATE_SECRET = "exchange-test-public-key", "exchange-test-secret-key"
MARKUP = "0.3"
PAYOUT = "BTC:bc1q-treasury,USDT:T-treasury,ETH:0xtreasury"


def listening_port(log_path: Path, process: subprocess.Popen[bytes], within: float = 30.0) -> int:
    """The port from a simulator's ``listening`` log line (it binds port 0)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"simulator exited early:\n{log_path.read_text()}")
        for line in log_path.read_text().splitlines():
            if line.startswith("{") and orjson.loads(line).get("event") == "listening":
                return int(orjson.loads(line)["port"])
        time.sleep(0.05)
    raise RuntimeError(f"simulator did not start in {within:g}s:\n{log_path.read_text()}")


@contextlib.contextmanager
def swapgate_simulator(log_path: Path, *, step_s: float = 1.0) -> Iterator[str]:
    """The Swapgate simulator as a process with our API key seeded; yields its base URL.
    ``step_s`` is the time a simulated order spends in each stage."""
    command = [
        sys.executable, "-m", "simulators.swapgate", "--host", "127.0.0.1", "--port", "0",
        "--step-s", str(step_s), "--platform-pct", "1", "--affiliate-pct", "20",
    ]  # fmt: skip
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=os.environ)
    try:
        url = f"http://127.0.0.1:{listening_port(log_path, process)}"
        body = {"name": "wallet", "publicKey": SWAPGATE_PUBLIC, "secretKey": SWAPGATE_SECRET}
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


async def start_operator_api(
    stack: Stack, swapgate: str, directory: Path, **extra_env: str
) -> Service:
    """The operator API with exchanges on, added to ``stack`` as ``operator_api``, started and
    ready. Its Quadcode gateway settings are required but unused here. The website's key (an
    admin key made with the bootstrap CLI) is in the credentials file named by the service's
    ``WALLET_OPERATOR_CREDENTIALS`` (a setting the service itself ignores). ``extra_env``:
    more WALLET_ settings of this process (a setting made here already is a TypeError)."""
    generate_keypair(directory / "ours-private.pem", directory / "ours-public.pem")
    env = exchange_env(stack, swapgate) | {
        "WALLET_OPERATOR_MASTER_KEYS_FILE": str(write_master_keys(directory)),
        "WALLET_OPERATOR_CREDENTIALS": str(directory / "operator-credentials.json"),
        "WALLET_QUADCODE_BASE_URL": "http://127.0.0.1:9",
        "WALLET_QUADCODE_ISSUER": "test",
        "WALLET_QUADCODE_ENVIRONMENT": "sandbox",
        "WALLET_QUADCODE_PRIVATE_KEY_PATH": str(directory / "ours-private.pem"),
    }
    service = stack.add("operator_api", "WALLET_OPERATOR_API_PORT", **env, **extra_env)
    create_key(
        service.env, directory / "operator-credentials.json", base_url=service.url, name="website"
    )
    service.start()
    await wait_ready(service, timeout=60)
    return service


async def funded_customer(operator: Operator, usdt: str = "100") -> str:
    """A new customer with ``usdt`` USDT and an empty BTC balance to exchange them into."""
    customer, _ = await operator.customer_with_balance("USDT", usdt)
    answer = await operator.send(OpenBalance(customer, f"{customer}_BTC", "BTC", uuid.uuid4().hex))
    assert answer.status == 201
    return customer


def exchange_request(
    customer: str, amount: str = "60", exchange_id: str | None = None
) -> dict[str, str]:
    """The body of a USDT to BTC exchange between the customer's two balances."""
    return {
        "exchange_id": exchange_id or "x-" + uuid.uuid4().hex[:12],
        "source_balance_id": f"{customer}_USDT",
        "target_balance_id": f"{customer}_BTC",
        "amount": amount,
        "currency_code": "USDT",
        "target_currency_code": "BTC",
    }


class Exchanges:
    """The website's side of the exchange endpoints."""

    def __init__(self, http: aiohttp.ClientSession, api: Service) -> None:
        self.http = http
        self.api = api
        self.credentials = load_credentials(api.env["WALLET_OPERATOR_CREDENTIALS"])
        self._last_ms = 0

    def headers(self, body: bytes = b"") -> dict[str, str]:
        """The signed headers of a request with this raw body (a fresh timestamp each time, so
        a repeated request is not refused as a replay)."""
        self._last_ms = max(time.time_ns() // 1_000_000, self._last_ms + 1)
        return signed_headers(
            self.credentials.secret_key, self.credentials.public_key, self._last_ms, body
        )

    async def start(
        self, customer: str, body: dict[str, Any] | bytes, *, headers: dict[str, str] | None = None
    ) -> Answer:
        data = body if isinstance(body, bytes) else orjson.dumps(body)
        async with self.http.post(
            f"{self.api.url}/v1/customers/{customer}/exchanges",
            data=data,
            headers=self.headers(data) if headers is None else headers,
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
