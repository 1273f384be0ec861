"""Opening the trading room for a customer, as the README's sequence diagrams describe.

Ask for a login URL; if Quadcode does not know the customer (404), register them and ask once
more. Never more than that: a second 404 means something is wrong on the other side, and looping
would hammer Quadcode on every page view. 451 and 418 become outcomes our website can show.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final

import structlog

from quadcode_gateway.client import QuadcodeGatewayClient
from quadcode_gateway.errors import (
    AccessRestricted,
    CountryRestricted,
    CurrencyRestricted,
    CustomerAlreadyExists,
    CustomerBlocked,
    CustomerNotFound,
    QuadcodeError,
)
from quadcode_gateway.models import NewCustomer, TradingBalance, Visit

log = structlog.get_logger(__name__)


class TradingRoomStatus(StrEnum):
    """What happened when we tried to open the trading room."""

    URL = "url"
    COUNTRY_RESTRICTED = "country_restricted"
    CURRENCY_RESTRICTED = "currency_restricted"
    BLOCKED = "blocked"
    ERROR = "error"


USER_MESSAGES: Final[dict[TradingRoomStatus, str]] = {
    TradingRoomStatus.URL: "",
    TradingRoomStatus.COUNTRY_RESTRICTED: "Sorry. Your current country is not allowed access.",
    TradingRoomStatus.CURRENCY_RESTRICTED: "Sorry. Trading is not available for this currency.",
    TradingRoomStatus.BLOCKED: "Sorry. Your account is blocked.",
    TradingRoomStatus.ERROR: "Sorry. The trading room is not available right now; "
    "please try again later.",
}
"""What the website shows for each outcome (the README's wording where it gives one)."""


@dataclass(frozen=True, slots=True)
class TradingRoomOutcome:
    """The result of :func:`open_trading_room`.

    ``url`` is set only for :attr:`TradingRoomStatus.URL`; ``error`` holds the Quadcode error
    behind any other status, for logs and support, never for the customer's eyes.
    """

    status: TradingRoomStatus
    url: str | None = None
    error: QuadcodeError | None = None
    customer_created: bool = False

    @property
    def user_message(self) -> str:
        """The text to show the customer instead of the iframe ("" when there is a URL)."""
        return USER_MESSAGES[self.status]


def _refusal(error: QuadcodeError, customer_created: bool) -> TradingRoomOutcome:
    if isinstance(error, CountryRestricted):
        status = TradingRoomStatus.COUNTRY_RESTRICTED
    elif isinstance(error, CurrencyRestricted):
        status = TradingRoomStatus.CURRENCY_RESTRICTED
    elif isinstance(error, CustomerBlocked):
        status = TradingRoomStatus.BLOCKED
    else:
        # Includes a 451 with a reason the contract does not name: not showable as either.
        status = TradingRoomStatus.ERROR
    log.info(
        "trading_room_refused",
        status=status.value,
        operation=error.operation,
        http_status=error.status,
        error=type(error).__name__,
        reason=error.reason if isinstance(error, AccessRestricted) else None,
    )
    return TradingRoomOutcome(status=status, error=error, customer_created=customer_created)


async def open_trading_room(
    client: QuadcodeGatewayClient,
    customer: NewCustomer,
    balance: TradingBalance,
    visit: Visit,
) -> TradingRoomOutcome:
    """Get a one-time trading-room URL for ``customer``, registering them first if needed.

    At most three calls: login URL, then (on 404 only) create customer and login URL once more.
    Every Quadcode failure becomes an outcome; only programming errors propagate.
    """
    try:
        login = await client.create_login_url(customer.customer_id, balance, visit)
        return TradingRoomOutcome(status=TradingRoomStatus.URL, url=login.url)
    except CustomerNotFound:
        pass
    except QuadcodeError as error:
        return _refusal(error, customer_created=False)

    created = False
    try:
        await client.create_customer(customer)
        created = True
    except CustomerAlreadyExists:
        # Someone (another tab, another worker) registered them since our 404: carry on.
        pass
    except QuadcodeError as error:
        return _refusal(error, customer_created=False)

    try:
        login = await client.create_login_url(customer.customer_id, balance, visit)
    except QuadcodeError as error:
        return _refusal(error, customer_created=created)
    return TradingRoomOutcome(status=TradingRoomStatus.URL, url=login.url, customer_created=created)
