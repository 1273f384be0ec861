"""An asyncio client for Swapgate's public rates API (v1), orders API (v2) and API keys.

One :class:`SwapgateClient` per process: it holds an ``aiohttp.ClientSession`` (its own, or one
injected and then left open for its owner), so connections are pooled. Every call has a timeout.
API v2 calls are signed (see :mod:`swapgate.signing`) and the bytes sent are the bytes signed.
Time comes from an injected clock so tests can control timestamps.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from types import TracebackType
from typing import Self
from urllib.parse import quote as url_quote

import aiohttp
import orjson

from swapgate.errors import (
    AuthRejected,
    CredentialsRequired,
    MalformedResponse,
    OrderOutcomeUnknown,
    RequestRejected,
    ServerError,
    SwapgateError,
    SwapgateResponseError,
    SwapgateTimeout,
    SwapgateUnavailable,
)
from swapgate.markup import MarkupPolicy
from swapgate.signing import EMPTY_BODY, JsonValue, compact_json, signed_headers
from swapgate.wire import (
    ApiCredentials,
    ApiKey,
    CreateOrderRequest,
    GeneratedApiKey,
    OrderView,
    Quote,
    RateMode,
    decimal_text,
)

RATES_PATH = "/api/v1/rates/public/one"
CREATE_ORDER_PATH = "/api/v2/orders/public/create"
# Ours: Swapgate does not document how an order is read back (see docs/exchange-swapgate.md).
ORDER_PATH = "/api/v2/orders/public/{order_id}"
GENERATE_KEY_PATH = "/api/v1/users/generate-api-key"
LIST_KEYS_PATH = "/api/v1/users/list-api-key"
# Ours: Swapgate leaves deactivation to its support line; we name the call like its siblings.
DEACTIVATE_KEY_PATH = "/api/v1/users/deactivate-api-key"

JSON_CONTENT_TYPE = "application/json; charset=utf-8"


def unix_time_ms() -> int:
    """Wall-clock Unix time in milliseconds (what ``x-api-timestamp`` carries)."""
    return time.time_ns() // 1_000_000


class SwapgateClient:
    """Client for one Swapgate base URL.

    ``credentials`` are needed for API v2 calls (orders); ``account_cookie`` (a raw ``Cookie``
    header value) for the ``/api/v1/users/*`` key calls, which Swapgate ties to a logged-in
    account. ``markup_policy`` is applied to every markup before anything is sent.
    """

    def __init__(
        self,
        base_url: str,
        *,
        credentials: ApiCredentials | None = None,
        session: aiohttp.ClientSession | None = None,
        timeout_s: float = 10.0,
        clock_ms: Callable[[], int] = unix_time_ms,
        markup_policy: MarkupPolicy | None = None,
        account_cookie: str | None = None,
        max_connections: int = 32,
    ):
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        self._base_url = base_url.rstrip("/")
        self._credentials = credentials
        self._session = session
        self._owns_session = session is None
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._clock_ms = clock_ms
        self._markup_policy = markup_policy or MarkupPolicy()
        self._account_cookie = account_cookie
        self._max_connections = max_connections

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the session if this client created it (an injected one stays open)."""
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        # Created lazily: a ClientSession must be made inside the running event loop.
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=self._max_connections)
            self._session = aiohttp.ClientSession(connector=connector)
        return self._session

    async def _call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: JsonValue | None = None,
        signed: bool = False,
        account: bool = False,
    ) -> object:
        """Send one request and return its parsed JSON, or raise a typed error."""
        payload = EMPTY_BODY if body is None else compact_json(body)
        headers: dict[str, str] = {"accept": "application/json"}
        if body is not None:
            headers["content-type"] = JSON_CONTENT_TYPE
        if signed:
            if self._credentials is None:
                raise CredentialsRequired(f"{method} {path} needs API credentials")
            creds = self._credentials
            headers.update(
                signed_headers(creds.secret_key, creds.public_key, self._clock_ms(), payload)
            )
        if account:
            if self._account_cookie is None:
                raise CredentialsRequired(f"{method} {path} needs an account cookie")
            headers["cookie"] = self._account_cookie
        url = self._base_url + path
        try:
            # data=bytes goes out untouched: the exact bytes that were signed.
            async with self._http().request(
                method,
                url,
                params=params,
                data=payload if body is not None else None,
                headers=headers,
                timeout=self._timeout,
            ) as response:
                status = response.status
                raw = await response.read()
        except TimeoutError as exc:
            raise SwapgateTimeout(f"{method} {path}: no answer in {self._timeout.total}s") from exc
        except aiohttp.ClientConnectorError as exc:
            raise SwapgateUnavailable(f"{method} {path}: {exc}", maybe_delivered=False) from exc
        except aiohttp.ClientError as exc:
            raise SwapgateUnavailable(f"{method} {path}: {exc}", maybe_delivered=True) from exc
        if status >= 400:
            raise _error_for(status, raw)
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise MalformedResponse(f"{method} {path}: answer is not JSON") from exc

    async def quote(
        self,
        from_currency: str,
        from_network: str,
        to_currency: str,
        to_network: str,
        amount: Decimal,
        rate_mode: RateMode = RateMode.FLOATING,
        markup: Decimal | None = None,
    ) -> Quote:
        """A quote for exchanging ``amount`` of one instrument into another (no auth needed).

        ``markup`` defaults to the client's policy default and must satisfy the policy. Raises
        :class:`~swapgate.errors.AmountBelowMinimum` / :class:`~swapgate.errors.AmountAboveMaximum`
        (carrying the quote) when ``amount`` is outside the quote's deposit rules, so an order
        for that amount is never attempted.
        """
        resolved = self._markup_policy.resolve(markup)
        params = {
            "instrumentFromCurrencyTitle": from_currency,
            "instrumentFromNetworkTitle": from_network,
            "instrumentToCurrencyTitle": to_currency,
            "instrumentToNetworkTitle": to_network,
            "rateMode": rate_mode.value,
            "claimedDepositAmount": decimal_text(amount),
            "markup": decimal_text(resolved),
        }
        quote = Quote.from_wire(await self._call("GET", RATES_PATH, params=params))
        quote.check_deposit(amount)
        return quote

    async def create_order(self, request: CreateOrderRequest) -> OrderView:
        """Create an exchange order (signed API v2 call).

        Outcomes: the created order; :class:`~swapgate.errors.AuthRejected` (403) or
        :class:`~swapgate.errors.RequestRejected` (other 4xx): certainly not created;
        :class:`~swapgate.errors.OrderOutcomeUnknown` (timeout, dropped connection, 5xx): it
        may exist, reconcile before any retry; :class:`~swapgate.errors.SwapgateUnavailable`
        with ``maybe_delivered=False``: nothing was sent, safe to retry.
        """
        self._markup_policy.resolve(request.markup)
        try:
            raw = await self._call("POST", CREATE_ORDER_PATH, body=request.to_wire(), signed=True)
            return OrderView.from_wire(raw)
        except (SwapgateTimeout, ServerError) as exc:
            raise OrderOutcomeUnknown(exc) from exc
        except SwapgateUnavailable as exc:
            if exc.maybe_delivered:
                raise OrderOutcomeUnknown(exc) from exc
            raise
        except MalformedResponse as exc:
            # A 2xx we cannot read: the order most likely exists.
            raise OrderOutcomeUnknown(exc) from exc

    async def get_order(self, order_id: str) -> OrderView:
        """Read an order back (signed API v2 GET; our simulator's endpoint, see module docs)."""
        path = ORDER_PATH.format(order_id=url_quote(order_id, safe=""))
        return OrderView.from_wire(await self._call("GET", path, signed=True))

    async def generate_api_key(
        self, name: str, white_list_ip: Sequence[str], *, is_active: bool = True
    ) -> GeneratedApiKey:
        """Create an API key pair; the result holds the secret, which is never shown again."""
        body: dict[str, JsonValue] = {
            "name": name,
            "whiteListIp": list(white_list_ip),
            "isActive": is_active,
        }
        return GeneratedApiKey.from_wire(
            await self._call("POST", GENERATE_KEY_PATH, body=body, account=True)
        )

    async def list_api_keys(self) -> tuple[ApiKey, ...]:
        """The account's API keys (without secrets), with settings and whitelists."""
        raw = await self._call("GET", LIST_KEYS_PATH, account=True)
        if not isinstance(raw, list):
            raise MalformedResponse("list-api-key: expected a list")
        return tuple(ApiKey.from_wire(item) for item in raw)

    async def deactivate_api_key(self, api_id: int) -> ApiKey:
        """Deactivate a key (our endpoint: Swapgate handles this through support)."""
        return ApiKey.from_wire(
            await self._call("POST", DEACTIVATE_KEY_PATH, body={"apiId": api_id}, account=True)
        )


def _error_for(status: int, raw: bytes) -> SwapgateError:
    """The typed error for an error status, keeping Swapgate's body."""
    body: object
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        body = raw.decode("utf-8", "replace")
    error_type: type[SwapgateResponseError]
    if status == 403:
        error_type = AuthRejected
    elif status >= 500:
        error_type = ServerError
    else:
        error_type = RequestRejected
    return error_type(status, body)
