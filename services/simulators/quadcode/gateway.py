"""The external-balance gateway API as Quadcode serves it (quadcode-external-balance-openapi.yaml).

Checks run in the order a real gateway would plausibly apply them: IP allowlist (403) and JWT
(401) in middlewares, then per operation: payload shape (400), rate limit (429), field rules
(422), existence (404), block (418), legal restrictions (451), conflicts (409).

Bodies: the contract documents JSON only for 422, 451 and the successes; for every other status
we send ``{"error": "<code>", "message": "..."}``, which the contract does not forbid.
"""

from __future__ import annotations

import html
import ipaddress
import re
import secrets
import uuid
from collections.abc import Mapping
from datetime import date
from typing import Final

import orjson
from aiohttp import web

from quadcode_gateway.countries import BY_ALPHA_2
from simulators.quadcode.state import Customer, LoginToken, SimulatorState

GATEWAY_PREFIX: Final = "/v1/b2b-gateway"
STATE: Final = web.AppKey("quadcode_simulator_state", SimulatorState)

COUNTRY_RESTRICTION: Final = {
    "error": "customer_country_restriction",
    "message": "The customer's current country is not allowed.",
}
CURRENCY_RESTRICTION: Final = {
    "error": "customer_currency_restriction",
    "message": "The customer's balance currency is not allowed.",
}
_DEFAULT_ERRORS: Final[dict[int, tuple[str, str]]] = {
    400: ("invalid_payload", "The request payload is not valid."),
    401: ("unauthorized", "JWT token is not present or is not valid."),
    403: ("forbidden", "Access to server is forbidden."),
    404: ("customer_not_found", "The customer is not found."),
    409: ("conflict", "The request conflicts with the current state."),
    418: ("customer_blocked", "Customer is blocked"),
    429: ("too_many_requests", "Too many requests."),
    500: ("internal_error", "Internal server error."),
}
_REASONS: Final = {418: "Customer is blocked"}
_EMAIL: Final = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")


def json_response(
    status: int, body: object = None, headers: Mapping[str, str] | None = None
) -> web.Response:
    """A response with a JSON body, or an empty body when ``body`` is ``None``."""
    if body is None:
        return web.Response(status=status, reason=_REASONS.get(status), headers=headers)
    return web.Response(
        status=status,
        reason=_REASONS.get(status),
        body=orjson.dumps(body),
        content_type="application/json",
        headers=headers,
    )


def default_body(status: int, path: str = "") -> object:
    """The body the simulator sends for ``status`` when nothing more specific applies."""
    if status == 422:
        return {"ip": {"code": "invalid_ip_format", "message": "The IP address is not valid."}}
    if status == 451:
        return COUNTRY_RESTRICTION
    if status == 409 and path.endswith("/session"):
        return {
            "error": "balance_currency_mismatch",
            "message": "The customer's balance ID mismatches with balance currency code.",
        }
    if status == 409:
        return {"error": "customer_exists", "message": "The customer already exists."}
    code, message = _DEFAULT_ERRORS.get(status, ("error", "Simulated error."))
    return {"error": code, "message": message}


def error_response(
    status: int, message: str | None = None, headers: Mapping[str, str] | None = None
) -> web.Response:
    """An error status with the simulator's default body (optionally a specific message)."""
    body = default_body(status)
    if message is not None and isinstance(body, dict):
        body = {**body, "message": message}
    return json_response(status, body, headers)


class _Rejected(Exception):
    def __init__(self, response: web.Response) -> None:
        super().__init__(response.status)
        self.response = response


async def _json_object(request: web.Request) -> dict[str, object]:
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        raise _Rejected(error_response(400, "The body is not JSON.")) from None
    if not isinstance(body, dict):
        raise _Rejected(error_response(400, "The body is not a JSON object."))
    return body


def _require_types(
    body: dict[str, object], strings: tuple[str, ...], integers: tuple[str, ...] = ()
) -> None:
    """400 when a field is present with the wrong JSON type (absent fields are a 422 matter)."""
    for name in strings:
        if name in body and not isinstance(body[name], str):
            raise _Rejected(error_response(400, f"{name} must be a string."))
    for name in integers:
        value = body.get(name)
        if name in body and (isinstance(value, bool) or not isinstance(value, int)):
            raise _Rejected(error_response(400, f"{name} must be an integer."))


