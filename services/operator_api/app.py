"""The operator API's HTTP application: authentication, routes and the Quadcode client.

Every request under ``/v1/`` is signed with an operator API key, as Swapgate's API v2 requests
are, checked against the key's role, and audited: see :mod:`operator_api.auth`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import structlog
from aiohttp import web

from operator_api.adjustment_routes import add_adjustment_routes
from operator_api.auth import operator_auth_middleware, operator_keys_context
from operator_api.console_files import add_console_routes
from operator_api.dead_letters import add_dead_letter_routes
from operator_api.exchanges import add_exchange_routes
from operator_api.jobs import add_job_routes
from operator_api.key_routes import add_key_routes
from operator_api.ledger_routes import add_ledger_routes
from operator_api.reconciliation import add_reconciliation_routes
from operator_api.settings import OperatorApiSettings
from operator_api.trading_room import (
    OUTCOMES,
    BadInput,
    open_room,
    outcome_response,
    parse_body,
    parse_customer_id,
    parse_request,
    shown_outcome,
)
from quadcode_gateway import (
    QuadcodeGatewayClient,
    TokenSigner,
    TradingRoomOutcome,
    TradingRoomStatus,
)
from wallet_platform.http import json_error, json_errors_middleware
from wallet_platform.service import READINESS, add_operational_app

SETTINGS = web.AppKey("settings", OperatorApiSettings)
SIGNER = web.AppKey("signer", TokenSigner)
GATEWAY = web.AppKey("gateway", QuadcodeGatewayClient)

log = structlog.get_logger(__name__)


async def trading_room(request: web.Request) -> web.Response:
    """``POST /v1/customers/{customer_id}/trading-room``: see :mod:`operator_api.trading_room`."""
    settings = request.app[SETTINGS]
    try:
        customer_id = parse_customer_id(request.match_info["customer_id"])
        checked = parse_request(customer_id, parse_body(await request.read()))
    except BadInput as exc:
        return json_error(exc.code, exc.message)
    try:
        async with asyncio.timeout(settings.operator_api_timeout):
            outcome = await open_room(request.app[GATEWAY], checked)
    except TimeoutError:
        # The website must not hang on Quadcode's retries; the customer can simply try again.
        log.warning("trading_room_timeout", customer_id=customer_id)
        outcome = TradingRoomOutcome(status=TradingRoomStatus.ERROR)
    OUTCOMES.labels(shown_outcome(outcome)).inc()
    return outcome_response(outcome)


async def _signer_ready() -> dict[str, bool]:
    # Deliberately no call to Quadcode: an outage there must not take this endpoint out of the
    # load balancer; it answers 503 "unavailable" with a message the website can show instead.
    return {"quadcode_signer": True}


def build_app(settings: OperatorApiSettings) -> web.Application:
    """The application; reads the master keys and our Quadcode key now, so bad ones stop
    start-up."""
    master = settings.master_keys()
    app = web.Application(
        client_max_size=settings.operator_api_max_body_bytes,
        middlewares=[json_errors_middleware, operator_auth_middleware()],
    )
    app.cleanup_ctx.append(
        operator_keys_context(
            master,
            dsn=settings.pg_dsn,
            window_ms=settings.operator_signature_window_ms,
            cache_ttl_ms=settings.operator_key_cache_ttl_ms,
            trusted_proxies=settings.trusted_proxies(),
        )
    )
    app[SETTINGS] = settings
    app[SIGNER] = settings.checked_signer()
    settings.check()  # the exchange settings, when exchanges are configured
    add_operational_app(app)  # /health, /ready, /metrics: on their own port
    app[READINESS].append(_signer_ready)
    add_key_routes(app, master)
    app.router.add_post("/v1/customers/{customer_id}/trading-room", trading_room)
    app.cleanup_ctx.append(_gateway_client)
    add_exchange_routes(app, settings)
    add_ledger_routes(app, settings)
    add_dead_letter_routes(app, settings)
    add_job_routes(app, settings)
    add_adjustment_routes(app, settings.four_eyes())
    add_reconciliation_routes(app, settings)
    # The console's static files: public, outside /v1/, so the middleware does not guard them.
    add_console_routes(app)
    return app


async def _gateway_client(app: web.Application) -> AsyncIterator[None]:
    """One pooled Quadcode client, made inside the running loop and closed after the last
    request has finished."""
    settings = app[SETTINGS]
    client = QuadcodeGatewayClient.create(
        base_url=settings.quadcode_base_url,
        signer=app[SIGNER],
        request_timeout=settings.quadcode_request_timeout,
        connect_timeout=settings.quadcode_connect_timeout,
        retry=settings.retry_policy(),
    )
    app[GATEWAY] = client
    try:
        yield
    finally:
        await client.close()
