"""What the edge answers while Kafka is away, and what its readiness says, without a Kafka: a
command Kafka did not take is a 503 ``unavailable`` (nothing was sent), an outcome that did not
come is a 503 ``ledger_timeout`` (the command may still be applied, once). The timing against a
real broker is in ``tests/integration/test_command_bus_outages.py``."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from edge.app import CallbackRoutes
from edge.settings import EdgeSettings
from wallet_platform.callback_auth import IpPolicy, TokenVerifier
from wallet_platform.command_bus import CommandNotQueued, OutcomeTimeout
from wallet_platform.health import task_check

pytestmark = pytest.mark.unit

BODY = orjson.dumps(
    {"request_id": "r-1", "amount": "1.00", "currency_code": "USD", "comment": "option opened"}
)


class Bus:
    """A command bus that fails every submit with ``error``."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    async def submit(self, *_: Any) -> tuple[int, bytes]:
        raise self.error


async def debit_answer(error: Exception) -> tuple[int, str]:
    settings = EdgeSettings.model_construct(edge_outcome_timeout_ms=2000, edge_max_body_bytes=8192)
    verifier = TokenVerifier([], audience="sandbox")  # never asked: money() comes after auth
    routes = CallbackRoutes(settings, verifier, IpPolicy(["127.0.0.1/32"]))
    routes.bus = Bus(error)  # type: ignore[assignment]
    request = make_mocked_request("POST", "/v1/customers/c-1/balances/c-1_USD/debit")

    async def read() -> bytes:
        return BODY

    request.read = read  # type: ignore[method-assign]
    answer = await routes.money(request, "debit", "c-1", "c-1_USD")
    assert isinstance(answer, web.Response) and answer.body is not None
    return answer.status, orjson.loads(answer.body)["error"]


async def test_a_command_kafka_did_not_take_is_503_unavailable() -> None:
    assert await debit_answer(CommandNotQueued("Kafka is away")) == (503, "unavailable")


async def test_an_outcome_that_did_not_come_is_503_ledger_timeout() -> None:
    assert await debit_answer(OutcomeTimeout("no outcome")) == (503, "ledger_timeout")


async def test_a_background_task_that_ended_makes_the_service_not_ready() -> None:
    async def fails() -> None:
        raise RuntimeError("a resume loop that died")

    task = asyncio.create_task(fails())
    await asyncio.wait([task])
    assert await task_check("exchange_resumer", task)() == {"exchange_resumer": False}
    task.exception()  # retrieved: the loop would otherwise warn about it