def _rate_limit(state: SimulatorState, body: Mapping[str, object], customer_id: str | None) -> None:
    keys = []
    if isinstance(body.get("ip"), str):
        keys.append(f"ip:{body['ip']}")
    if customer_id:
        keys.append(f"customer:{customer_id}")
    if not state.limiter.allow(keys, state.rules.rate_limit, state.clock()):
        retry_after = state.rules.retry_after
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
        raise _Rejected(error_response(429, headers=headers))


class _FieldRules:
    """Collects 422 entries: ``{"<field>": {"code": ..., "message": ...}}``."""

    def __init__(self, body: Mapping[str, object]) -> None:
        self.body = body
        self.errors: dict[str, dict[str, str]] = {}

    def _fail(self, name: str, code: str, message: str) -> None:
        self.errors.setdefault(name, {"code": code, "message": message})

    def required(self, *names: str) -> None:
        for name in names:
            value = self.body.get(name)
            if value is None or (isinstance(value, str) and not value.strip()):
                self._fail(name, "is_required", f"The {name} is required.")

    def country(self, name: str = "country_code") -> None:
        value = self.body.get(name)
        if isinstance(value, str) and value and value not in BY_ALPHA_2:
            self._fail(name, "unknown_country_code", "The country code is unknown.")

    def ip(self, name: str = "ip") -> None:
        value = self.body.get(name)
        if isinstance(value, str) and value:
            try:
                ipaddress.ip_address(value)
            except ValueError:
                self._fail(name, "invalid_ip_format", "The IP address is not valid.")

    def email(self, name: str = "email") -> None:
        value = self.body.get(name)
        if isinstance(value, str) and value and not _EMAIL.fullmatch(value):
            self._fail(name, "invalid_email_format", "The email is not valid.")

    def check(self) -> None:
        if self.errors:
            raise _Rejected(json_response(422, self.errors))


def _customer(state: SimulatorState, customer_id: str) -> Customer:
    customer = state.customers.get(customer_id)
    if customer is None:
        raise _Rejected(error_response(404))
    return customer


def _not_blocked(customer: Customer) -> None:
    if customer.blocked:
        raise _Rejected(error_response(418))


def _country_allowed(state: SimulatorState, country_code: object) -> None:
    if country_code not in state.rules.allowed_countries:
        raise _Rejected(json_response(451, COUNTRY_RESTRICTION))


async def create_customer(request: web.Request) -> web.Response:
    """``POST /v1/b2b-gateway/customers``."""
    state = request.app[STATE]
    try:
        body = await _json_object(request)
        optional = (
            "phone_number",
            "account_timezone",
            "first_name",
            "middle_name",
            "last_name",
            "date_of_birth",
        )
        _require_types(body, ("customer_id", "country_code", "ip", "email", *optional))
        if "date_of_birth" in body:
            try:
                date.fromisoformat(str(body["date_of_birth"]))
            except ValueError:
                raise _Rejected(error_response(400, "date_of_birth is not a date.")) from None
        customer_id = body.get("customer_id")
        _rate_limit(state, body, customer_id if isinstance(customer_id, str) else None)
        rules = _FieldRules(body)
        rules.required("customer_id", "country_code", "ip", "email")
        rules.country()
        rules.ip()
        rules.email()
        rules.check()
        assert isinstance(customer_id, str)
        if customer_id in state.customers:
            return error_response(409)
        _country_allowed(state, body["country_code"])
    except _Rejected as rejected:
        return rejected.response
    state.customers[customer_id] = Customer(
        customer_id=customer_id,
        country_code=str(body["country_code"]),
        ip=str(body["ip"]),
        email=str(body["email"]),
        profile={key: body[key] for key in optional if key in body},
    )
    return json_response(201)


async def block_customer(request: web.Request) -> web.Response:
    """``POST /v1/b2b-gateway/customers/{customer_id}/block``."""
    state = request.app[STATE]
    customer_id = request.match_info["customer_id"]
    try:
        _rate_limit(state, {}, customer_id)
        customer = _customer(state, customer_id)
    except _Rejected as rejected:
        return rejected.response
    customer.blocked = True
    return json_response(200)


