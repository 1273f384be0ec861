"""Running a service process: the event loop, signals, and the operational HTTP endpoints.

Every service exposes ``GET /health`` (the process is alive), ``GET /ready`` (its Kafka and
Postgres connections work) and ``GET /metrics`` (Prometheus text format), and stops gracefully
on SIGTERM or SIGINT.
"""

from __future__ import annotations

import asyncio
import gc
import signal
from collections.abc import Awaitable, Callable

import orjson
import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

ReadinessCheck = Callable[[], Awaitable[dict[str, bool]]]

READINESS = web.AppKey("readiness", list[ReadinessCheck])


async def _health(_: web.Request) -> web.Response:
    return web.Response(body=b'{"status":"ok"}', content_type="application/json")


async def _ready(request: web.Request) -> web.Response:
    checks: dict[str, bool] = {}
    for check in request.app[READINESS]:
        try:
            checks.update(await asyncio.wait_for(check(), timeout=2.0))
        except Exception:  # a failing check means "not ready", whatever the reason
            checks[getattr(check, "__name__", "check")] = False
    ok = all(checks.values()) and bool(checks)
    body = orjson.dumps({"status": "ready" if ok else "not_ready", "checks": checks})
    return web.Response(status=200 if ok else 503, body=body, content_type="application/json")


async def _metrics(_: web.Request) -> web.Response:
    return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})


def add_operational_routes(app: web.Application) -> None:
    """Add /health, /ready and /metrics; readiness checks are appended to ``app[READINESS]``."""
    app[READINESS] = []
    app.router.add_get("/health", _health)
    app.router.add_get("/ready", _ready)
    app.router.add_get("/metrics", _metrics)


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
    host: str,
    port: int,
    *,
    reuse_port: bool = False,
    on_stop: Callable[[], Awaitable[None]] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Serve ``app`` until SIGTERM/SIGINT (or ``stop`` is set), then run ``on_stop`` and clean
    up: in-flight requests finish, then the app's cleanup contexts close its resources."""
    log = structlog.get_logger()
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=10.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_port=reuse_port or None, backlog=2048)
    await site.start()
    log.info("listening", host=host, port=port)
    await stop.wait()
    log.info("stopping")
    if on_stop is not None:
        await on_stop()
    await runner.cleanup()
    log.info("stopped")
