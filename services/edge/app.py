"""The edge's HTTP application: routes, middlewares and the resources they share."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Literal
from urllib.parse import quote

import aiohttp
from aiohttp import web
from aiokafka.errors import KafkaError
from yarl import URL

from edge.settings import EdgeSettings
from ledger_core.requests import RequestError, check_id, parse_callback
from wallet_platform.callback_auth import IpPolicy
from wallet_platform.command_bus import (
    CommandBus,
    CommandNotQueued,
    OutcomeTimeout,
    open_command_bus,
)
from wallet_platform.health import command_bus_check
from wallet_platform.http import (
    CLIENT_IP,
    callback_auth_middleware,
    cidrs,
    json_error,
    json_errors_middleware,
)
from wallet_platform.service import READINESS, ReadinessCheck, add_operational_app

BUS = web.AppKey("bus", CommandBus)
SETTINGS = web.AppKey("settings", EdgeSettings)
PROJECTION = web.AppKey("projection", aiohttp.ClientSession)

_JSON = "application/json"


async def _money(request: web.Request, kind: Literal["debit", "credit"]) -> web.Response:
    settings = request.app[SETTINGS]
    body = await request.read()
    try:
        cmd = parse_callback(
            kind, request.match_info["customer_id"], request.match_info["balance_id"], body
        )
    except RequestError as exc:
        return json_error(exc.code, exc.message)
    try:
        status, payload = await request.app[BUS].submit(
            cmd, settings.edge_outcome_timeout_ms / 1000
        )
    except CommandNotQueued:
        # Kafka is away: nothing was sent, so this is no timeout of the ledger's.
        return json_error("unavailable", "the command could not be queued: Kafka is unavailable")
    except OutcomeTimeout:
        return json_error("ledger_timeout")
    except KafkaError as exc:
        return json_error("unavailable", f"the command could not be queued: {type(exc).__name__}")
    return web.Response(status=status, body=payload, content_type=_JSON)


async def debit(request: web.Request) -> web.Response:
    return await _money(request, "debit")


async def credit(request: web.Request) -> web.Response:
    return await _money(request, "credit")


async def get_balance(request: web.Request) -> web.Response:
    """Forward to the projection, which answers from its read model.

    The projection's URL is built from the checked ids, each percent-encoded whole, never from
    the path as received: that one is already decoded, so ``..%2F`` in it would become a path
    step at the projection. ``encoded=True`` stops yarl from decoding or normalising it again.
    """
    try:
        customer_id = check_id(request.match_info["customer_id"], "customer_id")
        balance_id = check_id(request.match_info["balance_id"], "balance_id")
    except RequestError as exc:
        return json_error(exc.code, exc.message)
    url = URL.build(
        path=f"/v1/customers/{quote(customer_id, safe='')}/balances/{quote(balance_id, safe='')}",
        encoded=True,
    )
    headers = {"X-Forwarded-For": request[CLIENT_IP]}
    if "Authorization" in request.headers:
        headers["Authorization"] = request.headers["Authorization"]
    try:
        async with request.app[PROJECTION].get(url, headers=headers) as resp:
            payload = await resp.read()
            return web.Response(status=resp.status, body=payload, content_type=_JSON)
    except (aiohttp.ClientError, TimeoutError):
        return json_error("unavailable", "the balance read model is unavailable")


def build_app(settings: EdgeSettings) -> web.Application:
    verifier = settings.verifier()
    ips = IpPolicy(cidrs(settings.allowed_ips), cidrs(settings.edge_trusted_proxies))
    app = web.Application(
        client_max_size=settings.edge_max_body_bytes,
        middlewares=[json_errors_middleware, callback_auth_middleware(verifier, ips)],
    )
    app[SETTINGS] = settings
    # The callbacks first: the router tries routes in order, and they are nearly every request.
    base = "/v1/customers/{customer_id}/balances/{balance_id}"
    app.router.add_post(base + "/debit", debit)
    app.router.add_post(base + "/credit", credit)
    app.router.add_get(base, get_balance)
    add_operational_app(app)  # /health, /ready, /metrics: on their own port, never on this one
    app.cleanup_ctx.append(_resources)
    return app


async def _resources(app: web.Application) -> AsyncIterator[None]:
    """Kafka producer, reply consumer and projection client: opened before the first request,
    closed after the last one finished (aiohttp runs cleanup after in-flight handlers)."""
    settings = app[SETTINGS]
    async with (
        open_command_bus(
            settings.kafka_bootstrap,
            f"edge-{settings.edge_reply_partition}",
            topic_prefix=settings.topic_prefix,
            reply_partition=settings.edge_reply_partition,
            linger_ms=settings.edge_producer_linger_ms,
            fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
        ) as bus,
        aiohttp.ClientSession(
            settings.projection_url,
            timeout=aiohttp.ClientTimeout(total=2.0),
            connector=aiohttp.TCPConnector(limit=256, keepalive_timeout=30),
        ) as session,
    ):
        app[BUS] = bus
        app[PROJECTION] = session
        app[READINESS].append(command_bus_check(bus))
        app[READINESS].append(_projection_check(session, settings.projection_ops_url + "/ready"))
        yield


def _projection_check(session: aiohttp.ClientSession, ready_url: str) -> ReadinessCheck:
    async def projection() -> dict[str, bool]:
        async with session.get(ready_url) as resp:
            return {"projection": resp.status == 200}

    return projection
