"""``POST /v1/customers/{customer_id}/trading-room``: the website asks for the trading-room iframe.

The body is checked completely before anything is sent to Quadcode; then
:func:`quadcode_gateway.open_trading_room` runs (login URL; on 404 register the customer and ask
once more) and its outcome becomes the answer:

* ``url``: 200 ``{"outcome": "url", "url", "message": "", "customer_created"}``;
* ``country_restricted``, ``currency_restricted``, ``blocked``: 200
  ``{"outcome", "message", "customer_created"}``;
* ``unavailable``: 503 ``{"error": "unavailable", "outcome": "unavailable", "message"}``.

The refusals are answers, not failures of this API, hence 200. "Unavailable" (Quadcode failed,
refused our credentials, or did not answer in time) is a 503 so that monitoring and retries see
it. Every ``message`` is meant for the customer's eyes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import Final, TypeVar

import orjson
import structlog
from aiohttp import web
from prometheus_client import Counter

from ledger_core.errors import ERRORS
from quadcode_gateway import (
    BalanceType,
    InvalidRequest,
    NewCustomer,
    QuadcodeGatewayClient,
    TradingBalance,
    TradingRoomOutcome,
    TradingRoomStatus,
    Visit,
    open_trading_room,
)
from quadcode_gateway.models import check_identifier

log = structlog.get_logger(__name__)
T = TypeVar("T")

OUTCOMES = Counter(
    "operator_api_trading_room_total", "Trading-room requests answered, by outcome", ["outcome"]
)

REQUIRED_FIELDS: Final = (
    "balance_id",
    "balance_currency_code",
    "country_code",
    "ip",
    "locale",
    "site_domain",
    "email",
)
OPTIONAL_FIELDS: Final = (
    "balance_type",
    "phone_number",
    "account_timezone",
    "first_name",
    "middle_name",
    "last_name",
    "date_of_birth",
)
_KNOWN: Final = frozenset(REQUIRED_FIELDS + OPTIONAL_FIELDS)

UNAVAILABLE: Final = "unavailable"
"""What the website sees for :attr:`TradingRoomStatus.ERROR`: it can only try again later."""


class BadInput(Exception):
    """The request is refused before anything is sent; ``code`` is an error of ledger_core."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class TradingRoomRequest:
    """A checked request: everything :func:`open_trading_room` needs."""

    customer: NewCustomer
    balance: TradingBalance
    visit: Visit


def parse_customer_id(customer_id: str) -> str:
    """The path's customer id, or :class:`BadInput` (``invalid_id``)."""
    try:
        return check_identifier("customer_id", customer_id)
    except InvalidRequest as exc:
        raise BadInput("invalid_id", _describe(exc.field_errors)) from None


