"""The simulator's HTTP surface: Swapgate's endpoints, our order status call, test hooks.

Middlewares, outermost first: errors (every failure is a JSON body in the NestJS shape Swapgate
answers with, plus our ``code``), faults (injected delays and error statuses for /api/ paths),
authentication (API v2 paths). Order stages advance on a timer started in ``cleanup_ctx``.

Like every process of the project it also answers ``GET /health``, ``GET /ready`` and
``GET /metrics`` (``deploy/local/services.sh`` waits for ``/ready``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from http import HTTPStatus

import orjson
import structlog
from aiohttp import web

from simulators.swapgate.market import DEFAULT_INSTRUMENTS, Market, MarketError, MarketInstrument
from simulators.swapgate.settings import SimulatorSettings
from simulators.swapgate.state import (
    Authenticator,
    AuthFailure,
    EndingRefused,
    KeyRing,
    OrderBook,
    SimKey,
    Stage,
)
from swapgate.errors import InexactArithmetic, InvalidAmount, InvalidMarkup, MarkupOutOfBounds
from swapgate.markup import ZERO, MarkupPolicy
from swapgate.wire import RateMode, parse_decimal
from wallet_platform.service import READINESS, add_operational_routes

log = structlog.get_logger("simulators.swapgate")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

SESSION_COOKIE = "session"
RATE_PARAMS = (
    "instrumentFromCurrencyTitle",
    "instrumentFromNetworkTitle",
    "instrumentToCurrencyTitle",
    "instrumentToNetworkTitle",
    "rateMode",
    "claimedDepositAmount",
)
ORDER_TEXT_FIELDS = (
    "destinationAddressMemo",
    "refundAddress",
    "refundAddressMemo",
    "legacyOrderId",
    "referrerId",
    "browserFingerprint",
)


class ApiError(Exception):
    """An error answer: HTTP status, our code and a message."""

    def __init__(self, status: int, code: str, message: str | list[str]):
        self.status = status
        self.code = code
        self.message = message
        super().__init__(f"{status} {code}: {message}")


@dataclass(frozen=True, slots=True)
class Fault:
    """An injected misbehaviour for the next matching /api/ requests."""

    path_prefix: str
    delay_s: float
    status: int | None


@dataclass(slots=True)
class Simulator:
    """Everything the handlers share."""

    settings: SimulatorSettings
    market: Market
    keys: KeyRing
    auth: Authenticator
    orders: OrderBook
    now: Callable[[], datetime]
    faults: deque[Fault] = field(default_factory=deque)


@dataclass(frozen=True, slots=True)
class ConfiguredKey:
    """An API key the simulator knows from the start (``--api-public-key`` and its secret)."""

    name: str
    public_key: str
    secret_key: str
    white_list_ip: tuple[str, ...]


SIMULATOR = web.AppKey("simulator", Simulator)
API_KEY = web.RequestKey("api_key", SimKey)


def _json(data: object, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def _error_body(status: int, code: str, message: str | list[str]) -> web.Response:
    # NestJS's shape (statusCode, message, error), which Swapgate's answers follow, plus a code.
    return _json(
        {
            "statusCode": status,
            "message": message,
            "error": HTTPStatus(status).phrase,
            "code": code,
        },
        status,
    )


async def _json_object(request: web.Request) -> dict[str, object]:
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "invalid_json", "body is not JSON") from exc
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_json", "body must be a JSON object")
    return body


def _amount(value: object, name: str) -> Decimal:
    try:
        amount = parse_decimal(value)
    except InvalidAmount as exc:
        raise ApiError(400, "invalid_amount", f"{name} must be a decimal string") from exc
    if amount <= ZERO:
        raise ApiError(400, "invalid_amount", f"{name} must be positive")
    return amount


def _markup(value: object, policy: MarkupPolicy) -> Decimal:
    try:
        return policy.resolve(None if value is None else parse_decimal(value))
    except InvalidAmount as exc:
        raise ApiError(400, "invalid_markup", "markup must be a decimal string") from exc


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every failure into a JSON error answer and log one line per request."""
    started = time.perf_counter()
    try:
        response = await handler(request)
    except ApiError as exc:
        response = _error_body(exc.status, exc.code, exc.message)
    except AuthFailure as exc:
        response = _error_body(403, exc.code, str(exc))
    except MarketError as exc:
        response = _error_body(400, exc.code, str(exc))
    except MarkupOutOfBounds as exc:
        response = _error_body(400, "markup_out_of_bounds", str(exc))
    except InvalidMarkup as exc:
        response = _error_body(400, "invalid_markup", str(exc))
    except (InvalidAmount, InexactArithmetic) as exc:
        response = _error_body(400, "invalid_amount", str(exc))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = _error_body(exc.status, "http_error", exc.reason)
    except Exception:
        log.exception("request_failed", method=request.method, path=request.path)
        response = _error_body(500, "internal_error", "internal error")
    log.info(
        "request",
        method=request.method,
        path=request.path,
        status=response.status,
        ms=round((time.perf_counter() - started) * 1000, 2),
    )
    return response


