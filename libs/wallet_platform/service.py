"""Running a service process: the event loop, signals, the operational HTTP endpoints, and the
limits every HTTP listener puts on its clients.

Every service exposes ``GET /health`` (the process is alive), ``GET /ready`` (its Kafka and
Postgres connections work) and ``GET /metrics`` (Prometheus text format). A service with a public
API serves them on an operational port of their own (:func:`add_operational_app`), so that its
public port answers its contract and nothing else; the ledger, which has no public API, serves
only them (:func:`add_operational_routes`). ``/ready`` runs its checks at most once per second,
one round shared by every caller (:class:`Readiness`).

Every listener closes a connection whose request head does not arrive in time, refuses
connections beyond a cap with a 503, and closes idle kept-alive connections (:class:`HttpLimits`).
Services stop gracefully on SIGTERM or SIGINT.
"""

from __future__ import annotations

import asyncio
import gc
import resource
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final, cast

import orjson
import structlog
from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, generate_latest

from ledger_core.errors import error_body
from wallet_platform.config import CommonSettings, ConfigError
from wallet_platform.http import json_errors_middleware

ReadinessCheck = Callable[[], Awaitable[dict[str, bool]]]

READINESS = web.AppKey("readiness", list[ReadinessCheck])
"""A service's readiness checks; its resources append theirs as they open."""

OPERATIONS = web.AppKey("operations", web.Application)
"""The operational app of a public app (see :func:`add_operational_app`)."""


@dataclass(frozen=True, slots=True)
class LowLevelHandler:
    """A public port served by aiohttp's low-level server: ``handle`` answers every request of
    the port in place of the app's router and middlewares, on requests ``make_request`` makes.
    The app still owns the resources' lifetime (cleanup contexts) and the operational port."""

    handle: Callable[[BaseRequest], Awaitable[StreamResponse]]
    make_request: Callable[..., BaseRequest]


LOW_LEVEL_HANDLER = web.AppKey("low_level_handler", LowLevelHandler)
"""Set on a public app whose port is served by a :class:`LowLevelHandler` (the edge: its
routes are few and hot, and aiohttp's router and middleware chain cost more than they do)."""

READY_INTERVAL: Final = 1.0
"""Seconds a /ready answer is reused after its round of checks ended."""

CHECK_TIMEOUT: Final = 2.0
"""Seconds one readiness check may take before it counts as failed."""


class Readiness:
    """A service's readiness checks, run in rounds: one round at a time, every caller meanwhile
    waits for that round, and its answer is reused for ``interval`` seconds after it ended. So
    ``/ready`` costs at most one round trip to each dependency per interval, however often and
    however concurrently it is called.
    """

    def __init__(
        self,
        checks: list[ReadinessCheck],
        *,
        interval: float = READY_INTERVAL,
        timeout: float = CHECK_TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._checks = checks  # the live list: checks appended later count from the next round
        self._interval = interval
        self._timeout = timeout
        self._clock = clock
        self._answer: tuple[int, bytes] | None = None
        self._answered_at = 0.0
        self._round: asyncio.Future[tuple[int, bytes]] | None = None

    async def answer(self) -> tuple[int, bytes]:
        """The HTTP status (200 ready, 503 not) and JSON body of ``/ready``."""
        if self._round is None:
            fresh = self._clock() - self._answered_at < self._interval
            if self._answer is not None and fresh:
                return self._answer
            self._round = asyncio.ensure_future(self._run_round())
        # Shielded: a caller that goes away does not cancel the round the others wait for.
        return await asyncio.shield(self._round)

    async def _run_round(self) -> tuple[int, bytes]:
        try:
            results = await asyncio.gather(*(self._run(check) for check in list(self._checks)))
            checks: dict[str, bool] = {}
            for result in results:
                checks.update(result)
            ok = bool(checks) and all(checks.values())
            body = orjson.dumps({"status": "ready" if ok else "not_ready", "checks": checks})
            self._answer = (200 if ok else 503, body)
            self._answered_at = self._clock()
            return self._answer
        finally:
            self._round = None

    async def _run(self, check: ReadinessCheck) -> dict[str, bool]:
        try:
            return await asyncio.wait_for(check(), timeout=self._timeout)
        except Exception:  # a failing check means "not ready", whatever the reason
            return {getattr(check, "__name__", "check"): False}


_ROUNDS = web.AppKey("readiness_rounds", Readiness)


async def _health(_: web.Request) -> web.Response:
    return web.Response(body=b'{"status":"ok"}', content_type="application/json")


async def _ready(request: web.Request) -> web.Response:
    status, body = await request.app[_ROUNDS].answer()
    return web.Response(status=status, body=body, content_type="application/json")


async def _metrics(_: web.Request) -> web.Response:
    return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})