def parse_body(raw: bytes) -> dict[str, object]:
    """The body as a JSON object, or :class:`BadInput` (``malformed_json``)."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BadInput("malformed_json", "The body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise BadInput("malformed_json", "The body must be a JSON object.")
    return body


def parse_request(customer_id: str, body: dict[str, object]) -> TradingRoomRequest:
    """Check every field; :class:`BadInput` (``invalid_field``) names each bad one at once.

    The customer is registered at Quadcode with the visit's ``country_code`` and ``ip``: that is
    where they are when they first open the trading room. Field values are never echoed in
    messages (they are personal data).
    """
    unexpected = sorted(set(body) - _KNOWN)
    if unexpected:
        raise BadInput("invalid_field", f"Unexpected field(s): {', '.join(unexpected)}.")
    problems: dict[str, str] = {}
    for name in REQUIRED_FIELDS:
        if body.get(name) is None:
            problems[name] = "is required"
    for name in _KNOWN:
        value = body.get(name)
        if value is not None and not isinstance(value, str):
            problems[name] = "must be a string"
    if problems:
        raise BadInput("invalid_field", _describe(problems))

    def text(name: str) -> str:
        value = body[name]
        assert isinstance(value, str)  # checked above
        return value

    def optional(name: str) -> str | None:
        value = body.get(name)
        return value if isinstance(value, str) else None

    birth: date | None = None
    if (birth_text := optional("date_of_birth")) is not None:
        try:
            birth = date.fromisoformat(birth_text)
        except ValueError:
            problems["date_of_birth"] = "must be a date YYYY-MM-DD"
    balance_type = optional("balance_type") or BalanceType.REAL.value
    if balance_type not in {member.value for member in BalanceType}:
        problems["balance_type"] = "must be one of: real, demo"
        balance_type = BalanceType.REAL.value

    # Build all three so that one answer lists every problem.
    customer = _checked(
        problems,
        lambda: NewCustomer(
            customer_id=customer_id,
            country_code=text("country_code"),
            ip=text("ip"),
            email=text("email"),
            phone_number=optional("phone_number"),
            account_timezone=optional("account_timezone"),
            first_name=optional("first_name"),
            middle_name=optional("middle_name"),
            last_name=optional("last_name"),
            date_of_birth=birth,
        ),
    )
    balance = _checked(
        problems,
        lambda: TradingBalance(
            balance_id=text("balance_id"),
            currency_code=text("balance_currency_code"),
            balance_type=BalanceType(balance_type),
        ),
    )
    visit = _checked(
        problems,
        lambda: Visit(
            country_code=text("country_code"),
            ip=text("ip"),
            locale=text("locale"),
            site_domain=text("site_domain"),
        ),
    )
    if problems or customer is None or balance is None or visit is None:
        raise BadInput("invalid_field", _describe(problems))
    return TradingRoomRequest(customer, balance, visit)


def _checked(problems: dict[str, str], build: Callable[[], T]) -> T | None:
    """``build()``, or ``None`` with its field problems added to ``problems``."""
    try:
        return build()
    except InvalidRequest as exc:
        problems.update(exc.field_errors)
        return None


def _describe(problems: dict[str, str]) -> str:
    return "; ".join(f"{name}: {problem}" for name, problem in sorted(problems.items())) + "."


def outcome_response(outcome: TradingRoomOutcome) -> web.Response:
    """The answer for one outcome (see the module's table). Never cached: the URL is single-use."""
    headers = {"Cache-Control": "no-store"}
    if outcome.status is TradingRoomStatus.ERROR:
        body: dict[str, object] = {
            "error": UNAVAILABLE,
            "outcome": UNAVAILABLE,
            "message": outcome.user_message,
        }
        status = ERRORS[UNAVAILABLE].status
    else:
        body = {
            "outcome": outcome.status.value,
            "message": outcome.user_message,
            "customer_created": outcome.customer_created,
        }
        if outcome.url is not None:
            body["url"] = outcome.url
        status = 200
    return web.Response(
        status=status, body=orjson.dumps(body), content_type="application/json", headers=headers
    )


async def open_room(
    client: QuadcodeGatewayClient, request: TradingRoomRequest
) -> TradingRoomOutcome:
    """Run the trading-room flow and log its outcome (the caller bounds it in time).

    Cancelling it mid-flow is harmless: every call it makes is safe to repeat (a registration is
    deduplicated by customer id, and an unused login URL just expires).
    """
    outcome = await open_trading_room(client, request.customer, request.balance, request.visit)
    log.info(
        "trading_room_answered",
        customer_id=request.customer.customer_id,
        outcome=shown_outcome(outcome),
        customer_created=outcome.customer_created,
        quadcode_error=type(outcome.error).__name__ if outcome.error else None,
        quadcode_status=outcome.error.status if outcome.error else None,
    )
    return outcome


def shown_outcome(outcome: TradingRoomOutcome) -> str:
    """The outcome's name as the website sees it."""
    return UNAVAILABLE if outcome.status is TradingRoomStatus.ERROR else outcome.status.value
