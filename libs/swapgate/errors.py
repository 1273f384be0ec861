"""Every error the Swapgate client raises, in one place.

Three families, each with a clear meaning for the caller:

* refused before any request (bad input, markup out of bounds, amount outside the quote's
  deposit rules, a body that JSON.stringify would not reproduce): nothing was sent;
* Swapgate answered with an error status (:class:`AuthRejected` for 403, :class:`RequestRejected`
  for other 4xx, :class:`ServerError` for 5xx), with Swapgate's body kept;
* the transport failed (:class:`SwapgateTimeout`, :class:`SwapgateUnavailable`), or an order's
  outcome cannot be known (:class:`OrderOutcomeUnknown`).

``retriable`` says whether sending the same read again may succeed. An order creation is never
blindly retriable: see :class:`OrderOutcomeUnknown`.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from swapgate.orders import OrderStatus
    from swapgate.wire import Quote


class SwapgateError(Exception):
    """Base of every error raised by this package."""

    retriable: bool = False


class InvalidAmount(SwapgateError, ValueError):
    """An amount is not a finite Decimal in the accepted range (never a float)."""


class InvalidRequest(SwapgateError, ValueError):
    """A request field other than an amount or markup is unusable (e.g. an empty address)."""


class InvalidMarkup(SwapgateError, ValueError):
    """A markup (or commission) percentage is negative, not below 100, or not a Decimal."""


class MarkupOutOfBounds(InvalidMarkup):
    """A requested markup lies outside a key's configured minimum/maximum."""

    def __init__(self, requested: Decimal, minimum: Decimal | None, maximum: Decimal | None):
        self.requested = requested
        self.minimum = minimum
        self.maximum = maximum
        super().__init__(
            f"markup {requested} is outside the allowed range "
            f"[{'-' if minimum is None else minimum}, {'-' if maximum is None else maximum}]"
        )


class InexactArithmetic(SwapgateError, ArithmeticError):
    """A markup formula could not be computed exactly within the working precision."""


class NotJsonSafe(SwapgateError, TypeError):
    """A value cannot be put in a signed body byte-for-byte as JavaScript would (e.g. a float)."""


class AmountOutOfRange(SwapgateError):
    """A claimed deposit amount is outside the quote's deposit rules; no order was created."""

    def __init__(
        self,
        claimed: Decimal,
        minimum: Decimal,
        maximum: Decimal | None,
        quote: Quote | None = None,
    ):
        self.claimed = claimed
        self.minimum = minimum
        self.maximum = maximum
        self.quote = quote
        shown_max = "unlimited" if maximum is None else str(maximum)
        super().__init__(
            f"claimed deposit {claimed} is outside the deposit rules [{minimum}, {shown_max}]"
        )


class AmountBelowMinimum(AmountOutOfRange):
    """The claimed deposit is below ``depositRules.minAmount``."""


class AmountAboveMaximum(AmountOutOfRange):
    """The claimed deposit is above a non-zero ``depositRules.maxAmount``."""


class SwapgateResponseError(SwapgateError):
    """Swapgate answered with an error status; ``body`` is what it sent (parsed JSON or text)."""

    def __init__(self, status: int, body: object):
        self.status = status
        self.body = body
        self.code: str | None = None
        self.message: str = ""
        if isinstance(body, Mapping):
            code = body.get("code")
            self.code = code if isinstance(code, str) else None
            message = body.get("message")
            if isinstance(message, list):
                self.message = "; ".join(str(m) for m in message)
            elif message is not None:
                self.message = str(message)
        elif isinstance(body, str):
            self.message = body[:500]
        detail = f" ({self.code})" if self.code else ""
        super().__init__(f"Swapgate answered {status}{detail}: {self.message}")


class AuthRejected(SwapgateResponseError):
    """403: bad or missing signature, unknown or inactive key, stale timestamp, replay, or a
    source IP outside the key's whitelist. Fix the credentials or the whitelist; do not retry."""


class RequestRejected(SwapgateResponseError):
    """Any other 4xx: the request itself was refused (validation, not found, ...)."""


class ServerError(SwapgateResponseError):
    """5xx: Swapgate failed; a read may be retried later."""

    retriable = True


class SwapgateTimeout(SwapgateError):
    """No complete answer within the per-request timeout."""

    retriable = True


class SwapgateUnavailable(SwapgateError):
    """The connection failed. ``maybe_delivered`` is False when it failed before the request
    could be sent (refused, DNS, TLS), True when it broke afterwards (server disconnected)."""

    retriable = True

    def __init__(self, message: str, *, maybe_delivered: bool):
        self.maybe_delivered = maybe_delivered
        super().__init__(message)


class CredentialsRequired(SwapgateError):
    """An API v2 call (or an account call) was made on a client configured without them."""


class MalformedResponse(SwapgateError):
    """A 2xx answer did not have the documented shape (missing field, non-decimal number)."""


class OrderOutcomeUnknown(SwapgateError):
    """An order creation was sent but its outcome is unknown (timeout, dropped connection, 5xx).

    The order may exist at Swapgate. Do not resend blindly (a second order would be a second
    exchange); keep the ledger's pending transfer open and reconcile. ``cause`` is the underlying
    error.
    """

    def __init__(self, cause: SwapgateError):
        self.cause = cause
        super().__init__(f"order creation outcome unknown: {cause}")


class OrderNotFinal(SwapgateError):
    """The poller's time budget ran out before the order reached a final state."""

    def __init__(self, order_id: str, last_status: OrderStatus | None):
        self.order_id = order_id
        self.last_status = last_status
        super().__init__(f"order {order_id} not final in time (last seen: {last_status})")
