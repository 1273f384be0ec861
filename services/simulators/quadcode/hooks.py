"""Test hooks under ``/_sim/``: not part of Quadcode's API, never authenticated (loopback only).

* ``GET  /_sim/health``               liveness
* ``POST /_sim/reset``                forget customers, hooks, counters; restore start-up rules
* ``POST /_sim/config``               change rules: allowed_countries, allowed_currencies,
                                      allowed_ips, rate_limit, retry_after
* ``POST /_sim/force``                ``{status?, body?, headers?, delay?, path?, method?, times?}``
                                      for the next matching gateway requests
* ``GET  /_sim/exchanges``            recorded gateway request/response pairs
* ``GET  /_sim/customers/{id}``       what the simulator holds for a customer
* ``GET  /_sim/qc-public-key``        Quadcode's public key (configure the wallet with it)
* ``POST /_sim/trade``                play trades against the wallet (see :mod:`.trader`)
"""

from __future__ import annotations

import ipaddress
from decimal import Decimal, InvalidOperation
from typing import Final

import aiohttp
import orjson
from aiohttp import web

from quadcode_gateway.countries import BY_ALPHA_2
from quadcode_gateway.tokens import TokenSigner
from simulators.quadcode.gateway import STATE, json_response
from simulators.quadcode.state import ForcedResponse, Rules
from simulators.quadcode.trader import TradePlan, TradingRoomPlayer

QC_SIGNER: Final = web.AppKey("quadcode_signer", TokenSigner)
QC_PUBLIC_PEM: Final = web.AppKey("quadcode_public_pem", bytes)
WALLET_SESSION: Final = web.AppKey("wallet_session", aiohttp.ClientSession)


class _BadHook(Exception):
    pass


def _bad(message: str) -> web.Response:
    return json_response(400, {"error": "bad_hook_request", "message": message})


async def _object(request: web.Request) -> dict[str, object]:
    try:
        body = orjson.loads(await request.read() or b"{}")
    except orjson.JSONDecodeError:
        raise _BadHook("body is not JSON") from None
    if not isinstance(body, dict):
        raise _BadHook("body is not a JSON object")
    return body


