"""One signed HTTP exchange with Quadcode's gateway: signing, timeouts, bounded retries, errors.

Both clients (external and internal balances) describe each call as an :class:`Operation` and
hand it to :class:`GatewayTransport`, so signing and the meaning of every status live here once.

What is retried, and why:

* ``429``: every operation. Quadcode refused the request before doing anything, so repeating it
  is always safe. We wait ``Retry-After`` when given (if it is short enough), otherwise a capped
  exponential backoff with jitter.
* connection refused (nothing was sent): every operation.
* ``5xx``, timeouts and dropped connections: only operations marked ``safe_to_repeat`` (reads,
  blocks, creates deduplicated by our own id, money movements carrying a ``request_id``), since
  the first attempt may have been applied.

All retries share one bound, ``RetryPolicy.max_attempts``.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Final

import aiohttp
import orjson
import structlog

from quadcode_gateway.errors import (
    COUNTRY_RESTRICTION,
    CURRENCY_RESTRICTION,
    USER_COUNTRY_RESTRICTION,
    AccessRestricted,
    BadRequest,
    Conflict,
    CountryRestricted,
    CurrencyRestricted,
    CustomerBlocked,
    FieldError,
    Forbidden,
    GatewayUnavailable,
    InsufficientFunds,
    NotFound,
    QuadcodeError,
    RateLimited,
    ServerError,
    Unauthorized,
    UnexpectedResponse,
    UnprocessableEntity,
)
from quadcode_gateway.tokens import Clock, TokenSigner

Sleep = Callable[[float], Awaitable[None]]
"""An awaitable pause, like :func:`asyncio.sleep`; tests inject one that records."""

Jitter = Callable[[], float]
"""A number in ``[0, 1)``, like :func:`random.random`."""

DEFAULT_REQUEST_TIMEOUT: Final = 5.0
DEFAULT_CONNECT_TIMEOUT: Final = 2.0

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how long to wait before repeating a call.

    ``max_attempts`` counts the first attempt. A ``Retry-After`` longer than ``max_retry_after``
    is not waited for: :class:`RateLimited` is raised at once with the hint, so a web request is
    never held for minutes.
    """

    max_attempts: int = 3
    base_delay: float = 0.2
    max_delay: float = 2.0
    max_retry_after: float = 5.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if not 0 <= self.base_delay <= self.max_delay:
            raise ValueError("need 0 <= base_delay <= max_delay")
        if self.max_retry_after < 0:
            raise ValueError("max_retry_after must not be negative")

    def backoff(self, retry: int, jitter: float) -> float:
        """Delay before the ``retry``-th repeat (1-based): capped exponential, half of it jittered.

        Keeping half the ceiling fixed guarantees some spacing; jittering the other half keeps
        many website workers from retrying in lockstep.
        """
        ceiling = min(self.max_delay, self.base_delay * 2.0 ** (retry - 1))
        return ceiling / 2 + (ceiling / 2) * min(max(jitter, 0.0), 1.0)


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date), or ``None``."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        moment = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:
        return None
    return max(0.0, moment.timestamp() - now)


@dataclass(frozen=True, slots=True)
class Operation:
    """One documented API operation and how its statuses read.

    ``path`` is the contract's path template, e.g. ``/v1/b2b-gateway/customers/{customer_id}``.
    """

    name: str
    method: str
    path: str
    success: int
    safe_to_repeat: bool
    not_found: type[NotFound] = NotFound
    conflict: type[Conflict] = Conflict


@dataclass(frozen=True, slots=True)
class GatewayResponse:
    """A successful answer; ``attempts`` says how many tries it took."""

    status: int
    body: bytes
    attempts: int = 1

    def json_object(self, operation: str) -> dict[str, object]:
        """The body as a JSON object, or :class:`UnexpectedResponse` if it is not one."""
        try:
            decoded = orjson.loads(self.body)
        except orjson.JSONDecodeError:
            decoded = None
        if not isinstance(decoded, dict):
            raise UnexpectedResponse(
                f"{operation}: success body is not a JSON object",
                operation=operation,
                status=self.status,
                body=self.body[:500],
            )
        return decoded


def _decode(body: bytes) -> object:
    try:
        return orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        return body[:500].decode("utf-8", "replace")


def _field_errors(decoded: object) -> dict[str, FieldError]:
    if not isinstance(decoded, dict):
        return {}
    errors = {}
    for name, entry in decoded.items():
        if isinstance(entry, dict):
            code, message = entry.get("code"), entry.get("message")
            if isinstance(code, str):
                errors[str(name)] = FieldError(code, message if isinstance(message, str) else "")
    return errors


_PLAIN_ERRORS: Final[dict[int, tuple[type[QuadcodeError], str]]] = {
    400: (BadRequest, "payload not valid"),
    401: (Unauthorized, "JWT refused (check key, issuer, audience, clock)"),
    402: (InsufficientFunds, "insufficient funds"),
    403: (Forbidden, "our IP address is not allowlisted"),
    418: (CustomerBlocked, "customer is blocked"),
}


