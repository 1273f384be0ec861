"""Every way a Quadcode gateway call can fail, as exceptions a caller can act on.

One class per documented status (per meaning, where one status means different things on
different operations: 404 customer vs user, 409 exists vs balance/currency mismatch, 451 country
vs currency). :data:`STATUS_HANDLING` is the table of what the client does with each status; the
integration doc repeats it and a test keeps the two in step.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final


class QuadcodeError(Exception):
    """Base of every gateway failure; ``status`` is the HTTP status if Quadcode answered."""

    def __init__(
        self,
        message: str,
        *,
        operation: str | None = None,
        status: int | None = None,
        body: object = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.operation = operation
        self.status = status
        self.body = body


class InvalidRequest(QuadcodeError, ValueError):
    """Our own check refused the input before anything was sent.

    ``field_errors`` maps each bad field to what is wrong with it.
    """

    def __init__(self, field_errors: Mapping[str, str], *, operation: str | None = None) -> None:
        self.field_errors = dict(field_errors)
        detail = "; ".join(f"{field}: {problem}" for field, problem in sorted(field_errors.items()))
        super().__init__(f"invalid request, nothing sent ({detail})", operation=operation)


class BadRequest(QuadcodeError):
    """400: Quadcode could not parse the payload. A bug on our side; not retried."""


class Unauthorized(QuadcodeError):
    """401: our JWT was refused: wrong key, issuer, audience, or a skewed clock."""


class InsufficientFunds(QuadcodeError):
    """402 (internal balances, withdrawals): the user's balance does not cover the amount."""


class Forbidden(QuadcodeError):
    """403: the calling server's IP address is not on Quadcode's allowlist."""


class NotFound(QuadcodeError):
    """404: the entity named in the path does not exist."""


class CustomerNotFound(NotFound):
    """404: no customer with this id; create it first (see ``open_trading_room``)."""


class UserNotFound(NotFound):
    """404 (internal balances): no user, or no such balance of that user."""


class Conflict(QuadcodeError):
    """409: the request conflicts with what Quadcode already holds."""


class CustomerAlreadyExists(Conflict):
    """409 on create customer: a customer with this id is already registered."""


class BalanceCurrencyMismatch(Conflict):
    """409 on login URL: this balance id is already bound to a different currency."""


class UserAlreadyExists(Conflict):
    """409 on create/update user (internal balances)."""


class CustomerBlocked(QuadcodeError):
    """418: the customer is blocked (the README's sequence diagram; not in the OpenAPI file)."""


@dataclass(frozen=True, slots=True)
class FieldError:
    """One entry of a 422 body: ``{"<field>": {"code": ..., "message": ...}}``."""

    code: str
    message: str


class UnprocessableEntity(QuadcodeError):
    """422: Quadcode rejected named fields; ``field_errors`` holds its codes per field."""

    def __init__(
        self,
        field_errors: Mapping[str, FieldError],
        *,
        operation: str | None = None,
        body: object = None,
    ) -> None:
        self.field_errors = dict(field_errors)
        detail = ", ".join(f"{name}={err.code}" for name, err in sorted(self.field_errors.items()))
        super().__init__(
            f"unprocessable entity ({detail or 'no field errors given'})",
            operation=operation,
            status=422,
            body=body,
        )


class RateLimited(QuadcodeError):
    """429 after the bounded retries were spent, or a ``Retry-After`` too long to wait for.

    ``retry_after`` is Quadcode's hint in seconds, if it sent one.
    """

    def __init__(
        self,
        message: str,
        *,
        operation: str | None = None,
        retry_after: float | None = None,
        attempts: int = 1,
    ) -> None:
        super().__init__(message, operation=operation, status=429)
        self.retry_after = retry_after
        self.attempts = attempts


COUNTRY_RESTRICTION: Final = "customer_country_restriction"
CURRENCY_RESTRICTION: Final = "customer_currency_restriction"
USER_COUNTRY_RESTRICTION: Final = "user_country_restriction"


class AccessRestricted(QuadcodeError):
    """451: Quadcode may not serve this customer; ``reason`` is the body's ``error`` code."""

    def __init__(
        self,
        message: str,
        *,
        reason: str,
        operation: str | None = None,
        body: object = None,
    ) -> None:
        super().__init__(message, operation=operation, status=451, body=body)
        self.reason = reason


class CountryRestricted(AccessRestricted):
    """451 ``customer_country_restriction`` (or ``user_country_restriction``)."""


class CurrencyRestricted(AccessRestricted):
    """451 ``customer_currency_restriction``: the balance's currency is not allowed."""


class ServerError(QuadcodeError):
    """5xx: Quadcode failed. Raised once the bounded retries are spent (or at once when the
    operation is not safe to repeat)."""


class GatewayUnavailable(QuadcodeError):
    """No answer: timeout or connection failure.

    ``outcome_unknown`` is true when the request may have reached Quadcode and been applied;
    the caller must then reconcile (look the entity up) rather than blindly repeat.
    """

    def __init__(
        self, message: str, *, operation: str | None = None, outcome_unknown: bool
    ) -> None:
        super().__init__(message, operation=operation)
        self.outcome_unknown = outcome_unknown


class UnexpectedResponse(QuadcodeError):
    """A status the contract does not document, or a success body that breaks the contract."""


@dataclass(frozen=True, slots=True)
class StatusHandling:
    """What the client does with one HTTP status."""

    status: str
    meaning: str
    raised: str
    retried: str


STATUS_HANDLING: Final[tuple[StatusHandling, ...]] = (
    StatusHandling("200/201", "success", "typed result (or None)", "no"),
    StatusHandling("400", "payload not valid", "BadRequest", "no"),
    StatusHandling("401", "JWT missing or refused", "Unauthorized (cached token dropped)", "no"),
    StatusHandling("402", "insufficient funds (internal withdrawals)", "InsufficientFunds", "no"),
    StatusHandling("403", "our server IP not allowlisted", "Forbidden", "no"),
    StatusHandling(
        "404", "customer / user / balance not found", "CustomerNotFound / UserNotFound", "no"
    ),
    StatusHandling(
        "409",
        "customer exists (create); balance id bound to another currency (session)",
        "CustomerAlreadyExists / BalanceCurrencyMismatch / UserAlreadyExists",
        "no",
    ),
    StatusHandling("418", "customer blocked", "CustomerBlocked", "no"),
    StatusHandling("422", "fields rejected", "UnprocessableEntity (field_errors parsed)", "no"),
    StatusHandling(
        "429",
        "too many requests per ip / customer",
        "RateLimited",
        "yes, every operation: backoff with jitter or Retry-After, bounded",
    ),
    StatusHandling(
        "451",
        "customer_country_restriction / customer_currency_restriction",
        "CountryRestricted / CurrencyRestricted",
        "no",
    ),
    StatusHandling(
        "5xx", "Quadcode failed", "ServerError", "yes, only operations safe to repeat; bounded"
    ),
    StatusHandling(
        "timeout / connection",
        "no answer",
        "GatewayUnavailable(outcome_unknown=...)",
        "yes if nothing was sent or the operation is safe to repeat; bounded",
    ),
    StatusHandling("other", "not in the contract", "UnexpectedResponse", "no"),
)
