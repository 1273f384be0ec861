"""The internal-balance client against a scripted in-process gateway.

The simulator serves only the external-balance API, so these tests answer from a small aiohttp
app that records each request; every recorded request is checked with openapi-core against our
description of the gateway, docs/api/quadcode-gateway.yaml (its internal-balance calls).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
import pytest_asyncio
from aiohttp import web
from openapi_core import OpenAPI
from openapi_core.testing import MockRequest

from quadcode_gateway import (
    CountryRestricted,
    GatewayUnavailable,
    InsufficientFunds,
    InternalBalanceClient,
    MoneyTransfer,
    NewUser,
    RetryPolicy,
    SessionRequest,
    TokenSigner,
    UserAlreadyExists,
    UserNotFound,
)
from quadcode_gateway.internal import BlockStatusCode, UserLoginUrlRequest
from quadcode_gateway.models import BalanceType
from quadcode_harness import AUDIENCE, ISSUER, Keys, RecordingSleep

pytestmark = pytest.mark.integration

ANNA = NewUser(
    email="anna@example.com",
    password="correct horse",
    country_code="DE",
    ip="203.0.113.7",
    balance_currency_code="EUR",
    locale="de_DE",
)


@dataclass
class ScriptedGateway:
    """Answers each request with the next scripted (status, body, delay) and records it."""

    script: list[tuple[int, Any, float]] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)

    def answer(self, status: int, body: Any = None, delay: float = 0.0) -> None:
        self.script.append((status, body, delay))

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append(
            {
                "method": request.method,
                "path": request.path,
                "headers": {k: v for k, v in request.headers.items() if k == "Authorization"},
                "content_type": request.headers.get("Content-Type", "application/json"),
                "body": await request.read(),
            }
        )
        status, body, delay = self.script.pop(0) if self.script else (500, None, 0.0)
        if delay:
            await asyncio.sleep(delay)
        if body is None:
            return web.Response(status=status)
        return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


@pytest_asyncio.fixture
async def gateway() -> AsyncIterator[tuple[ScriptedGateway, str]]:
    scripted = ScriptedGateway()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", scripted.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield scripted, f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@pytest_asyncio.fixture
async def client(
    gateway: tuple[ScriptedGateway, str], keys: Keys
) -> AsyncIterator[InternalBalanceClient]:
    signer = TokenSigner.from_pem_file(keys.ours_private, issuer=ISSUER, audience=AUDIENCE)
    made = InternalBalanceClient.create(
        base_url=gateway[1],
        signer=signer,
        sleep=RecordingSleep(),
        retry=RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=0.02),
        request_timeout=0.3,
        connect_timeout=0.3,
    )
    yield made
    await made.close()


@pytest.fixture(scope="module")
def internal_api(gateway_description: Path) -> OpenAPI:
    return OpenAPI.from_file_path(str(gateway_description))


def assert_requests_conform(api: OpenAPI, scripted: ScriptedGateway) -> None:
    for recorded in scripted.requests:
        api.validate_request(
            MockRequest(
                "http://127.0.0.1",
                recorded["method"],
                recorded["path"],
                headers=recorded["headers"],
                data=recorded["body"] or None,
                content_type=recorded["content_type"],
            )
        )


async def test_every_operation_sends_what_the_contract_describes(
    gateway: tuple[ScriptedGateway, str], client: InternalBalanceClient, internal_api: OpenAPI
) -> None:
    scripted, _ = gateway
    created = {
        "id": 12345,
        "email": ANNA.email,
        "password": ANNA.password,
        "country_code": "DE",
        "locale": "de_DE",
    }
    balance = {
        "id": 112233,
        "user_id": 12345,
        "type": "real",
        "currency_code": "EUR",
        "cash": "100.50",
        "equity": "101.00",
        "margin": "0",
        "pnl": "0.50",
        "pnl_net": "0.45",
    }
    scripted.answer(201, created)
    scripted.answer(200)
    scripted.answer(200, {"statuses": [{"status": "fraud", "reason": "r", "created_at": "t"}]})
    scripted.answer(200)
    scripted.answer(201, {"ssid": "s-1"})
    scripted.answer(201, {"url": "https://trade.example.com/login?x=1"})
    scripted.answer(200)
    scripted.answer(
        200, {"balances": [{k: balance[k] for k in ("id", "user_id", "type", "currency_code")}]}
    )
    scripted.answer(200, balance)
    scripted.answer(201)
    scripted.answer(201)

    user = await client.create_user(ANNA)
    assert user.id == 12345 and not hasattr(user, "password")
    await client.update_user(12345, group_id=7)
    statuses = await client.block_status(12345)
    assert statuses[0].status is BlockStatusCode.FRAUD
    await client.block_user(12345)
    session = SessionRequest(country_code="DE", ip="203.0.113.7", user_agent="ua", platform_id=1)
    assert (await client.create_user_session(12345, session)).ssid == "s-1"
    login = UserLoginUrlRequest(country_code="DE", ip="203.0.113.7", site_domain="t.example.com")
    assert (await client.create_user_login_url(12345, login)).url.startswith("https://")
    await client.update_password(12345, "new secret")
    summaries = await client.balances(12345)
    assert summaries[0].type is BalanceType.REAL
    detail = await client.balance(12345, 112233)
    assert detail.cash == Decimal("100.50") and detail.pnl_net == Decimal("0.45")
    await client.deposit(
        12345,
        112233,
        MoneyTransfer(request_id="dep-1", amount=Decimal("2.01"), currency_code="EUR"),
    )
    await client.withdraw(
        12345, 112233, MoneyTransfer(request_id="wd-1", amount="1.50", currency_code="EUR")
    )

    assert_requests_conform(internal_api, scripted)
    deposit = orjson.loads(scripted.requests[-2]["body"])
    assert deposit == {"request_id": "dep-1", "amount": "2.01", "amount_currency_code": "EUR"}


async def test_statuses_become_typed_errors(
    gateway: tuple[ScriptedGateway, str], client: InternalBalanceClient
) -> None:
    scripted, _ = gateway
    scripted.answer(402)
    scripted.answer(404)
    scripted.answer(409)
    scripted.answer(451, {"error": "user_country_restriction", "message": "no"})
    transfer = MoneyTransfer(request_id="wd-2", amount="5", currency_code="EUR")
    with pytest.raises(InsufficientFunds):
        await client.withdraw(1, 2, transfer)
    with pytest.raises(UserNotFound):
        await client.balances(99)
    with pytest.raises(UserAlreadyExists):
        await client.create_user(ANNA)
    with pytest.raises(CountryRestricted) as excinfo:
        await client.create_user(ANNA)
    assert excinfo.value.reason == "user_country_restriction"


async def test_create_user_is_not_repeated_after_a_timeout(
    gateway: tuple[ScriptedGateway, str], client: InternalBalanceClient
) -> None:
    scripted, _ = gateway
    scripted.answer(201, {}, delay=1.0)
    with pytest.raises(GatewayUnavailable) as excinfo:
        await client.create_user(ANNA)
    assert excinfo.value.outcome_unknown is True
    assert len(scripted.requests) == 1


async def test_deposit_is_repeated_with_the_same_request_id_after_a_5xx(
    gateway: tuple[ScriptedGateway, str], client: InternalBalanceClient
) -> None:
    scripted, _ = gateway
    scripted.answer(502)
    scripted.answer(201)
    await client.deposit(
        1, 2, MoneyTransfer(request_id="dep-9", amount="3.00", currency_code="EUR")
    )
    assert len(scripted.requests) == 2
    assert scripted.requests[0]["body"] == scripted.requests[1]["body"]