async def create_login_url(request: web.Request) -> web.Response:
    """``POST /v1/b2b-gateway/customers/{customer_id}/session``: a one-time trading-room URL."""
    state = request.app[STATE]
    customer_id = request.match_info["customer_id"]
    required = ("balance_id", "balance_currency_code", "country_code", "ip", "locale")
    try:
        body = await _json_object(request)
        _require_types(body, (*required, "site_domain", "balance_type"))
        if body.get("balance_type", "real") not in ("real", "demo"):
            raise _Rejected(error_response(400, "balance_type must be real or demo."))
        _rate_limit(state, body, customer_id)
        rules = _FieldRules(body)
        rules.required(*required, "site_domain")
        rules.country()
        rules.ip()
        rules.check()
        customer = _customer(state, customer_id)
        _not_blocked(customer)
        _country_allowed(state, body["country_code"])
        currency = str(body["balance_currency_code"])
        if currency not in state.rules.allowed_currencies:
            return json_response(451, CURRENCY_RESTRICTION)
        balance_id = str(body["balance_id"])
        bound = customer.balance_currencies.get(balance_id)
        if bound is not None and bound != currency:
            return json_response(409, default_body(409, request.path))
    except _Rejected as rejected:
        return rejected.response
    customer.balance_currencies[balance_id] = currency
    token = secrets.token_urlsafe(24)
    state.login_tokens[token] = LoginToken(customer_id=customer_id, balance_id=balance_id)
    return json_response(201, {"url": f"{state.public_base_url}/traderoom?token={token}"})


async def create_session(request: web.Request) -> web.Response:
    """``POST /v1/b2b-gateway/customers/{customer_id}/sessions``: a session id."""
    state = request.app[STATE]
    customer_id = request.match_info["customer_id"]
    try:
        body = await _json_object(request)
        _require_types(body, ("country_code", "ip", "user_agent"), ("platform_id",))
        _rate_limit(state, body, customer_id)
        rules = _FieldRules(body)
        rules.required("country_code", "ip", "user_agent", "platform_id")
        rules.country()
        rules.ip()
        rules.check()
        customer = _customer(state, customer_id)
        _not_blocked(customer)
        _country_allowed(state, body["country_code"])
    except _Rejected as rejected:
        return rejected.response
    ssid = uuid.uuid4().hex
    customer.sessions.append(ssid)
    return json_response(201, {"ssid": ssid})


async def allowed_countries(request: web.Request) -> web.Response:
    """``GET /v1/b2b-gateway/allowed-countries``."""
    state = request.app[STATE]
    countries = [
        {"name": country.name, "short_code": country.alpha_2, "iso_code": country.alpha_3}
        for code, country in sorted(BY_ALPHA_2.items())
        if code in state.rules.allowed_countries
    ]
    return json_response(200, {"countries": countries})


async def traderoom(request: web.Request) -> web.Response:
    """``GET /traderoom?token=...``: the page a one-time URL opens (once)."""
    state = request.app[STATE]
    login = state.login_tokens.get(request.query.get("token", ""))
    if login is None:
        return web.Response(status=404, text="Unknown trading-room link.")
    if login.used:
        return web.Response(status=410, text="This trading-room link was already used.")
    login.used = True
    customer = state.customers.get(login.customer_id)
    if customer is None or customer.blocked:
        return web.Response(status=418, reason="Customer is blocked", text="Account blocked.")
    return web.Response(
        text=(
            "<!doctype html><title>Traderoom</title>"
            f"<p>Trading room (simulated) for balance {html.escape(login.balance_id)}.</p>"
        ),
        content_type="text/html",
    )


def add_gateway_routes(app: web.Application) -> None:
    """Register the contract's routes and the trading-room page."""
    app.router.add_post(f"{GATEWAY_PREFIX}/customers", create_customer)
    app.router.add_post(f"{GATEWAY_PREFIX}/customers/{{customer_id}}/block", block_customer)
    app.router.add_post(f"{GATEWAY_PREFIX}/customers/{{customer_id}}/session", create_login_url)
    app.router.add_post(f"{GATEWAY_PREFIX}/customers/{{customer_id}}/sessions", create_session)
    app.router.add_get(f"{GATEWAY_PREFIX}/allowed-countries", allowed_countries)
    app.router.add_get("/traderoom", traderoom)
