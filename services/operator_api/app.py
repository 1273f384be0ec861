"""The operator API's HTTP application: authentication, routes and the Quadcode client.

Authentication is, for now, one static shared secret sent as ``Authorization: Bearer <secret>``
and compared in constant time. It is temporary: HMAC-signed operator API keys (per caller,
rotatable, with a timestamp against replays) replace it before the API grows write operations
on the ledger.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import AsyncIterator

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from operator_api.exchanges import add_exchange_routes
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
from wallet_platform.callback_auth import AuthError, bearer_token
from wallet_platform.http import json_error, json_errors_middleware
from wallet_platform.service import READINESS, add_operational_app

SETTINGS = web.AppKey("settings", OperatorApiSettings)
SIGNER = web.AppKey("signer", TokenSigner)
GATEWAY = web.AppKey("gateway", QuadcodeGatewayClient)

log = structlog.get_logger(__name__)


def operator_auth_middleware(token_digest: bytes, prefix: str = "/v1/") -> Middleware:
    """403 (JSON) for a request under ``prefix`` without the shared secret (the operational
    routes are on a port of their own). Runs before routing errors, so an unauthenticated
    caller learns nothing about which routes exist."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith(prefix):
            return await handler(request)
        try:
            secret = bearer_token(request.headers.get("Authorization"))
        except AuthError as exc:
            return json_error(exc.code, exc.message)
        # Digest against digest: constant time, and the secret's length does not leak.
        given = hashlib.sha256(secret.encode("utf-8", "surrogateescape")).digest()
        if not hmac.compare_digest(given, token_digest):
            return json_error("invalid_credentials")
        return await handler(request)

    return middleware


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
    """The application; reads the secret and our Quadcode key now, so bad ones stop start-up."""
    app = web.Application(
        client_max_size=settings.operator_api_max_body_bytes,
        middlewares=[json_errors_middleware, operator_auth_middleware(settings.token_digest())],
    )
    app[SETTINGS] = settings
    app[SIGNER] = settings.checked_signer()
    settings.check()  # the exchange settings, when exchanges are configured
    add_operational_app(app)  # /health, /ready, /metrics: on their own port
    app[READINESS].append(_signer_ready)
    app.router.add_post("/v1/customers/{customer_id}/trading-room", trading_room)
    app.cleanup_ctx.append(_gateway_client)
    add_exchange_routes(app, settings)
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
