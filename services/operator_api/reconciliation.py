"""Reconciliation status over the operator API: ``GET /v1/reconciliation``.

The reconciler (``python -m reconciler``, ``docs/reconciliation.md``) keeps the last round of its
checks in memory and serves it on its own operational port as ``/ready``: 200 when every check
passed in a recent round, 503 when one did not, with each check's detail and first difference.
The console can call its own origin only, and that port is not for the public, so this route
reads the reconciler's ``/ready`` (``WALLET_OPERATOR_API_RECONCILER_URL``) at each request and
answers it as data: 200 ``{reachable, ready, checks, details, lastRunAt}`` whether the checks
passed or not (a 503 from the reconciler means "a check failed", which is what an operator asks
about), and 503 ``reconciler_unreachable`` only when the reconciler did not answer or answered
something that is not its report.

It costs the databases nothing: ``/ready`` answers from the reconciler's last round and never
runs a check. Any role may read it (a ``GET``); the audit log records each read as it records
every signed request.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Final, TypeGuard

import aiohttp
import orjson
import structlog
from aiohttp import web
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from wallet_platform.config import ENV_PREFIX, CommonSettings
from wallet_platform.http import json_error

log = structlog.get_logger(__name__)

RECONCILER_TIMEOUT_S: Final = 2.0
"""Longest a read of the reconciler's report may take, connecting included: its /ready answers
from memory, so anything slower is a reconciler in trouble, and the operator gets the 503 at
once rather than a console that hangs."""
MAX_REPORT_BYTES: Final = 256 * 1024
"""A report is a few hundred bytes per check; a larger answer is not the reconciler's."""
REPORT_STATUS: Final = {200: "ready", 503: "not_ready"}
"""The reconciler's HTTP status and the ``status`` its body states with it."""


class OperatorReconciliationSettings(CommonSettings):
    """Where the reconciler's operational port is (environment prefix ``WALLET_``)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    operator_api_reconciler_url: str = Field(
        default="http://127.0.0.1:18093",
        pattern=r"^https?://[^\s?#]+$",
        description="Base URL of the reconciler's operational port, whose /ready "
        "GET /v1/reconciliation relays.",
    )


class NotAReport(ValueError):
    """The reconciler's answer is not its report (another server, a proxy's page, a fault)."""


def _string_keyed(value: object) -> TypeGuard[dict[str, Any]]:
    return isinstance(value, dict) and all(isinstance(k, str) for k in value)


def reconciliation_view(status: int, body: bytes) -> dict[str, Any]:
    """The answer of ``GET /v1/reconciliation`` from the reconciler's ``/ready`` answer (its
    HTTP status and raw body): ``{reachable: true, ready, checks, details, lastRunAt}``.

    ``checks`` (check name to bool, ``fresh`` included) and ``details`` (check name to
    ``{status, figures..., difference?}``) are the reconciler's own, unchanged. Raises
    :class:`NotAReport` when the answer is not a report: a status other than 200 or 503, a body
    that is not its JSON, or a body whose ``status`` contradicts the HTTP status.
    """
    if status not in REPORT_STATUS:
        raise NotAReport(f"HTTP {status}")
    try:
        report = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise NotAReport("not JSON") from None
    if not isinstance(report, dict):
        raise NotAReport("not a JSON object")
    if report.get("status") != REPORT_STATUS[status]:
        raise NotAReport(f"HTTP {status} with status {str(report.get('status'))[:40]!r}")
    checks = report.get("checks")
    if not _string_keyed(checks) or not all(isinstance(ok, bool) for ok in checks.values()):
        raise NotAReport("checks is not an object of booleans")
    details = report.get("details")
    if not _string_keyed(details) or not all(
        name in checks and _string_keyed(detail) and isinstance(detail.get("status"), str)
        for name, detail in details.items()
    ):
        raise NotAReport("details is not an object of checks' details")
    last_run_at = report.get("last_run_at")
    if last_run_at is not None and not isinstance(last_run_at, str):
        raise NotAReport("last_run_at is not a time")
    return {
        "reachable": True,
        "ready": status == 200,
        "checks": checks,
        "details": details,
        "lastRunAt": last_run_at,
    }


RECONCILER_READY_URL = web.AppKey("reconciler_ready_url", str)
RECONCILER_HTTP = web.AppKey("reconciler_http", aiohttp.ClientSession)


async def _read_report(response: aiohttp.ClientResponse) -> bytes:
    """The body, refused as soon as it passes :data:`MAX_REPORT_BYTES`."""
    if response.content_length is not None and response.content_length > MAX_REPORT_BYTES:
        raise NotAReport("too large")
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > MAX_REPORT_BYTES:
            raise NotAReport("too large")
        chunks.append(chunk)
    return b"".join(chunks)


async def get_reconciliation(request: web.Request) -> web.Response:
    """``GET /v1/reconciliation``: the reconciler's last round, or 503
    ``reconciler_unreachable``."""
    url = request.app[RECONCILER_READY_URL]
    try:
        # No redirects: the report is at this URL or nowhere.
        async with request.app[RECONCILER_HTTP].get(url, allow_redirects=False) as response:
            view = reconciliation_view(response.status, await _read_report(response))
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        log.warning("reconciler_unreachable", url=url, error=repr(exc))
        return json_error(
            "reconciler_unreachable", f"The reconciler did not answer ({type(exc).__name__})."
        )
    except NotAReport as exc:
        log.warning("reconciler_unreachable", url=url, error=f"not its report: {exc}")
        return json_error(
            "reconciler_unreachable",
            f"The reconciler's address answered something that is not its report ({exc}).",
        )
    # Operators' answers are never kept by a cache on the way (as every /v1/ read).
    return web.json_response(view, headers={"Cache-Control": "no-store"})


async def _reconciler_http(app: web.Application) -> AsyncIterator[None]:
    """One client session for every read of the reconciler, made inside the running loop and
    closed after the last request has finished."""
    session = aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=RECONCILER_TIMEOUT_S),
        cookie_jar=aiohttp.DummyCookieJar(),
    )
    app[RECONCILER_HTTP] = session
    try:
        yield
    finally:
        await session.close()


def add_reconciliation_routes(
    app: web.Application, settings: OperatorReconciliationSettings
) -> None:
    """Register ``GET /v1/reconciliation`` on ``app``, reading the reconciler at
    ``WALLET_OPERATOR_API_RECONCILER_URL``."""
    app[RECONCILER_READY_URL] = settings.operator_api_reconciler_url.rstrip("/") + "/ready"
    app.router.add_get("/v1/reconciliation", get_reconciliation)
    app.cleanup_ctx.append(_reconciler_http)