def _string(body: dict[str, object], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value:
        raise _BadHook(f"{name} must be a non-empty string")
    return value


def _int(body: dict[str, object], name: str, default: int) -> int:
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _BadHook(f"{name} must be an integer")
    return value


def _number(body: dict[str, object], name: str, default: float) -> float:
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _BadHook(f"{name} must be a number")
    return float(value)


def _decimal(body: dict[str, object], name: str, default: str) -> Decimal:
    value = body.get(name, default)
    if not isinstance(value, str):
        raise _BadHook(f"{name} must be a decimal string")
    try:
        return Decimal(value)
    except InvalidOperation:
        raise _BadHook(f"{name} must be a decimal string") from None


def _strings(body: dict[str, object], name: str) -> list[str]:
    value = body.get(name)
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise _BadHook(f"{name} must be a list of strings")
    return [str(item) for item in value]


async def health(request: web.Request) -> web.Response:
    """Liveness, and the URL one-time links point at."""
    return json_response(200, {"status": "ok", "url": request.app[STATE].public_base_url})


async def reset(request: web.Request) -> web.Response:
    """Forget everything and restore the start-up rules."""
    request.app[STATE].reset()
    return json_response(200, {"status": "reset"})


async def configure(request: web.Request) -> web.Response:
    """Change the rules at run time (until the next reset)."""
    state = request.app[STATE]
    try:
        body = await _object(request)
        changes: dict[str, object] = {}
        if "allowed_countries" in body:
            countries = frozenset(_strings(body, "allowed_countries"))
            unknown = sorted(countries - BY_ALPHA_2.keys())
            if unknown:
                raise _BadHook(f"unknown countries: {unknown}")
            changes["allowed_countries"] = countries
        if "allowed_currencies" in body:
            changes["allowed_currencies"] = frozenset(_strings(body, "allowed_currencies"))
        if "allowed_ips" in body:
            try:
                changes["allowed_ips"] = tuple(
                    ipaddress.ip_network(net, strict=False) for net in _strings(body, "allowed_ips")
                )
            except ValueError as exc:
                raise _BadHook(str(exc)) from None
        if "rate_limit" in body:
            changes["rate_limit"] = _int(body, "rate_limit", 0)
        if "retry_after" in body:
            changes["retry_after"] = (
                None if body["retry_after"] is None else _int(body, "retry_after", 0)
            )
    except _BadHook as exc:
        return _bad(str(exc))
    state.rules = state.rules.with_changes(**changes)
    state.limiter.clear()
    return json_response(200, _rules_json(state.rules))


def _rules_json(rules: Rules) -> dict[str, object]:
    return {
        "allowed_countries": sorted(rules.allowed_countries),
        "allowed_currencies": sorted(rules.allowed_currencies),
        "allowed_ips": [str(net) for net in rules.allowed_ips],
        "rate_limit": rules.rate_limit,
        "retry_after": rules.retry_after,
    }


async def force(request: web.Request) -> web.Response:
    """Queue a forced answer (and/or delay) for the next matching gateway requests."""
    try:
        body = await _object(request)
        status = body.get("status")
        if status is not None and (
            isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599
        ):
            raise _BadHook("status must be an HTTP status code")
        headers = body.get("headers", {})
        if not isinstance(headers, dict) or not all(
            isinstance(value, str) for value in headers.values()
        ):
            raise _BadHook("headers must map names to strings")
        path, method = body.get("path"), body.get("method")
        if path is not None and not isinstance(path, str):
            raise _BadHook("path must be a string")
        if method is not None and not isinstance(method, str):
            raise _BadHook("method must be a string")
        forced = ForcedResponse(
            status=status,
            body=body.get("body"),
            headers={str(name): str(value) for name, value in headers.items()},
            delay=_number(body, "delay", 0.0),
            path=path,
            method=method,
            times=_int(body, "times", 1),
        )
    except _BadHook as exc:
        return _bad(str(exc))
    request.app[STATE].forced.append(forced)
    return json_response(200, {"queued": len(request.app[STATE].forced)})


async def exchanges(request: web.Request) -> web.Response:
    """Every recorded gateway exchange since the last reset, oldest first."""
    return json_response(200, {"exchanges": list(request.app[STATE].exchanges)})


async def customer(request: web.Request) -> web.Response:
    """The simulator's record of one customer."""
    found = request.app[STATE].customers.get(request.match_info["customer_id"])
    if found is None:
        return json_response(404, {"error": "customer_not_found"})
    return json_response(
        200,
        {
            "customer_id": found.customer_id,
            "country_code": found.country_code,
            "ip": found.ip,
            "email": found.email,
            "profile": found.profile,
            "blocked": found.blocked,
            "balances": found.balance_currencies,
            "sessions": len(found.sessions),
        },
    )


async def qc_public_key(request: web.Request) -> web.Response:
    """Quadcode's public key in PEM: the wallet verifies the trader's callbacks with it."""
    return web.Response(body=request.app[QC_PUBLIC_PEM], content_type="application/x-pem-file")


async def trade(request: web.Request) -> web.Response:
    """Play trades for a customer whose trading room is open, against the wallet.

    Body: ``{customer_id, balance_id, currency_code, trades, stake, payout?, wallet_base_url?,
    wallet_timeout?, max_attempts?}``. Answers the :class:`~.trader.TradeReport`.
    """
    state = request.app[STATE]
    config = state.config
    try:
        body = await _object(request)
        customer_id = _string(body, "customer_id")
        balance_id = _string(body, "balance_id")
        currency_code = _string(body, "currency_code")
        plan = TradePlan(
            customer_id=customer_id,
            balance_id=balance_id,
            currency_code=currency_code,
            trades=_int(body, "trades", 1),
            stake=_decimal(body, "stake", "1.00"),
            payout_ratio=_decimal(body, "payout", str(config.payout_ratio)),
        )
        wallet_base_url = body.get("wallet_base_url", config.wallet_base_url)
        if not isinstance(wallet_base_url, str) or not wallet_base_url.startswith("http"):
            raise _BadHook("wallet_base_url is required (in the body or --wallet-base-url)")
        timeout = _number(body, "wallet_timeout", config.wallet_timeout)
        max_attempts = _int(body, "max_attempts", config.wallet_max_attempts)
        if not 0 < timeout <= 60 or not 1 <= max_attempts <= 10:
            raise _BadHook("wallet_timeout must be in (0, 60] and max_attempts in [1, 10]")
    except (_BadHook, ValueError) as exc:
        return _bad(str(exc))

    found = state.customers.get(customer_id)
    if found is None:
        return json_response(404, {"error": "customer_not_found"})
    if found.blocked:
        return json_response(418, {"error": "customer_blocked"})
    bound = found.balance_currencies.get(balance_id)
    if bound is None:
        return json_response(
            409, {"error": "no_open_session", "message": "open the trading room first"}
        )
    if bound != currency_code:
        return json_response(409, {"error": "balance_currency_mismatch"})

    player = TradingRoomPlayer(
        wallet_base_url=wallet_base_url,
        signer=request.app[QC_SIGNER],
        session=request.app[WALLET_SESSION],
        timeout=timeout,
        max_attempts=max_attempts,
    )
    report = await player.play(plan)
    return web.Response(body=report.to_json(), content_type="application/json")


def add_hook_routes(app: web.Application) -> None:
    """Register the ``/_sim/`` routes."""
    app.router.add_get("/_sim/health", health)
    app.router.add_post("/_sim/reset", reset)
    app.router.add_post("/_sim/config", configure)
    app.router.add_post("/_sim/force", force)
    app.router.add_get("/_sim/exchanges", exchanges)
    app.router.add_get("/_sim/customers/{customer_id}", customer)
    app.router.add_get("/_sim/qc-public-key", qc_public_key)
    app.router.add_post("/_sim/trade", trade)