def error_for_status(operation: Operation, status: int, body: bytes) -> QuadcodeError:
    """The exception for a non-success status of ``operation`` (after any retries)."""
    decoded = _decode(body)
    name = operation.name
    detail = decoded.get("message") if isinstance(decoded, dict) else None
    text = f"{name}: HTTP {status}" + (f" ({detail})" if isinstance(detail, str) else "")
    error_class: type[QuadcodeError]
    if status in _PLAIN_ERRORS:
        error_class, meaning = _PLAIN_ERRORS[status]
    elif status == 404:
        error_class, meaning = operation.not_found, "not found"
    elif status == 409:
        error_class, meaning = operation.conflict, "conflict"
    elif status == 422:
        return UnprocessableEntity(_field_errors(decoded), operation=name, body=decoded)
    elif status == 429:
        return RateLimited(f"{text}: too many requests", operation=name)
    elif status == 451:
        reason = decoded.get("error") if isinstance(decoded, dict) else None
        restricted: type[AccessRestricted] = AccessRestricted
        if reason in (COUNTRY_RESTRICTION, USER_COUNTRY_RESTRICTION):
            restricted = CountryRestricted
        elif reason == CURRENCY_RESTRICTION:
            restricted = CurrencyRestricted
        return restricted(
            f"{text}: {reason or 'access not allowed'}",
            reason=str(reason or "unknown"),
            operation=name,
            body=decoded,
        )
    elif 500 <= status <= 599:
        error_class, meaning = ServerError, "Quadcode server error"
    else:
        error_class, meaning = UnexpectedResponse, "status not in the contract"
    return error_class(f"{text}: {meaning}", operation=name, status=status, body=decoded)


@dataclass(slots=True)
class GatewayTransport:
    """Sends signed JSON requests to one Quadcode base URL over a pooled aiohttp session.

    Pass ``session`` to share a pool owned elsewhere; otherwise one is created on first use (it
    must be created inside the running loop) and closed by :meth:`close`.
    """

    base_url: str
    signer: TokenSigner
    session: aiohttp.ClientSession | None = None
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    sleep: Sleep = asyncio.sleep
    jitter: Jitter = random.random
    clock: Clock = time.time
    connection_limit: int = 100
    _owns_session: bool = field(default=False, init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError("base_url must be an http(s) URL")
        self.base_url = self.base_url.rstrip("/")
        if not 0 < self.connect_timeout <= self.request_timeout:
            raise ValueError("need 0 < connect_timeout <= request_timeout")

    def _session(self) -> aiohttp.ClientSession:
        if self.session is None:
            self.session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.connection_limit, ttl_dns_cache=300),
                raise_for_status=False,
            )
            self._owns_session = True
        return self.session

    async def close(self) -> None:
        """Close the session if this transport created it."""
        if self._owns_session and self.session is not None:
            await self.session.close()
            self.session = None
            self._owns_session = False

    async def call(
        self,
        operation: Operation,
        body: Mapping[str, object] | None = None,
        /,
        **path_params: str | int,
    ) -> GatewayResponse:
        """Perform ``operation``; return the success response or raise its error.

        ``path_params`` fill the path template; callers validate them first.
        """
        payload = orjson.dumps(body) if body is not None else None
        url = self.base_url + operation.path.format_map(path_params)
        timeout = aiohttp.ClientTimeout(
            total=self.request_timeout, sock_connect=self.connect_timeout
        )
        attempt = 0
        while True:
            attempt += 1
            can_retry = attempt < self.retry.max_attempts
            headers = {"Authorization": self.signer.authorization(), "Accept": "application/json"}
            if payload is not None:
                headers["Content-Type"] = "application/json"
            try:
                async with self._session().request(
                    operation.method, url, data=payload, headers=headers, timeout=timeout
                ) as response:
                    status = response.status
                    content = await response.read()
                    retry_after_header = response.headers.get("Retry-After")
            except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
                # The connection was never made, so the request was not sent: always safe.
                if can_retry:
                    await self._pause(operation, attempt, self._backoff(attempt), repr(exc))
                    continue
                raise GatewayUnavailable(
                    f"{operation.name}: cannot connect to Quadcode: {exc!r}",
                    operation=operation.name,
                    outcome_unknown=False,
                ) from exc
            except (TimeoutError, aiohttp.ClientError) as exc:
                # Sent, but no (complete) answer: Quadcode may have applied it.
                if operation.safe_to_repeat and can_retry:
                    await self._pause(operation, attempt, self._backoff(attempt), repr(exc))
                    continue
                raise GatewayUnavailable(
                    f"{operation.name}: no answer from Quadcode: {exc!r}",
                    operation=operation.name,
                    outcome_unknown=True,
                ) from exc

            if status == operation.success:
                return GatewayResponse(status=status, body=content, attempts=attempt)
            if status == 429:
                retry_after = parse_retry_after(retry_after_header, self.clock())
                if retry_after is not None and retry_after > self.retry.max_retry_after:
                    raise RateLimited(
                        f"{operation.name}: rate limited, Retry-After {retry_after:g}s "
                        "is longer than we wait",
                        operation=operation.name,
                        retry_after=retry_after,
                        attempts=attempt,
                    )
                if can_retry:
                    delay = retry_after if retry_after is not None else self._backoff(attempt)
                    await self._pause(operation, attempt, delay, "429")
                    continue
                raise RateLimited(
                    f"{operation.name}: still rate limited after {attempt} attempts",
                    operation=operation.name,
                    retry_after=retry_after,
                    attempts=attempt,
                )
            if 500 <= status <= 599 and operation.safe_to_repeat and can_retry:
                await self._pause(operation, attempt, self._backoff(attempt), str(status))
                continue
            if status == 401:
                # Whatever was wrong with that token, the next call should not reuse it.
                self.signer.invalidate()
            error = error_for_status(operation, status, content)
            log.info(
                "quadcode_call_failed", operation=operation.name, status=status, attempts=attempt
            )
            raise error

    def _backoff(self, attempt: int) -> float:
        return self.retry.backoff(attempt, self.jitter())

    async def _pause(self, operation: Operation, attempt: int, delay: float, why: str) -> None:
        log.info(
            "quadcode_call_retry",
            operation=operation.name,
            attempt=attempt,
            delay_seconds=round(delay, 3),
            reason=why,
        )
        await self.sleep(delay)
