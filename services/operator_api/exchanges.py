"""``POST /v1/customers/{customer_id}/exchanges`` and ``GET .../exchanges/{exchange_id}``.

The POST checks the body, quotes at Swapgate, and reserves the amount in the ledger (waiting for
its answer once); the order, its polling and the settlement or void continue in the background
(see :mod:`exchange.orchestrator`). Answers:

* 202 ``{exchange}``: accepted (its ``state`` says how far it got); the same request again
  answers the same way, with the exchange as it stands;
* the ledger's refusal of the reservation (402 ``insufficient_funds``, 404, 451), with the
  exchange under ``exchange``: nothing is held;
* 400s for a bad body, 409 ``request_id_reused`` for an exchange id used with another request,
  422 ``amount_out_of_range`` (with the quote's ``limits``), 503 ``unavailable`` when Swapgate
  or the ledger did not answer in time (retry the same request), when the exchanges' database is
  away (both endpoints; retry), or when exchanges are not configured.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import structlog
from aiohttp import web

from exchange.orchestrator import Orchestrator, Refusal
from exchange.requests import parse_request
from exchange.runtime import open_runtime
from ledger_core.requests import RequestError, check_id
from operator_api.auth import API_KEY
from operator_api.settings import OperatorApiSettings
from swapgate import InvalidMarkup
from wallet_platform.health import command_bus_check, postgres_check, task_check
from wallet_platform.http import json_error
from wallet_platform.postgres import UNAVAILABLE as DATABASE_AWAY
from wallet_platform.service import READINESS

log = structlog.get_logger(__name__)

ORCHESTRATOR = web.AppKey("orchestrator", Orchestrator)
EXCHANGE_SETTINGS = web.AppKey("exchange_settings", OperatorApiSettings)

NOT_CONFIGURED = "Exchanges are not configured on this instance (WALLET_SWAPGATE_BASE_URL)."
NO_DATABASE = "The exchanges' database is unavailable; retry the request."


def _orchestrator(request: web.Request) -> Orchestrator | None:
    return request.app.get(ORCHESTRATOR)


async def start_exchange(request: web.Request) -> web.Response:
    orchestrator = _orchestrator(request)
    if orchestrator is None:
        return json_error("unavailable", NOT_CONFIGURED)
    try:
        exchange = parse_request(request.match_info["customer_id"], await request.read())
    except RequestError as exc:
        return json_error(exc.code, exc.message)
    settings = request.app[EXCHANGE_SETTINGS]
    key = request.get(API_KEY)
    if key is not None:
        # Exchanges run at the configured markup; a key may only start them when that markup
        # is inside its minMarkup..maxMarkup (Swapgate's per-key bounds).
        try:
            key.settings.markup_policy(settings.swapgate_markup)
        except InvalidMarkup as exc:
            return json_error("markup_not_allowed", str(exc))
    timeout = settings.operator_api_timeout
    try:
        async with asyncio.timeout(timeout):
            answer = await orchestrator.start(exchange)
    except Refusal as exc:
        return web.json_response(exc.body(), status=exc.status)
    except TimeoutError:  # before DATABASE_AWAY, which holds OSError, TimeoutError's base
        # Whatever was done is recorded: the same request again continues it.
        log.warning("exchange_start_timeout", exchange_id=exchange.exchange_id)
        return json_error("unavailable", "The exchange did not start in time; retry the request.")
    except DATABASE_AWAY as exc:
        # Postgres restarting or down: nothing or a resumable step was recorded, as above.
        log.warning(
            "exchange_database_unavailable", exchange_id=exchange.exchange_id, error=repr(exc)
        )
        return json_error("unavailable", NO_DATABASE)
    return web.json_response(answer.body, status=answer.status)


async def get_exchange(request: web.Request) -> web.Response:
    orchestrator = _orchestrator(request)
    if orchestrator is None:
        return json_error("unavailable", NOT_CONFIGURED)
    customer_id, exchange_id = request.match_info["customer_id"], request.match_info["id"]
    try:
        check_id(customer_id, "customer_id")
        check_id(exchange_id, "exchange_id")
    except RequestError as exc:
        return json_error(exc.code, exc.message)
    try:
        row = await orchestrator.get(customer_id, exchange_id)
    except DATABASE_AWAY as exc:
        log.warning("exchange_database_unavailable", exchange_id=exchange_id, error=repr(exc))
        return json_error("unavailable", NO_DATABASE)
    if row is None:
        return json_error("exchange_not_found")
    return web.json_response(row.view())


async def exchanges_context(app: web.Application) -> AsyncIterator[None]:
    """With exchanges configured: the orchestrator (Postgres, Kafka, Swapgate) and its resumer,
    which picks up unfinished exchanges at start and every ``WALLET_EXCHANGE_RESUME_INTERVAL``."""
    settings = app[EXCHANGE_SETTINGS]
    if not settings.exchanges_enabled:
        yield
        return
    async with open_runtime(
        settings, reply_partition=settings.exchange_reply_partition, client_id="operator-api"
    ) as runtime:
        app[ORCHESTRATOR] = runtime.orchestrator
        stop = asyncio.Event()
        resumer = asyncio.create_task(runtime.orchestrator.run_resumer(stop))
        app[READINESS].extend(
            [
                postgres_check(runtime.pool),
                command_bus_check(runtime.orchestrator.bus),
                task_check("exchange_resumer", resumer),
            ]
        )
        try:
            yield
        finally:
            stop.set()
            await resumer


def add_exchange_routes(app: web.Application, settings: OperatorApiSettings) -> None:
    app[EXCHANGE_SETTINGS] = settings
    app.router.add_post("/v1/customers/{customer_id}/exchanges", start_exchange)
    app.router.add_get("/v1/customers/{customer_id}/exchanges/{id}", get_exchange)
    app.cleanup_ctx.append(exchanges_context)
