"""``GET /v1/reconciliation`` over real sockets, in this process: the route reads the reconciler's
own operational app (``reconciler.__main__.operational_app``, its verdicts set by hand, no
database) and answers 200 whether the checks passed or not; a reconciler that is not there,
hangs past the 2 s timeout, or answers something that is not its report (a page, a redirect, a
body too large) is a 503 ``reconciler_unreachable``. The operator API's signatures are not part
of this (``tests/e2e/test_console_reconciliation.py`` goes through them)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, cast

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from bench.stack import free_port
from operator_api.reconciliation import (
    MAX_REPORT_BYTES,
    OperatorReconciliationSettings,
    add_reconciliation_routes,
)
from reconciler.__main__ import operational_app
from reconciler.comparison import FAILED, OK, Difference, Verdict
from reconciler.readings import TopicReader
from reconciler.rounds import CHECKS, Reconciler
from wallet_platform.http import json_errors_middleware

pytestmark = pytest.mark.integration

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def reconciler_after_a_round(verdicts: dict[str, Verdict]) -> Reconciler:
    reconciler = Reconciler(
        ledger_dsn="postgresql://unused",
        books_dsn="postgresql://unused",
        topic_prefix="",
        kafka=cast(TopicReader, None),  # no check runs here
        stall_seconds=60,
        unpublished_seconds=30,
    )
    reconciler.verdicts = dict(verdicts)
    reconciler.last_run_at = 1_767_225_600.0
    reconciler.last_run_monotonic = reconciler._clock()
    return reconciler


@asynccontextmanager
async def served(app: web.Application) -> AsyncIterator[str]:
    """``app`` on a free local port; yields its base URL."""
    async with TestServer(app) as server:
        yield str(server.make_url("/")).rstrip("/")


@asynccontextmanager
async def operator_route(reconciler_url: str) -> AsyncIterator[TestClient[Any, Any]]:
    app = web.Application(middlewares=[json_errors_middleware])
    add_reconciliation_routes(
        app, OperatorReconciliationSettings(operator_api_reconciler_url=reconciler_url)
    )
    async with TestClient(TestServer(app)) as client:
        yield client


async def reconciliation_at(reconciler_url: str) -> tuple[int, dict[str, Any]]:
    async with (
        operator_route(reconciler_url) as client,
        client.get("/v1/reconciliation") as response,
    ):
        if response.status == 200:  # a report, as every /v1/ read, is never cached on the way
            assert response.headers["Cache-Control"] == "no-store"
        return response.status, orjson.loads(await response.read())


def one_route(handler: Handler) -> web.Application:
    app = web.Application()
    app.router.add_get("/ready", handler)
    return app


async def test_a_ready_reconciler_is_a_200_ready() -> None:
    reconciler = reconciler_after_a_round({name: Verdict(OK) for name in CHECKS})
    async with served(operational_app(reconciler, 10.0)) as url:
        status, body = await reconciliation_at(url)
    assert status == 200
    assert body["reachable"] is True and body["ready"] is True
    assert body["checks"] == {"fresh": True} | {name: True for name in CHECKS}
    assert body["lastRunAt"] == "2026-01-01T00:00:00+00:00"


async def test_a_reconciler_with_a_failed_check_is_a_200_naming_the_difference() -> None:
    drift = Difference("amount_differs", {"customer_id": "c-9", "balance_id": "c-9_USD"}, "5", "6")
    verdicts = {name: Verdict(OK) for name in CHECKS} | {"projection": Verdict(FAILED, drift)}
    async with served(operational_app(reconciler_after_a_round(verdicts), 10.0)) as url:
        status, body = await reconciliation_at(url)
    assert status == 200 and body["ready"] is False
    assert body["details"]["projection"]["difference"]["customer_id"] == "c-9"
    assert body["details"]["projection"]["difference"]["found"] == "6"


async def test_no_reconciler_listening_is_a_503_reconciler_unreachable() -> None:
    status, body = await reconciliation_at(f"http://127.0.0.1:{free_port()}")
    assert (status, body["error"]) == (503, "reconciler_unreachable")
    assert "did not answer" in body["message"]


async def test_a_reconciler_that_hangs_past_the_timeout_is_a_503() -> None:
    async def hang(_: web.Request) -> web.Response:
        await asyncio.sleep(30)
        return web.Response()

    async with served(one_route(hang)) as url:
        status, body = await reconciliation_at(url)
    assert (status, body["error"]) == (503, "reconciler_unreachable")
    assert "TimeoutError" in body["message"]


async def redirect(_: web.Request) -> web.Response:
    raise web.HTTPFound("/elsewhere")


async def html_page(_: web.Request) -> web.Response:
    return web.Response(text="<html>ok</html>", content_type="text/html")


async def huge_report(_: web.Request) -> web.Response:
    padding = {"status": "ok", "note": "x" * MAX_REPORT_BYTES}
    body = {"status": "ready", "checks": {"a": True}, "details": {"a": padding}}
    return web.Response(body=orjson.dumps(body), content_type="application/json")


@pytest.mark.parametrize("handler", [redirect, html_page, huge_report], ids=lambda h: h.__name__)
async def test_an_answer_that_is_not_the_reconcilers_report_is_a_503(handler: Handler) -> None:
    async with served(one_route(handler)) as url:
        status, body = await reconciliation_at(url)
    assert (status, body["error"]) == (503, "reconciler_unreachable")
    assert "not its report" in body["message"]
