"""Exchanges while Postgres is away, without a Postgres: the orchestrator's resume loop lives on
whatever a round meets, an order Swapgate created is recorded once the database is back (not
left to a person), and the operator API answers 503 ``unavailable`` instead of a 500.

Postgres is stood in for by a pool that fails the way asyncpg does while the database restarts
(refused connections, a connection closed under a query); the real outages are in
``tests/e2e/test_dependency_restarts.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from exchange.orchestrator import Orchestrator
from exchange.requests import ExchangeRequest
from exchange.settings import ExchangeSettings
from exchange.store import ORDERED, ORDERING, RESERVED, ExchangeRow
from operator_api.exchanges import EXCHANGE_SETTINGS, ORCHESTRATOR, get_exchange, start_exchange
from operator_api.settings import OperatorApiSettings

pytestmark = pytest.mark.unit

REQUEST = ExchangeRequest("c-1", "x-1", "c-1_USDT", "c-1_BTC", "20", "USDT", "BTC")


def settings(**overrides: Any) -> ExchangeSettings:
    return ExchangeSettings(
        swapgate_payout_addresses="BTC:bc1q-treasury",
        exchange_resume_interval=0.01,
        **overrides,
    )


def record(state: str, **columns: Any) -> dict[str, Any]:
    """An ``exchanges`` row as asyncpg returns it."""
    now = datetime.now(UTC)
    return {
        "request": orjson.dumps(REQUEST.to_json()).decode(),
        "fingerprint": REQUEST.fingerprint(),
        "state": state,
        "order_id": None,
        "quote": None,
        "settlement": None,
        "ledger_status": None,
        "ledger_body": None,
        "detail": None,
        "created_at": now,
        "updated_at": now,
    } | columns


class DatabaseAway:
    """A pool whose calls answer from a script: a value, or an exception to raise."""

    def __init__(self, **scripts: list[Any]) -> None:
        self.scripts = scripts
        self.calls: dict[str, int] = {}

    def _next(self, method: str) -> Any:
        self.calls[method] = self.calls.get(method, 0) + 1
        script = self.scripts[method]
        step = script.pop(0) if len(script) > 1 else script[0]
        if isinstance(step, BaseException):
            raise step
        return step

    async def fetch(self, *_: Any) -> Any:
        return self._next("fetch")

    async def fetchrow(self, *_: Any) -> Any:
        return self._next("fetchrow")


def orchestrator(pool: DatabaseAway, client: Any = None) -> Orchestrator:
    return Orchestrator(settings(), pool, bus=None, client=client)  # type: ignore[arg-type]


async def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.005)


async def test_the_resumer_lives_on_an_error_that_is_not_a_postgres_error() -> None:
    pool = DatabaseAway(
        fetch=[
            asyncpg.InterfaceError("connection is closed"),  # not a PostgresError
            ConnectionRefusedError(111, "Connect call failed"),
            [],
        ]
    )
    stop = asyncio.Event()
    resumer = asyncio.create_task(orchestrator(pool).run_resumer(stop))
    try:
        await wait_until(lambda: pool.calls.get("fetch", 0) >= 4 or resumer.done())
        assert not resumer.done(), resumer.exception()
    finally:
        stop.set()
        await resumer


class Order:
    order_id = "order-1"


class Swapgate:
    """Creates every order it is asked for, and counts them."""

    def __init__(self) -> None:
        self.created = 0

    async def create_order(self, _: Any) -> Order:
        self.created += 1
        return Order()


async def test_an_order_created_while_postgres_is_away_is_recorded_once_it_is_back() -> None:
    pool = DatabaseAway(
        fetchrow=[
            record(ORDERING),  # reserved -> ordering: claimed
            ConnectionRefusedError(111, "Connect call failed"),  # Postgres went away
            asyncpg.CannotConnectNowError("the database system is starting up"),
            record(ORDERED, order_id=Order.order_id),
        ]
    )
    swapgate = Swapgate()
    now = datetime.now(UTC)
    reserved = ExchangeRow(
        request=REQUEST,
        fingerprint=REQUEST.fingerprint(),
        state=RESERVED,
        order_id=None,
        quote=None,
        settlement=None,
        ledger_status=None,
        ledger_body=None,
        detail=None,
        created_at=now,
        updated_at=now,
    )
    ordered = await orchestrator(pool, swapgate)._order(reserved)
    assert ordered is not None and (ordered.state, ordered.order_id) == (ORDERED, "order-1")
    assert swapgate.created == 1  # recorded, never created twice
    assert pool.calls["fetchrow"] == 4


class ExchangesAway:
    """An orchestrator whose database is away."""

    async def start(self, _: ExchangeRequest) -> Any:
        raise ConnectionRefusedError(111, "Connect call failed")

    async def get(self, *_: str) -> Any:
        raise asyncpg.exceptions.ConnectionDoesNotExistError(
            "connection was closed in the middle of operation"
        )


def app() -> web.Application:
    application = web.Application()
    application[ORCHESTRATOR] = ExchangesAway()  # type: ignore[assignment]
    application[EXCHANGE_SETTINGS] = OperatorApiSettings.model_construct(operator_api_timeout=5.0)
    return application


async def test_looking_at_an_exchange_while_postgres_is_away_is_503_unavailable() -> None:
    request = make_mocked_request(
        "GET", "/v1/customers/c-1/exchanges/x-1", match_info={"customer_id": "c-1", "id": "x-1"},
        app=app(),
    )  # fmt: skip
    answer = await get_exchange(request)
    assert (answer.status, orjson.loads(answer.body)["error"]) == (503, "unavailable")


async def test_starting_an_exchange_while_postgres_is_away_is_503_unavailable() -> None:
    body = orjson.dumps(
        {
            "exchange_id": "x-1",
            "source_balance_id": "c-1_USDT",
            "target_balance_id": "c-1_BTC",
            "amount": "20",
            "currency_code": "USDT",
            "target_currency_code": "BTC",
        }
    )
    request = make_mocked_request(
        "POST", "/v1/customers/c-1/exchanges", match_info={"customer_id": "c-1"}, app=app()
    )

    async def read() -> bytes:
        return body

    request.read = read  # type: ignore[method-assign]
    answer = await start_exchange(request)
    assert (answer.status, orjson.loads(answer.body)["error"]) == (503, "unavailable")
