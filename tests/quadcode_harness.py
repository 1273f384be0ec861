"""The Quadcode test harness: keys, the simulator process and its hooks, a fake wallet.

It lives at the top of ``tests/`` (on ``sys.path`` through the root conftest) because both the
gateway tests (tests/quadcode_gateway) and the end-to-end tests against the real wallet
(tests/e2e) start the simulator.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import orjson
from aiohttp import web

from quadcode_gateway import QuadcodeGatewayClient, RetryPolicy, TokenSigner
from quadcode_gateway.tokens import load_public_key

REPO = Path(__file__).resolve().parents[1]
ISSUER = "acme-b2b"
AUDIENCE = "sandbox"
START_TIMEOUT = 20.0
HOOK_TIMEOUT = aiohttp.ClientTimeout(total=10)


@dataclass(frozen=True)
class Keys:
    """Our key pair, Quadcode's key pair, and a stranger's (for refused signatures)."""

    ours_private: Path
    ours_public: Path
    qc_private: Path
    qc_public: Path
    stranger_private: Path


@dataclass(frozen=True)
class SimulatorProcess:
    """The running simulator: its base URL, pid and log file."""

    base_url: str
    port: int
    pid: int
    log_path: Path


def _wait_ready(process: subprocess.Popen[bytes], log_path: Path) -> int:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"simulator exited early:\n{log_path.read_text()}")
        for line in log_path.read_text().splitlines():
            try:
                event = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if isinstance(event, dict) and event.get("event") == "simulator_ready":
                return int(event["port"])
        time.sleep(0.05)
    raise RuntimeError(f"simulator not ready in {START_TIMEOUT}s:\n{log_path.read_text()}")


def stop_simulator(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=5)


def start_simulator(keys: Keys, log_path: Path, *extra: str) -> tuple[subprocess.Popen[bytes], int]:
    """Start ``python -m simulators.quadcode`` with the test keys and wait until it listens."""
    return launch_simulator(
        log_path,
        client_public_key=keys.ours_public,
        qc_private_key=keys.qc_private,
        extra=extra,
    )


def launch_simulator(
    log_path: Path,
    *,
    client_public_key: Path,
    qc_private_key: Path,
    issuer: str = ISSUER,
    audience: str = AUDIENCE,
    extra: tuple[str, ...] = (),
) -> tuple[subprocess.Popen[bytes], int]:
    """Start the simulator on a free loopback port; returns the process and the bound port.

    The simulator is stopped (by pid) if it does not come up.
    """
    command = [
        sys.executable,
        "-m",
        "simulators.quadcode",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--client-public-key",
        str(client_public_key),
        "--issuer",
        issuer,
        "--audience",
        audience,
        "--qc-private-key",
        str(qc_private_key),
        *extra,
    ]
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            command, stdout=log_file, stderr=subprocess.STDOUT, cwd=REPO, stdin=subprocess.DEVNULL
        )
    try:
        port = _wait_ready(process, log_path)
    except BaseException:
        stop_simulator(process)
        raise
    return process, port


class SimulatorHooks:
    """The ``/_sim/`` test hooks of the running simulator."""

    def __init__(self, process: SimulatorProcess, session: aiohttp.ClientSession) -> None:
        self.process = process
        self.base_url = process.base_url
        self._session = session

    async def _post(self, path: str, body: object) -> Any:
        async with self._session.post(
            self.base_url + path, data=orjson.dumps(body), timeout=HOOK_TIMEOUT
        ) as response:
            payload = orjson.loads(await response.read())
            assert response.status == 200, payload
            return payload

    async def _get(self, path: str) -> tuple[int, Any]:
        async with self._session.get(self.base_url + path, timeout=HOOK_TIMEOUT) as response:
            return response.status, orjson.loads(await response.read())

    async def reset(self) -> None:
        await self._post("/_sim/reset", {})

    async def configure(self, **rules: object) -> None:
        await self._post("/_sim/config", rules)

    async def force(self, **forced: object) -> None:
        await self._post("/_sim/force", forced)

    async def exchanges(self) -> list[dict[str, Any]]:
        _, body = await self._get("/_sim/exchanges")
        exchanges: list[dict[str, Any]] = body["exchanges"]
        return exchanges

    async def customer(self, customer_id: str) -> dict[str, Any] | None:
        status, body = await self._get(f"/_sim/customers/{customer_id}")
        return body if status == 200 else None

    async def trade(self, *, hook_timeout: float = 10.0, **plan: object) -> tuple[int, Any]:
        async with self._session.post(
            self.base_url + "/_sim/trade",
            data=orjson.dumps(plan),
            timeout=aiohttp.ClientTimeout(total=hook_timeout),
        ) as response:
            return response.status, orjson.loads(await response.read())

    async def raw(
        self, method: str, path: str, *, body: bytes | None = None, token: str | None = None
    ) -> tuple[int, bytes]:
        """A hand-made gateway request (for what our client would never send)."""
        headers = {"Content-Type": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        async with self._session.request(
            method, self.base_url + path, data=body, headers=headers, timeout=HOOK_TIMEOUT
        ) as response:
            return response.status, await response.read()


class RecordingSleep:
    """An injected sleep that records each delay; really sleeps only if asked to."""

    def __init__(self, real: bool = False) -> None:
        self.delays: list[float] = []
        self._real = real

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        if self._real:
            await asyncio.sleep(delay)


@dataclass
class ClientFactory:
    """Builds gateway clients against the simulator and closes them after the test."""

    base_url: str
    keys: Keys
    made: list[QuadcodeGatewayClient] = field(default_factory=list)

    def signer(self, **overrides: Any) -> TokenSigner:
        options: dict[str, Any] = {"issuer": ISSUER, "audience": AUDIENCE}
        path = overrides.pop("private_key", self.keys.ours_private)
        options.update(overrides)
        return TokenSigner.from_pem_file(path, **options)

    def __call__(
        self,
        *,
        signer: TokenSigner | None = None,
        sleep: RecordingSleep | None = None,
        retry: RetryPolicy | None = None,
        request_timeout: float = 3.0,
        base_url: str | None = None,
        jitter: Callable[[], float] | None = None,
    ) -> QuadcodeGatewayClient:
        client = QuadcodeGatewayClient.create(
            base_url=base_url or self.base_url,
            signer=signer or self.signer(),
            sleep=sleep or RecordingSleep(),
            retry=retry or RetryPolicy(max_attempts=3, base_delay=0.05, max_delay=0.2),
            request_timeout=request_timeout,
            connect_timeout=min(1.0, request_timeout),
            jitter=jitter or (lambda: 0.5),
        )
        self.made.append(client)
        return client


@dataclass
class FakeWallet:
    """A tiny stand-in of our wallet's callbacks that checks Quadcode's token on each call.

    ``drop_first`` lists operations ("debit"/"credit"/"balance") whose first request is applied
    but left unanswered for ``drop_for`` seconds, so the caller times out and retries.
    ``fail_first`` lists operations whose first request gets a 503 without being applied.
    """

    qc_public_key: Path
    audience: str = AUDIENCE
    balances: dict[tuple[str, str], tuple[str, Any]] = field(default_factory=dict)
    drop_first: set[str] = field(default_factory=set)
    fail_first: set[str] = field(default_factory=set)
    always_fail: bool = False
    drop_for: float = 1.0
    seen: list[dict[str, Any]] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)
    applied: dict[str, tuple[int, bytes]] = field(default_factory=dict)
    base_url: str = ""

    def _claims(self, request: web.Request) -> dict[str, Any] | None:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer "):
            return None
        token = header.removeprefix("Bearer ")
        self.tokens.append(token)
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                load_public_key(self.qc_public_key),
                algorithms=["ES256"],
                issuer="qc",
                audience=self.audience,
                options={"require": ["iss", "aud", "iat", "exp"]},
            )
        except jwt.PyJWTError:
            return None
        return claims if claims["exp"] - claims["iat"] <= 600 else None

    async def _answer(self, operation: str, body: bytes, status: int) -> web.Response:
        if operation in self.drop_first:
            self.drop_first.discard(operation)
            await asyncio.sleep(self.drop_for)
        return web.Response(status=status, body=body, content_type="application/json")

    async def balance(self, request: web.Request) -> web.Response:
        customer_id, balance_id = request.match_info["customer"], request.match_info["balance"]
        self.seen.append({"operation": "balance", "customer_id": customer_id})
        if self._claims(request) is None:
            return web.json_response({"error": "unauthorized"}, status=403)
        if (customer_id, balance_id) not in self.balances:
            return web.json_response({"error": "balance_not_found"}, status=404)
        currency, amount = self.balances[(customer_id, balance_id)]
        payload = {
            "customer_id": customer_id,
            "balance_id": balance_id,
            "amount": str(amount),
            "currency_code": currency,
        }
        return await self._answer("balance", orjson.dumps(payload), 200)

    async def move(self, request: web.Request) -> web.Response:
        operation = request.match_info["operation"]
        customer_id, balance_id = request.match_info["customer"], request.match_info["balance"]
        body = orjson.loads(await request.read())
        self.seen.append({"operation": operation, **body})
        if self._claims(request) is None:
            return web.json_response({"error": "unauthorized"}, status=403)
        if self.always_fail:
            return web.json_response({"error": "unavailable"}, status=503)
        if operation in self.fail_first:
            self.fail_first.discard(operation)
            return web.json_response({"error": "unavailable"}, status=503)
        key = f"{operation}:{body['request_id']}"
        if key in self.applied:
            status, stored = self.applied[key]
            return web.Response(status=status, body=stored, content_type="application/json")
        currency, amount = self.balances[(customer_id, balance_id)]
        change = Decimal(body["amount"])
        if operation == "debit" and change > amount:
            result = (402, orjson.dumps({"error": "insufficient_funds", "message": "no"}))
        else:
            amount = amount - change if operation == "debit" else amount + change
            self.balances[(customer_id, balance_id)] = (currency, amount)
            payload = {
                "customer_id": customer_id,
                "balance_id": balance_id,
                "amount": body["amount"],
                "balance_current_amount": str(amount),
                "currency_code": currency,
            }
            result = (201, orjson.dumps(payload))
        self.applied[key] = result
        return await self._answer(operation, result[1], result[0])
