"""The projection's HTTP application: Quadcode's GET balance from the read model."""

from __future__ import annotations

from aiohttp import web

from ledger_core.requests import RequestError, check_id
from projection.model import ReadModel
from projection.read_your_writes import ReadNotCurrent, ReadYourWrites
from projection.settings import ProjectionSettings
from wallet_platform.callback_auth import IpPolicy
from wallet_platform.http import (
    callback_auth_middleware,
    cidrs,
    json_error,
    json_errors_middleware,
)
from wallet_platform.service import add_operational_app

MODEL = web.AppKey("model", ReadModel)
READ_YOUR_WRITES = web.AppKey("read_your_writes", ReadYourWrites)


async def get_balance(request: web.Request) -> web.Response:
    customer_id = request.match_info["customer_id"]
    balance_id = request.match_info["balance_id"]
    try:
        check_id(customer_id, "customer_id")
        check_id(balance_id, "balance_id")
    except RequestError as exc:
        return json_error(exc.code, exc.message)
    try:
        # Every write answered before this read must show in it, whichever edge answered it.
        await request.app[READ_YOUR_WRITES].wait_for_writes(customer_id)
    except ReadNotCurrent:
        return json_error("unavailable", "the balance read model is not current; retry")
    error, body = request.app[MODEL].balance_body(customer_id, balance_id)
    if error is not None:
        return json_error(error)
    return web.Response(status=200, body=body, content_type="application/json")


def build_app(
    settings: ProjectionSettings, model: ReadModel, read_your_writes: ReadYourWrites
) -> web.Application:
    ips = IpPolicy(cidrs(settings.allowed_ips), cidrs(settings.projection_trusted_proxies))
    app = web.Application(
        middlewares=[json_errors_middleware, callback_auth_middleware(settings.verifier(), ips)]
    )
    app[MODEL] = model
    app[READ_YOUR_WRITES] = read_your_writes
    add_operational_app(app)  # /health, /ready, /metrics: on their own port
    app.router.add_get("/v1/customers/{customer_id}/balances/{balance_id}", get_balance)
    return app
