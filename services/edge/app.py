"""The edge's public port: Quadcode's callbacks, dispatched by hand on aiohttp's low-level server.

The public port serves three routes and nothing else, and it serves them about a thousand times a
second, so it skips aiohttp's application layer (router, middleware chain, per-request match
info): :meth:`CallbackRoutes.handle` is the low-level handler of the port
(:data:`~wallet_platform.service.LOW_LEVEL_HANDLER`). It answers exactly as the router and the
middlewares did: the same statuses, bodies and headers, in the same order of checks (the
``Expect`` handshake, then authentication of everything under ``/v1/``, then the route, then the
method). The application stays for what it is good at: the resources' lifetime (opened before
the first request, closed after the last) and the operational port.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Literal
from urllib.parse import quote

import aiohttp
import structlog
from aiohttp import hdrs, web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http import HttpVersion11, RawRequestMessage
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler
from aiokafka.errors import KafkaError
from yarl import URL

from edge.settings import EdgeSettings
from ledger_core.requests import RequestError, check_id, parse_callback
from wallet_platform.callback_auth import AuthError, IpPolicy, TokenVerifier, bearer_token
from wallet_platform.command_bus import (
    CommandBus,
    CommandNotQueued,
    OutcomeTimeout,
    open_command_bus,
)
from wallet_platform.health import command_bus_check
from wallet_platform.http import cidrs, json_error
from wallet_platform.service import (
    LOW_LEVEL_HANDLER,
    READINESS,
    LowLevelHandler,
    ReadinessCheck,
    add_operational_app,
)

_JSON = "application/json"

log = structlog.get_logger()

# The three routes in one pattern, matched against the path as aiohttp's router matched it (its
# ``path_safe`` form: percent-decoded except "%2F" and "%25", so an encoded "/" stays inside its
# segment). A segment is what the router's "{name}" matched: anything but "/", "{" and "}".
_CALLBACK = re.compile(r"/v1/customers/([^{}/]+)/balances/([^{}/]+)(/debit|/credit)?")
# Authentication covers everything under this prefix (of the decoded path), known route or not.
_AUTHENTICATED = "/v1/"


def _segment(value: str) -> str:
    """A matched segment as the router handed it over: its "%2F" and "%25" decoded last."""
    if "%" not in value:
        return value
    return value.replace("%2F", "/").replace("%25", "%")


class CallbackRoutes:
    """The public port's handler: authentication, routing and the three callbacks."""

    def __init__(self, settings: EdgeSettings, verifier: TokenVerifier, ips: IpPolicy) -> None:
        self.settings = settings
        self._verifier = verifier
        self._ips = ips
        self._outcome_wait = settings.edge_outcome_timeout_ms / 1000
        self._max_body = settings.edge_max_body_bytes
        # Set while the app's resources are open (see _resources).
        self.bus: CommandBus | None = None
        self.projection: aiohttp.ClientSession | None = None

    def make_request(
        self,
        message: RawRequestMessage,
        payload: StreamReader,
        protocol: RequestHandler,
        writer: AbstractStreamWriter,
        task: asyncio.Task[None],
    ) -> web.BaseRequest:
        """The port's requests: plain requests (no app, no match info) with the body limit."""
        return web.BaseRequest(
            message,
            payload,
            protocol,
            writer,
            task,
            asyncio.get_running_loop(),
            client_max_size=self._max_body,
        )

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        """Answer one request on the public port."""
        if request.headers.get(hdrs.EXPECT):
            # As aiohttp's router did, before anything else (an unknown expectation is its 417).
            await _expect(request)
        try:
            return await self._dispatch(request)
        except web.HTTPRequestEntityTooLarge:
            return json_error("body_too_large")
        except web.HTTPException:
            raise
        except Exception:
            log.exception("unhandled_error", path=request.path)
            return json_error("internal_error")

    async def _dispatch(self, request: web.BaseRequest) -> web.StreamResponse:
        client = ""
        if request.path.startswith(_AUTHENTICATED):
            refusal, client = self._authenticate(request)
            if refusal is not None:
                return refusal
        route = _CALLBACK.fullmatch(request.rel_url.path_safe)
        if route is None:
            return json_error("route_not_found")
        customer_id, balance_id, action = route.groups()
        method = request.method
        if action is None:
            if method == hdrs.METH_GET or method == hdrs.METH_HEAD:
                return await self.balance(
                    request, _segment(customer_id), _segment(balance_id), client
                )
        elif method == hdrs.METH_POST:
            kind: Literal["debit", "credit"] = "debit" if action == "/debit" else "credit"
            return await self.money(request, kind, _segment(customer_id), _segment(balance_id))
        return json_error("method_not_allowed")

    def _authenticate(self, request: web.BaseRequest) -> tuple[web.Response | None, str]:
        """(a 403 to answer, or None; the caller's address as text when it is allowed)."""
        transport = request.transport
        peer = transport.get_extra_info("peername") if transport is not None else None
        # Every X-Forwarded-For header, in order: a second header must not hide behind the first.
        client = self._ips.client_ip(
            peer[0] if isinstance(peer, tuple) else "",
            request.headers.getall(hdrs.X_FORWARDED_FOR, ()),
        )
        if client is None or not self._ips.allowed(client):
            # The fixed message: neither the address nor any header text is echoed back.
            return json_error("ip_not_allowed"), ""
        try:
            self._verifier.verify(bearer_token(request.headers.get(hdrs.AUTHORIZATION)))
        except AuthError as exc:
            return json_error(exc.code, exc.message), ""
        return None, str(client)

    async def money(
        self,
        request: web.BaseRequest,
        kind: Literal["debit", "credit"],
        customer_id: str,
        balance_id: str,
    ) -> web.Response:
        """A debit or credit: validated here, decided by the ledger, answered with its outcome."""
        body = await request.read()
        try:
            cmd = parse_callback(kind, customer_id, balance_id, body)
        except RequestError as exc:
            return json_error(exc.code, exc.message)
        assert self.bus is not None, "no request is served before the resources open"
        try:
            status, payload = await self.bus.submit(cmd, self._outcome_wait)
        except CommandNotQueued:
            # Kafka is away: nothing was sent, so this is no timeout of the ledger's.
            return json_error(
                "unavailable", "the command could not be queued: Kafka is unavailable"
            )
        except OutcomeTimeout:
            return json_error("ledger_timeout")
        except KafkaError as exc:
            return json_error(
                "unavailable", f"the command could not be queued: {type(exc).__name__}"
            )
        return web.Response(status=status, body=payload, content_type=_JSON)

    async def balance(
        self, request: web.BaseRequest, customer_id: str, balance_id: str, client: str
    ) -> web.Response:
        """Forward to the projection, which answers from its read model.

        The projection's URL is built from the checked ids, each percent-encoded whole, never
        from the path as received: that one is already decoded, so ``..%2F`` in it would become
        a path step at the projection. ``encoded=True`` stops yarl from decoding or normalising
        it again.
        """
        try:
            check_id(customer_id, "customer_id")
            check_id(balance_id, "balance_id")
        except RequestError as exc:
            return json_error(exc.code, exc.message)
        url = URL.build(
            path=f"/v1/customers/{quote(customer_id, safe='')}"
            f"/balances/{quote(balance_id, safe='')}",
            encoded=True,
        )
        headers = {hdrs.X_FORWARDED_FOR: client}
        if hdrs.AUTHORIZATION in request.headers:
            headers[hdrs.AUTHORIZATION] = request.headers[hdrs.AUTHORIZATION]
        assert self.projection is not None, "no request is served before the resources open"
        try:
            async with self.projection.get(url, headers=headers) as resp:
                payload = await resp.read()
                return web.Response(status=resp.status, body=payload, content_type=_JSON)
        except (aiohttp.ClientError, TimeoutError):
            return json_error("unavailable", "the balance read model is unavailable")


