"""Typed client of Quadcode's external-balance gateway API (quadcode-external-balance-openapi.yaml).

One method per operation. Inputs are validated before sending (see :mod:`quadcode_gateway.models`);
every documented status comes back as a typed result or one of the exceptions in
:mod:`quadcode_gateway.errors`.

Every operation here is safe to repeat, so 5xx and timeouts are retried (bounded):
``create_customer`` is deduplicated by our ``customer_id`` (a repeat gets 409),
``block_customer`` is idempotent, a repeated login URL or session only leaves an unused one-time
credential behind, and ``allowed_countries`` is a read.
"""

from __future__ import annotations

import asyncio
import random
import time
from types import TracebackType
from typing import Self

import aiohttp

from quadcode_gateway.errors import (
    BalanceCurrencyMismatch,
    CustomerAlreadyExists,
    CustomerNotFound,
    UnexpectedResponse,
)
from quadcode_gateway.models import (
    AllowedCountry,
    CustomerSession,
    LoginUrl,
    NewCustomer,
    SessionRequest,
    TradingBalance,
    Visit,
    check_identifier,
    login_url_body,
)
from quadcode_gateway.tokens import Clock, TokenSigner
from quadcode_gateway.transport import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_REQUEST_TIMEOUT,
    GatewayResponse,
    GatewayTransport,
    Jitter,
    Operation,
    RetryPolicy,
    Sleep,
)

PREFIX = "/v1/b2b-gateway"

CREATE_CUSTOMER = Operation(
    "create_customer",
    "POST",
    f"{PREFIX}/customers",
    201,
    safe_to_repeat=True,
    conflict=CustomerAlreadyExists,
)
BLOCK_CUSTOMER = Operation(
    "block_customer",
    "POST",
    f"{PREFIX}/customers/{{customer_id}}/block",
    200,
    safe_to_repeat=True,
    not_found=CustomerNotFound,
)
CREATE_LOGIN_URL = Operation(
    "create_login_url",
    "POST",
    f"{PREFIX}/customers/{{customer_id}}/session",
    201,
    safe_to_repeat=True,
    not_found=CustomerNotFound,
    conflict=BalanceCurrencyMismatch,
)
CREATE_SESSION = Operation(
    "create_session",
    "POST",
    f"{PREFIX}/customers/{{customer_id}}/sessions",
    201,
    safe_to_repeat=True,
    not_found=CustomerNotFound,
)
ALLOWED_COUNTRIES = Operation(
    "allowed_countries", "GET", f"{PREFIX}/allowed-countries", 200, safe_to_repeat=True
)

EXTERNAL_OPERATIONS = (
    CREATE_CUSTOMER,
    BLOCK_CUSTOMER,
    CREATE_LOGIN_URL,
    CREATE_SESSION,
    ALLOWED_COUNTRIES,
)


def _string_field(operation: Operation, response: GatewayResponse, name: str) -> str:
    value = response.json_object(operation.name).get(name)
    if not isinstance(value, str) or not value:
        raise UnexpectedResponse(
            f"{operation.name}: success body lacks a string {name!r}",
            operation=operation.name,
            status=response.status,
            body=response.body[:500],
        )
    return value


class GatewayClientBase:
    """Shared lifetime handling: both clients wrap one :class:`GatewayTransport`."""

    def __init__(self, transport: GatewayTransport) -> None:
        self.transport = transport

    @classmethod
    def create(
        cls,
        *,
        base_url: str,
        signer: TokenSigner,
        session: aiohttp.ClientSession | None = None,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        retry: RetryPolicy | None = None,
        sleep: Sleep = asyncio.sleep,
        jitter: Jitter = random.random,
        clock: Clock = time.time,
    ) -> Self:
        """Build a client and its transport; see :class:`GatewayTransport` for the knobs."""
        return cls(
            GatewayTransport(
                base_url=base_url,
                signer=signer,
                session=session,
                request_timeout=request_timeout,
                connect_timeout=connect_timeout,
                retry=retry or RetryPolicy(),
                sleep=sleep,
                jitter=jitter,
                clock=clock,
            )
        )

    async def close(self) -> None:
        """Release the connection pool (if the client created it)."""
        await self.transport.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()


class QuadcodeGatewayClient(GatewayClientBase):
    """The external-balance operations: customers, login URLs, sessions, allowed countries."""

    async def create_customer(self, customer: NewCustomer) -> None:
        """Register a customer (201).

        Raises :class:`CustomerAlreadyExists` (409), :class:`CountryRestricted` (451),
        :class:`UnprocessableEntity` (422) and the common errors.
        """
        await self.transport.call(CREATE_CUSTOMER, customer.to_json())

    async def block_customer(self, customer_id: str) -> None:
        """Block the customer's account (200); later sessions answer 418.

        Raises :class:`CustomerNotFound` (404) and the common errors.
        """
        customer_id = check_identifier("customer_id", customer_id)
        await self.transport.call(BLOCK_CUSTOMER, customer_id=customer_id)

    async def create_login_url(
        self, customer_id: str, balance: TradingBalance, visit: Visit
    ) -> LoginUrl:
        """A one-time trading-room URL for our iframe (``POST .../customers/{id}/session``).

        Raises :class:`CustomerNotFound` (404), :class:`BalanceCurrencyMismatch` (409),
        :class:`CustomerBlocked` (418), :class:`CountryRestricted` or
        :class:`CurrencyRestricted` (451), :class:`UnprocessableEntity` (422) and the common
        errors.
        """
        customer_id = check_identifier("customer_id", customer_id)
        response = await self.transport.call(
            CREATE_LOGIN_URL, login_url_body(balance, visit), customer_id=customer_id
        )
        return LoginUrl(_string_field(CREATE_LOGIN_URL, response, "url"))

    async def create_session(self, customer_id: str, request: SessionRequest) -> CustomerSession:
        """Open a customer session and return its ``ssid`` (``POST .../customers/{id}/sessions``).

        Raises :class:`CustomerNotFound` (404), :class:`CustomerBlocked` (418),
        :class:`CountryRestricted` (451), :class:`UnprocessableEntity` (422) and the common
        errors.
        """
        customer_id = check_identifier("customer_id", customer_id)
        response = await self.transport.call(
            CREATE_SESSION, request.to_json(), customer_id=customer_id
        )
        return CustomerSession(_string_field(CREATE_SESSION, response, "ssid"))

    async def allowed_countries(self) -> list[AllowedCountry]:
        """The countries Quadcode lets our customers trade from."""
        response = await self.transport.call(ALLOWED_COUNTRIES)
        entries = response.json_object(ALLOWED_COUNTRIES.name).get("countries")
        if not isinstance(entries, list):
            raise UnexpectedResponse(
                "allowed_countries: success body lacks a 'countries' list",
                operation=ALLOWED_COUNTRIES.name,
                status=response.status,
            )
        countries = []
        for entry in entries:
            if not isinstance(entry, dict) or not all(
                isinstance(entry.get(key), str) for key in ("name", "short_code", "iso_code")
            ):
                raise UnexpectedResponse(
                    f"allowed_countries: malformed country entry {entry!r}",
                    operation=ALLOWED_COUNTRIES.name,
                    status=response.status,
                )
            countries.append(AllowedCountry(entry["name"], entry["short_code"], entry["iso_code"]))
        return countries