def _add_routes(app: web.Application, checks: list[ReadinessCheck]) -> None:
    app[_ROUNDS] = Readiness(checks)
    app.router.add_get("/health", _health)
    app.router.add_get("/ready", _ready)
    app.router.add_get("/metrics", _metrics)


def add_operational_routes(app: web.Application) -> None:
    """Add /health, /ready and /metrics to ``app`` itself, for a process whose only HTTP surface
    they are (the ledger, the simulators); readiness checks are appended to ``app[READINESS]``."""
    checks: list[ReadinessCheck] = []
    app[READINESS] = checks
    _add_routes(app, checks)


def add_operational_app(app: web.Application) -> web.Application:
    """Give ``app``, a public API, an operational app of its own (returned, and kept as
    ``app[OPERATIONS]``) that serves /health, /ready and /metrics on a separate port (see
    :func:`serve_until_signalled`), so the public port serves the contract and nothing else.

    The operational /ready runs the checks appended to ``app[READINESS]``, including those the
    app's cleanup contexts append as its resources open.
    """
    checks: list[ReadinessCheck] = []
    app[READINESS] = checks
    operations = web.Application(middlewares=[json_errors_middleware])
    _add_routes(operations, checks)
    app[OPERATIONS] = operations
    return operations


@dataclass(frozen=True)
class HttpLimits:
    """What every HTTP listener of a service allows one client (settings on
    :class:`~wallet_platform.config.CommonSettings`)."""

    head_timeout: float = 5.0
    """Seconds for a complete request head, from the connection opening or from the first byte
    of the next request on a kept-alive connection; then the connection is closed."""
    max_connections: int = 1024
    """Open connections per listener; more are answered 503 and closed."""
    keepalive_timeout: float = 75.0
    """Seconds an idle kept-alive connection stays open."""

    @classmethod
    def of(cls, settings: CommonSettings) -> HttpLimits:
        """The limits a service's settings ask for."""
        return cls(
            head_timeout=settings.http_head_timeout_ms / 1000,
            max_connections=settings.http_max_connections,
            keepalive_timeout=settings.http_keepalive_timeout_ms / 1000,
        )


OPEN_CONNECTIONS = Gauge("http_open_connections", "Open HTTP connections.", ["listener"])
REFUSED_CONNECTIONS = Counter(
    "http_connections_refused_total",
    "Connections answered 503 and closed because the listener had its maximum open.",
    ["listener"],
)
HEAD_TIMEOUTS = Counter(
    "http_head_timeouts_total",
    "Connections closed because a complete request head did not arrive in time.",
    ["listener"],
)


def _refusal(body: bytes) -> bytes:
    return (
        b"HTTP/1.1 503 Service Unavailable\r\n"
        b"Content-Type: application/json\r\n"
        b"Content-Length: %d\r\n"
        b"Retry-After: 1\r\n"
        b"Connection: close\r\n\r\n%s" % (len(body), body)
    )


REFUSAL: Final = _refusal(error_body("unavailable", "Too many open connections; retry later."))
"""The whole answer to a connection beyond the cap, written as it opens."""