@web.middleware
async def faults_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Apply the next injected fault whose prefix matches this /api/ request."""
    sim = request.app[SIMULATOR]
    if request.path.startswith("/api/"):
        fault = next((f for f in sim.faults if request.path.startswith(f.path_prefix)), None)
        if fault is not None:
            sim.faults.remove(fault)
            if fault.delay_s:
                await asyncio.sleep(fault.delay_s)
            if fault.status is not None:
                raise ApiError(fault.status, "injected_fault", "fault injected by /_sim/faults")
    return await handler(request)


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Authenticate API v2 requests over the raw body bytes as received."""
    if request.path.startswith("/api/v2/"):
        sim = request.app[SIMULATOR]
        body = await request.read()  # aiohttp keeps it: the handler reads the same bytes
        request[API_KEY] = sim.auth.check(request.headers, body, request.remote)
    return await handler(request)


def _operator(request: web.Request) -> None:
    sim = request.app[SIMULATOR]
    if request.cookies.get(SESSION_COOKIE) != sim.settings.operator_session:
        raise ApiError(401, "unauthorized", "an active account session cookie is required")


async def rates(request: web.Request) -> web.Response:
    """GET /api/v1/rates/public/one: a quote (no authentication, as in Swapgate's v1)."""
    sim = request.app[SIMULATOR]
    query = request.query
    missing = [f"{name} should not be empty" for name in RATE_PARAMS if not query.get(name)]
    if missing:
        raise ApiError(400, "missing_parameters", missing)
    source = sim.market.instrument(
        query["instrumentFromCurrencyTitle"], query["instrumentFromNetworkTitle"]
    )
    target = sim.market.instrument(
        query["instrumentToCurrencyTitle"], query["instrumentToNetworkTitle"]
    )
    rate_mode = _rate_mode(query["rateMode"])
    claimed = _amount(query["claimedDepositAmount"], "claimedDepositAmount")
    markup = _markup(query.get("markup"), MarkupPolicy())
    return _json(sim.market.quote(source, target, claimed, markup, rate_mode, sim.now()))


def _rate_mode(value: object) -> RateMode:
    if isinstance(value, str) and value in RateMode.__members__:
        return RateMode(value)
    raise ApiError(400, "invalid_rate_mode", "rateMode must be FLOATING or FIXED")


def _instrument(sim: Simulator, body: dict[str, object], name: str) -> MarketInstrument:
    value = body.get(name)
    if not isinstance(value, dict):
        raise ApiError(400, "invalid_body", f"{name} must be an object")
    currency, network = value.get("currencyTitle"), value.get("networkTitle")
    if not isinstance(currency, str) or not isinstance(network, str):
        raise ApiError(400, "invalid_body", f"{name} needs currencyTitle and networkTitle")
    return sim.market.instrument(currency, network)


async def create_order(request: web.Request) -> web.Response:
    """POST /api/v2/orders/public/create: a signed order creation."""
    sim = request.app[SIMULATOR]
    key = request[API_KEY]
    body = await _json_object(request)
    problems = [
        f"{name} must be a string or null"
        for name in ORDER_TEXT_FIELDS
        if body.get(name) is not None and not isinstance(body.get(name), str)
    ]
    destination = body.get("destinationAddress")
    if not isinstance(destination, str) or not destination:
        problems.append("destinationAddress should not be empty")
    if not isinstance(body.get("utmData", []), list):
        problems.append("utmData must be a list")
    if problems:
        raise ApiError(400, "invalid_body", problems)
    source = _instrument(sim, body, "instrumentFrom")
    target = _instrument(sim, body, "instrumentTo")
    rate_mode = _rate_mode(body.get("rateMode"))
    claimed = _amount(body.get("claimedDepositAmount"), "claimedDepositAmount")
    if body.get("claimedNetworkFee") is not None:
        _amount(body["claimedNetworkFee"], "claimedNetworkFee")
    markup = _markup(body.get("markup"), key.markup_policy())
    sim.market.check_deposit(source, claimed)
    estimate = sim.market.estimate(source, target, claimed, markup)
    order = sim.orders.create(
        api_id=key.api_id,
        rate_mode=rate_mode,
        source=source,
        target=target,
        claimed=claimed,
        markup=markup,
        amount_to_get=estimate.amount_to_get,
        body=body,
        now=sim.now(),
    )
    log.info("order_created", order_id=order.order_id, api_id=key.api_id, markup=str(markup))
    return _json(order.view(), 201)


