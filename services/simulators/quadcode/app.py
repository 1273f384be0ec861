"""The simulator's aiohttp application: middlewares for the cross-cutting rules, then routes.

Middlewares (outermost first), applied to the gateway API only:

1. ``record_exchange``: keeps each request/response pair for ``GET /_sim/exchanges`` (the
   contract test replays them through openapi-core);
2. ``forced_response``: a test hook may delay or replace the next answers;
3. ``ip_allowlist``: 403 for callers outside the allowed networks;
4. ``authenticate``: 401 unless the B2B client's JWT passes Quadcode's rules.

Like every process of the project it also answers ``GET /health``, ``GET /ready`` and
``GET /metrics`` (``deploy/local/services.sh`` waits for ``/ready``).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web
from aiohttp.typedefs import Handler
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from quadcode_gateway.tokens import (
    QUADCODE_ISSUER,
    Clock,
    TokenSigner,
    load_private_key,
    load_public_key,
)
from simulators.quadcode.auth import ClientTokenVerifier, TokenRejected
from simulators.quadcode.config import SimulatorConfig
from simulators.quadcode.gateway import (
    GATEWAY_PREFIX,
    STATE,
    add_gateway_routes,
    default_body,
    error_response,
    json_response,
)
from simulators.quadcode.hooks import QC_PUBLIC_PEM, QC_SIGNER, WALLET_SESSION, add_hook_routes
from simulators.quadcode.state import SimulatorState
from wallet_platform.service import READINESS, add_operational_routes

VERIFIER = web.AppKey("client_token_verifier", ClientTokenVerifier)
_RECORDED_REQUEST_HEADERS = ("Authorization", "Content-Type")


def _text(body: object) -> str:
    return body.decode("utf-8", "replace") if isinstance(body, bytes) else ""


def _record(
    exchanges: deque[dict[str, object]],
    request: web.Request,
    request_body: bytes,
    response: web.StreamResponse,
) -> None:
    exchanges.append(
        {
            "method": request.method,
            "path": request.path,
            "query": {str(name): value for name, value in request.query.items()},
            "request_headers": {
                name: request.headers[name]
                for name in _RECORDED_REQUEST_HEADERS
                if name in request.headers
            },
            "request_body": request_body.decode("utf-8", "replace"),
            "status": response.status,
            "response_content_type": response.content_type,
            "response_headers": {str(name): value for name, value in response.headers.items()},
            "response_body": _text(getattr(response, "body", None)),
        }
    )


@web.middleware
async def record_exchange(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Record gateway request/response pairs (bounded ring buffer).

    Only requests that arrived since the last reset are recorded: one still held by a forced delay
    when its client gave up and the next test reset the simulator belongs to the earlier test.
    """
    if not request.path.startswith(GATEWAY_PREFIX):
        return await handler(request)
    exchanges = request.app[STATE].exchanges  # the buffer of the request's arrival
    request_body = await request.read()
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        _record(exchanges, request, request_body, exc)
        raise
    _record(exchanges, request, request_body, response)
    return response


@web.middleware
async def forced_response(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Apply a ``/_sim/force`` entry: wait ``delay`` seconds, then answer with its status."""
    if not request.path.startswith(GATEWAY_PREFIX):
        return await handler(request)
    forced = request.app[STATE].take_forced(request.method, request.path)
    if forced is None:
        return await handler(request)
    if forced.delay > 0:
        await asyncio.sleep(forced.delay)
    if forced.status is None:
        return await handler(request)
    body = forced.body
    if body is None and forced.status >= 400:
        body = default_body(forced.status, request.path)
    return json_response(forced.status, body, forced.headers)


@web.middleware
async def ip_allowlist(request: web.Request, handler: Handler) -> web.StreamResponse:
    """403 for a caller whose address is not on the allowlist (Quadcode's IP check)."""
    if request.path.startswith(GATEWAY_PREFIX) and not request.app[STATE].rules.ip_allowed(
        request.remote
    ):
        return error_response(403, f"IP address {request.remote} is not allowed.")
    return await handler(request)


@web.middleware
async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    """401 unless the bearer token is a valid ES256 JWT of the configured client."""
    if request.path.startswith(GATEWAY_PREFIX):
        try:
            request.app[VERIFIER].verify(request.headers.get("Authorization"))
        except TokenRejected as exc:
            return error_response(401, str(exc))
    return await handler(request)


async def _serving() -> dict[str, bool]:
    # The simulator holds everything in memory: once it answers HTTP, it is ready.
    return {"simulator": True}


async def _wallet_session(app: web.Application) -> AsyncIterator[None]:
    # One pooled session for every wallet callback the trader makes.
    async with aiohttp.ClientSession() as session:
        app[WALLET_SESSION] = session
        yield


def build_app(config: SimulatorConfig, *, clock: Clock = time.time) -> web.Application:
    """The simulator application for ``config``; ``clock`` drives JWT time checks."""
    app = web.Application(
        middlewares=[record_exchange, forced_response, ip_allowlist, authenticate]
    )
    app[STATE] = SimulatorState(config)
    app[VERIFIER] = ClientTokenVerifier(
        [load_public_key(path) for path in config.client_public_keys],
        issuer=config.issuer,
        audience=config.audience.value,
        leeway=config.leeway,
        clock=clock,
    )
    # Quadcode's own key, for the trader's callbacks to the wallet. Without a configured one
    # an ephemeral key is made; its public half is served at /_sim/qc-public-key.
    qc_key = (
        load_private_key(config.qc_private_key)
        if config.qc_private_key
        else ec.generate_private_key(ec.SECP256R1())
    )
    app[QC_SIGNER] = TokenSigner(
        qc_key, issuer=QUADCODE_ISSUER, audience=config.audience, lifetime=600, clock=clock
    )
    app[QC_PUBLIC_PEM] = qc_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    app.cleanup_ctx.append(_wallet_session)
    add_operational_routes(app)
    app[READINESS].append(_serving)
    add_gateway_routes(app)
    add_hook_routes(app)
    return app