ROUTES = web.AppKey("routes", CallbackRoutes)


async def _expect(request: web.BaseRequest) -> None:
    """aiohttp's own handling of ``Expect``: "100 Continue" for ``100-continue`` in HTTP/1.1,
    a 417 for any other expectation; nothing in HTTP/1.0."""
    expect = request.headers.get(hdrs.EXPECT, "")
    if request.version == HttpVersion11:
        if expect.lower() == "100-continue":
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            request.writer.output_size = 0  # the interim answer is no part of the response
        else:
            raise web.HTTPExpectationFailed(text=f"Unknown Expect: {expect}")


def build_app(settings: EdgeSettings) -> web.Application:
    """The edge: its public port served by :class:`CallbackRoutes`, its resources, and its
    operational port (/health, /ready, /metrics)."""
    verifier = settings.verifier()
    ips = IpPolicy(cidrs(settings.allowed_ips), cidrs(settings.edge_trusted_proxies))
    routes = CallbackRoutes(settings, verifier, ips)
    app = web.Application()
    app[ROUTES] = routes
    app[LOW_LEVEL_HANDLER] = LowLevelHandler(routes.handle, routes.make_request)
    add_operational_app(app)  # /health, /ready, /metrics: on their own port, never on this one
    app.cleanup_ctx.append(_resources)
    return app


async def _resources(app: web.Application) -> AsyncIterator[None]:
    """Kafka producer, reply consumer and projection client: opened before the first request,
    closed after the last one finished (aiohttp runs cleanup after in-flight handlers)."""
    routes = app[ROUTES]
    settings = routes.settings
    async with (
        open_command_bus(
            settings.kafka_bootstrap,
            f"edge-{settings.edge_reply_partition}",
            topic_prefix=settings.topic_prefix,
            reply_partition=settings.edge_reply_partition,
            linger_ms=settings.edge_producer_linger_ms,
            fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
            producer_kind=settings.kafka_producer,
        ) as bus,
        aiohttp.ClientSession(
            settings.projection_url,
            timeout=aiohttp.ClientTimeout(total=2.0),
            connector=aiohttp.TCPConnector(limit=256, keepalive_timeout=30),
        ) as session,
    ):
        routes.bus = bus
        routes.projection = session
        app[READINESS].append(command_bus_check(bus))
        app[READINESS].append(_projection_check(session, settings.projection_ops_url + "/ready"))
        yield


def _projection_check(session: aiohttp.ClientSession, ready_url: str) -> ReadinessCheck:
    async def projection() -> dict[str, bool]:
        async with session.get(ready_url) as resp:
            return {"projection": resp.status == 200}

    return projection