async def order_status(request: web.Request) -> web.Response:
    """GET /api/v2/orders/public/{order_id} (ours): the order, for the key that created it."""
    sim = request.app[SIMULATOR]
    order = sim.orders.get(request.match_info["order_id"])
    # Another key's order is reported as missing, so ids cannot be probed.
    if order is None or order.api_id != request[API_KEY].api_id:
        raise ApiError(404, "order_not_found", "no such order")
    return _json(order.view())


def _whitelist(value: object) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(ip, str) for ip in value):
        raise ApiError(400, "invalid_body", "whiteListIp must be a list of IP addresses")
    return value


async def generate_api_key(request: web.Request) -> web.Response:
    """POST /api/v1/users/generate-api-key: a new key pair; the secret is shown only here."""
    _operator(request)
    sim = request.app[SIMULATOR]
    body = await _json_object(request)
    name, is_active = body.get("name"), body.get("isActive", True)
    if not isinstance(name, str) or not name or not isinstance(is_active, bool):
        raise ApiError(400, "invalid_body", "name (string) and isActive (boolean) are required")
    try:
        key = sim.keys.add(
            name=name,
            white_list_ip=_whitelist(body.get("whiteListIp")),
            is_active=is_active,
            now=sim.now(),
        )
    except ValueError as exc:
        raise ApiError(400, "invalid_body", str(exc)) from exc
    log.info("api_key_generated", api_id=key.api_id, name=key.name)
    return _json(key.generated(), 201)


async def list_api_keys(request: web.Request) -> web.Response:
    """GET /api/v1/users/list-api-key: every key, never a secret."""
    _operator(request)
    return _json([key.listed() for key in request.app[SIMULATOR].keys.all()])


async def deactivate_api_key(request: web.Request) -> web.Response:
    """POST /api/v1/users/deactivate-api-key (ours) with ``{"apiId": n}``."""
    _operator(request)
    sim = request.app[SIMULATOR]
    api_id = (await _json_object(request)).get("apiId")
    if not isinstance(api_id, int) or isinstance(api_id, bool):
        raise ApiError(400, "invalid_body", "apiId must be an integer")
    key = sim.keys.by_id(api_id)
    if key is None:
        raise ApiError(404, "api_key_not_found", "no such API key")
    key.is_active = False
    log.info("api_key_deactivated", api_id=api_id)
    return _json(key.listed())


async def sim_health(request: web.Request) -> web.Response:
    """GET /_sim/health: answers once the simulator is serving."""
    return _json({"status": "ok"})


async def sim_seed_key(request: web.Request) -> web.Response:
    """POST /_sim/keys: store a key with given material (``publicKey``, ``secretKey``,
    ``name``, ``whiteListIp``, ``isActive``, ``settings``); random material where omitted."""
    sim = request.app[SIMULATOR]
    body = await _json_object(request)
    public, secret = body.get("publicKey"), body.get("secretKey")
    settings, is_active = body.get("settings", {}), body.get("isActive", True)
    if (
        (public is not None and not isinstance(public, str))
        or (secret is not None and not isinstance(secret, str))
        or not isinstance(settings, dict)
        or not isinstance(is_active, bool)
    ):
        raise ApiError(400, "invalid_body", "publicKey/secretKey strings, settings object")
    try:
        key = sim.keys.add(
            name=str(body.get("name", "seeded")),
            white_list_ip=_whitelist(body.get("whiteListIp", ["127.0.0.1", "::1"])),
            is_active=is_active,
            now=sim.now(),
            public_key=public,
            secret_key=secret,
            settings=settings,
        )
    except (ValueError, InvalidMarkup) as exc:
        raise ApiError(400, "invalid_body", str(exc)) from exc
    return _json({**key.generated(), "settings": key.settings}, 201)


async def sim_order_ending(request: web.Request) -> web.Response:
    """POST /_sim/orders/{order_id}/ending: ``{"ending": "completed"|"refunded"|"failed",
    "reason": "..."}`` chooses how a running order ends (409 once it has ended)."""
    sim = request.app[SIMULATOR]
    body = await _json_object(request)
    ending, reason = body.get("ending"), body.get("reason")
    if ending not in ("completed", "refunded", "failed") or (
        reason is not None and not isinstance(reason, str)
    ):
        raise ApiError(400, "invalid_body", "ending must be completed, refunded or failed")
    try:
        order = sim.orders.choose_ending(request.match_info["order_id"], Stage(ending), reason)
    except EndingRefused as exc:
        raise ApiError(409, "order_final", str(exc)) from exc
    if order is None:
        raise ApiError(404, "order_not_found", "no such order")
    return _json(order.view())