REFUSAL_LINGER: Final = 1.0
"""Seconds a refused connection stays open for the client to read the 503 and close first
(closing with its request unread would reset the connection and could lose the answer)."""


class _Listener:
    """One listening socket's clients: makes aiohttp's protocol for each connection, with the
    limits, and counts the open ones."""

    __slots__ = ("head_timeouts", "limits", "loop", "open", "open_gauge", "refused", "server")

    def __init__(
        self, server: web.Server, limits: HttpLimits, name: str, loop: asyncio.AbstractEventLoop
    ) -> None:
        self.server = server
        self.limits = limits
        self.loop = loop
        self.open = 0
        self.open_gauge = OPEN_CONNECTIONS.labels(name)
        self.refused = REFUSED_CONNECTIONS.labels(name)
        self.head_timeouts = HEAD_TIMEOUTS.labels(name)

    def __call__(self) -> _LimitedRequestHandler:
        return _LimitedRequestHandler(
            self,
            self.server,
            loop=self.loop,
            keepalive_timeout=self.limits.keepalive_timeout,
            access_log=None,
        )


class _LimitedRequestHandler(RequestHandler):
    """aiohttp's HTTP/1 protocol with the listener's limits.

    A connection beyond the cap gets :data:`REFUSAL` and is closed, without ever reaching aiohttp.
    The head clock starts when a connection opens and, on a kept-alive connection, at the first
    byte after the previous response; it stops when aiohttp's parser has a complete head (its
    request count goes up). A head that arrives in one read after the first request, nearly
    every request, costs no timer at all: at most one timer per connection is armed at a time.
    """

    __slots__ = ("_awaiting_head", "_listener", "_refused", "_timer")

    def __init__(self, listener: _Listener, server: web.Server, **kwargs: Any) -> None:
        super().__init__(server, **kwargs)
        self._listener = listener
        # The head clock while one runs; for a refused connection, the end of its linger.
        self._timer: asyncio.TimerHandle | None = None
        self._awaiting_head = True
        self._refused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        listener = self._listener
        if listener.open >= listener.limits.max_connections:
            self._refuse(transport)
            return
        listener.open += 1
        listener.open_gauge.inc()
        super().connection_made(transport)
        self._timer = self._loop.call_later(listener.limits.head_timeout, self._head_timed_out)

    def _refuse(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's is one, without the base class
        self._refused = True
        self._listener.refused.inc()
        transport.write(REFUSAL)
        if transport.can_write_eof():
            transport.write_eof()
        # The client's EOF closes it at once (eof_received); this bounds a client that stays.
        self._timer = self._loop.call_later(REFUSAL_LINGER, transport.close)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._refused:
            return
        self._listener.open -= 1
        self._listener.open_gauge.dec()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # what a refused client sends is read and dropped
        heads = self._request_count
        super().data_received(data)
        if self._request_count != heads:
            self._awaiting_head = False
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
        elif self._awaiting_head and self._timer is None and data:
            self._timer = self._loop.call_later(
                self._listener.limits.head_timeout, self._head_timed_out
            )

    def log_access(
        self, request: BaseRequest, response: StreamResponse, time: float | None
    ) -> None:
        # aiohttp calls this once a response is written, on every path: from here on the
        # connection waits for the next request's head, unless that is already queued.
        super().log_access(request, response, time)
        self._awaiting_head = not self._messages

    def _head_timed_out(self) -> None:
        self._timer = None
        if self._awaiting_head and not self._request_in_progress:
            self._listener.head_timeouts.inc()
            self.force_close()


class _LimitedSite(web.BaseSite):
    """A TCP site whose connections get :class:`_LimitedRequestHandler` (aiohttp's TCPSite
    serves the runner's plain protocol, which has no request-head timeout and no cap)."""

    __slots__ = ("_host", "_listener", "_port", "_reuse_port")

    def __init__(
        self, runner: web.AppRunner, host: str, port: int, listener: _Listener, *, reuse_port: bool
    ) -> None:
        super().__init__(runner, backlog=2048)
        self._host = host
        self._port = port
        self._listener = listener
        self._reuse_port = reuse_port

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        self._server = await asyncio.get_running_loop().create_server(
            self._listener,
            self._host,
            self._port,
            backlog=self._backlog,
            reuse_port=self._reuse_port or None,
        )


_FILES_RESERVED: Final = 256
"""Open files a service needs besides its HTTP connections (Kafka, Postgres, logs)."""


def _check_open_file_limit(limits: HttpLimits, listeners: int) -> None:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = limits.max_connections * listeners + _FILES_RESERVED
    if soft != resource.RLIM_INFINITY and soft < needed:
        # Past the limit, accept() fails and clients hang in the backlog instead of getting 503.
        structlog.get_logger().warning(
            "open_file_limit_below_connection_cap", soft_limit=soft, needed=needed
        )


def install_uvloop() -> None:
    """Tune the runtime for a long-running, event-loop-bound service: uvloop, and a garbage
    collector that does not stop the loop every few hundred requests.

    Request handling allocates many short-lived, acyclic objects that reference counting frees
    at once; the cyclic collector mostly rescans long-lived startup objects. So those are frozen
    (moved out of the collector's view) and collections run far less often.
    """
    import uvloop

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)