async def sim_add_fault(request: web.Request) -> web.Response:
    """POST /_sim/faults: ``{"status": 503, "delaySeconds": 0.5, "count": 1,
    "pathPrefix": "/api/"}`` makes the next ``count`` matching requests slow and/or fail."""
    sim = request.app[SIMULATOR]
    body = await _json_object(request)
    status, delay = body.get("status"), body.get("delaySeconds", 0)
    count, prefix = body.get("count", 1), body.get("pathPrefix", "/api/")
    if (
        (status is not None and not (isinstance(status, int) and 400 <= status <= 599))
        or not isinstance(delay, int | float)
        or not isinstance(count, int)
        or not isinstance(prefix, str)
    ):
        raise ApiError(400, "invalid_body", "status 4xx/5xx, delaySeconds, count, pathPrefix")
    for _ in range(count):
        sim.faults.append(Fault(prefix, float(delay), status))
    return _json({"queued": len(sim.faults)}, 201)


async def sim_clear_faults(request: web.Request) -> web.Response:
    """DELETE /_sim/faults: drop every queued fault."""
    request.app[SIMULATOR].faults.clear()
    return _json({"queued": 0})


async def _serving() -> dict[str, bool]:
    # The simulator holds everything in memory: once it answers HTTP, it is ready.
    return {"simulator": True}


async def _walk_orders(sim: Simulator) -> None:
    # Checking four times per step keeps each stage's duration close to step_s.
    while True:
        await asyncio.sleep(sim.settings.step_s / 4)
        try:
            for order in sim.orders.advance(sim.now()):
                log.info("order_stage", order_id=order.order_id, stage=order.stage.value)
        except Exception:
            log.exception("order_walk_failed")


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    task = asyncio.create_task(_walk_orders(app[SIMULATOR]))
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def _utc_now() -> datetime:
    return datetime.now(UTC)


def create_app(
    settings: SimulatorSettings,
    instruments: tuple[MarketInstrument, ...] = DEFAULT_INSTRUMENTS,
    *,
    now: Callable[[], datetime] = _utc_now,
    api_keys: Sequence[ConfiguredKey] = (),
) -> web.Application:
    """The simulator application, knowing ``api_keys`` from the start (ValueError if one of
    them is unusable: a bad whitelist entry, a public key given twice)."""
    market = Market(
        instruments,
        spread_pct=settings.spread_pct,
        platform_pct=settings.platform_pct,
        affiliate_pct=settings.affiliate_pct,
    )
    keys = KeyRing()
    for configured in api_keys:
        if keys.find(configured.public_key) is not None:
            raise ValueError(f"API key {configured.name!r}: public key given twice")
        keys.add(
            name=configured.name,
            white_list_ip=configured.white_list_ip,
            is_active=True,
            now=now(),
            public_key=configured.public_key,
            secret_key=configured.secret_key,
        )

    def clock_ms() -> int:
        return int(now().timestamp() * 1000)

    sim = Simulator(
        settings=settings,
        market=market,
        keys=keys,
        auth=Authenticator(keys, settings.timestamp_window_s * 1000, clock_ms),
        orders=OrderBook(market, settings.step_s),
        now=now,
    )
    app = web.Application(middlewares=[errors_middleware, faults_middleware, auth_middleware])
    app[SIMULATOR] = sim
    app.cleanup_ctx.append(_lifecycle)
    add_operational_routes(app)
    app[READINESS].append(_serving)
    app.router.add_get("/api/v1/rates/public/one", rates)
    app.router.add_post("/api/v2/orders/public/create", create_order)
    app.router.add_get("/api/v2/orders/public/{order_id}", order_status)
    app.router.add_post("/api/v1/users/generate-api-key", generate_api_key)
    app.router.add_get("/api/v1/users/list-api-key", list_api_keys)
    app.router.add_post("/api/v1/users/deactivate-api-key", deactivate_api_key)
    app.router.add_get("/_sim/health", sim_health)
    app.router.add_post("/_sim/keys", sim_seed_key)
    app.router.add_post("/_sim/orders/{order_id}/ending", sim_order_ending)
    app.router.add_post("/_sim/faults", sim_add_fault)
    app.router.add_delete("/_sim/faults", sim_clear_faults)
    return app