async def serve_until_signalled(
    app: web.Application,
    settings: CommonSettings,
    port: int,
    *,
    ops_port: int | None = None,
    reuse_port: bool = False,
    on_stop: Callable[[], Awaitable[None]] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Serve ``app`` on ``WALLET_HOST:port`` and, given ``ops_port``, its operational app
    (``app[OPERATIONS]``, see :func:`add_operational_app`) on ``WALLET_OPS_HOST:ops_port``, until
    SIGTERM/SIGINT (or ``stop`` is set); then run ``on_stop`` and clean up: in-flight requests
    finish, then the app's cleanup contexts close its resources, then the operational port closes.

    Both listeners get the settings' :class:`HttpLimits`, each with a connection budget of its
    own, so a flood of the public port does not blind monitoring.
    """
    log = structlog.get_logger()
    limits = HttpLimits.of(settings)
    public_listening = False

    async def public_port_check() -> dict[str, bool]:
        return {"listening": public_listening}

    listeners: list[tuple[str, web.Application, str, int, bool]] = [
        ("public", app, settings.host, port, reuse_port)
    ]
    if ops_port is not None:
        if ops_port == port != 0:
            raise ConfigError(f"configuration error: the operational port equals the port {port}")
        # First, so /health answers (and /ready says "not ready") while the app's resources open.
        ops_host = settings.ops_host or settings.host
        listeners.insert(0, ("operations", app[OPERATIONS], ops_host, ops_port, False))
        # The operational port opens first, so /ready must also say whether the public port is
        # open yet: ready with every check passing, but not yet listening, is not ready.
        app[READINESS].insert(0, public_port_check)
    _check_open_file_limit(limits, len(listeners))
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    runners: list[web.AppRunner] = []
    try:
        for name, served, host, at_port, reuse in listeners:
            runner = web.AppRunner(
                served, access_log=None, handle_signals=False, shutdown_timeout=10.0
            )
            await runner.setup()
            runners.append(runner)
            assert runner.server is not None
            low_level = served.get(LOW_LEVEL_HANDLER)
            if low_level is not None:
                # The runner's server keeps its connections, limits and graceful shutdown; only
                # what answers a request changes.
                runner.server.request_handler = low_level.handle
                runner.server.request_factory = low_level.make_request
            listener = _Listener(runner.server, limits, name, loop)
            await _LimitedSite(runner, host, at_port, listener, reuse_port=reuse).start()
            log.info("listening", host=host, port=at_port, listener=name)
        public_listening = True
        await stop.wait()
        log.info("stopping")
        if on_stop is not None:
            await on_stop()
    finally:
        for runner in reversed(runners):  # the public app first, the operational port last
            await runner.cleanup()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    log.info("stopped")
