"""Requests and results of the external-balance gateway API, validated before anything is sent.

Each request type checks itself on construction and raises :class:`InvalidRequest` naming every
bad field, so a value Quadcode would refuse (an unknown country, an IP that does not parse, an id
that would change the URL path) never leaves the process.

Bounds where the contract is silent are ours and deliberately conservative; they are listed in
docs/quadcode-integration.md.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Final

from quadcode_gateway.countries import BY_ALPHA_2
from quadcode_gateway.errors import InvalidRequest

MAX_ID_LENGTH: Final = 64
MAX_REQUEST_ID_LENGTH: Final = 128
MAX_TEXT_LENGTH: Final = 255
MAX_USER_AGENT_LENGTH: Final = 512
MAX_EMAIL_LENGTH: Final = 254
MAX_PASSWORD_LENGTH: Final = 128
MAX_INT32: Final = 2**31 - 1
MAX_INT64: Final = 2**63 - 1

# Ids go into URL paths: a conservative alphabet keeps them from adding segments or queries,
# and the leading alphanumeric rules out "." and "..", which URL normalisation would eat.
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]*")
# The WHATWG (HTML living standard) "valid e-mail address" shape.
_EMAIL = re.compile(
    r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)
_LOCALE = re.compile(r"[a-z]{2,3}(?:_[A-Z]{2})?")
_HOST_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
# ISO 4217 is three letters; crypto balances (USDT, USDC) need a little more room.
_CURRENCY = re.compile(r"[A-Z][A-Z0-9]{2,7}")
_PHONE = re.compile(r"\+?[0-9]{6,15}")
_TIMEZONE = re.compile(r"[A-Za-z_]+(?:/[A-Za-z0-9_+-]+){0,2}|[+-][0-9]{2}:[0-9]{2}")
_DECIMAL = re.compile(r"[0-9]{1,30}(?:\.[0-9]{1,18})?")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class BalanceType(StrEnum):
    """The contract's ``balance_type`` enum."""

    REAL = "real"
    DEMO = "demo"


class FieldChecks:
    """Collects the problems of one request's fields, then raises them together.

    Every check returns the value unchanged so a request can be validated field by field.
    """

    def __init__(self) -> None:
        self.errors: dict[str, str] = {}

    def fail(self, field: str, problem: str) -> None:
        """Record a problem (the first one per field wins)."""
        self.errors.setdefault(field, problem)

    def raise_if_any(self) -> None:
        """Raise :class:`InvalidRequest` if any check failed."""
        if self.errors:
            raise InvalidRequest(self.errors)

    def text(self, field: str, value: object, *, max_length: int = MAX_TEXT_LENGTH) -> None:
        """A required, non-blank, bounded string without control characters."""
        if not isinstance(value, str):
            self.fail(field, "must be a string")
        elif not value.strip():
            self.fail(field, "is required")
        elif len(value) > max_length:
            self.fail(field, f"is longer than {max_length} characters")
        elif _CONTROL.search(value):
            self.fail(field, "contains control characters")

    def optional_text(
        self, field: str, value: object, *, max_length: int = MAX_TEXT_LENGTH
    ) -> None:
        """Like :meth:`text`, but ``None`` is allowed."""
        if value is not None:
            self.text(field, value, max_length=max_length)

    def identifier(self, field: str, value: object, *, max_length: int = MAX_ID_LENGTH) -> None:
        """An id safe to put in a URL path: 1..max_length of ``A-Z a-z 0-9 . _ : -``."""
        if not isinstance(value, str):
            self.fail(field, "must be a string")
        elif not value:
            self.fail(field, "is required")
        elif len(value) > max_length:
            self.fail(field, f"is longer than {max_length} characters")
        elif not _ID.fullmatch(value):
            self.fail(field, "may hold only letters, digits, '.', '_', ':' and '-'")

    def country(self, field: str, value: object) -> None:
        """An upper-case ISO 3166-1 alpha-2 code, e.g. ``DE``."""
        if not isinstance(value, str):
            self.fail(field, "must be a string")
        elif value not in BY_ALPHA_2:
            self.fail(field, "must be an upper-case ISO 3166-1 alpha-2 code such as 'DE'")

    def ip(self, field: str, value: object) -> None:
        """An IPv4 or IPv6 address."""
        if not isinstance(value, str):
            self.fail(field, "must be a string")
            return
        try:
            ipaddress.ip_address(value)
        except ValueError:
            self.fail(field, "is not an IPv4 or IPv6 address")

    def email(self, field: str, value: object) -> None:
        """An address of the usual ``local@domain`` shape."""
        if not isinstance(value, str):
            self.fail(field, "must be a string")
        elif len(value) > MAX_EMAIL_LENGTH:
            self.fail(field, f"is longer than {MAX_EMAIL_LENGTH} characters")
        elif not _EMAIL.fullmatch(value) or len(value.split("@", 1)[0]) > 64:
            self.fail(field, "is not an e-mail address")

    def currency(self, field: str, value: object) -> None:
        """An upper-case currency code: ISO 4217 (``USD``) or a crypto ticker (``USDT``)."""
        if not isinstance(value, str) or not _CURRENCY.fullmatch(value):
            self.fail(field, "must be an upper-case currency code such as 'USD'")

    def locale(self, field: str, value: object) -> None:
        """A locale name like ``en_US`` (or just ``en``)."""
        if not isinstance(value, str) or not _LOCALE.fullmatch(value):
            self.fail(field, "must be a locale name such as 'en_US'")

    def domain(self, field: str, value: object) -> None:
        """A bare host name (no scheme, port or path), e.g. ``trade.brand-domain.com``."""
        if not isinstance(value, str):
            self.fail(field, "must be a string")
            return
        labels = value.split(".")
        if (
            not value
            or len(value) > 253
            or not all(_HOST_LABEL.fullmatch(label) for label in labels)
        ):
            self.fail(field, "must be a host name such as 'trade.brand-domain.com'")

    def enum(self, field: str, value: object, allowed: type[StrEnum]) -> None:
        """One of the enum's values."""
        if value not in {member.value for member in allowed}:
            choices = ", ".join(member.value for member in allowed)
            self.fail(field, f"must be one of: {choices}")

    def integer(self, field: str, value: object, *, minimum: int, maximum: int) -> None:
        """An ``int`` (not a ``bool``) within bounds."""
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(field, "must be an integer")
        elif not minimum <= value <= maximum:
            self.fail(field, f"must be between {minimum} and {maximum}")

    def phone(self, field: str, value: object) -> None:
        """6 to 15 digits, optionally after a leading ``+`` (E.164 length)."""
        if value is not None and (not isinstance(value, str) or not _PHONE.fullmatch(value)):
            self.fail(field, "must be 6 to 15 digits, optionally after '+'")

    def timezone(self, field: str, value: object) -> None:
        """An IANA zone name (``Europe/Berlin``) or a UTC offset (``+03:00``)."""
        if value is not None and (
            not isinstance(value, str) or len(value) > 64 or not _TIMEZONE.fullmatch(value)
        ):
            self.fail(field, "must be a zone name such as 'Europe/Berlin' or an offset '+03:00'")

    def birth_date(self, field: str, value: object, *, today: date) -> None:
        """A :class:`datetime.date` between 1900-01-01 and ``today``."""
        if value is None:
            return
        if not isinstance(value, date):
            self.fail(field, "must be a datetime.date")
        elif not date(1900, 1, 1) <= value <= today:
            self.fail(field, "must be a date between 1900-01-01 and today")

    def amount(self, field: str, value: object) -> None:
        """A positive decimal: a :class:`~decimal.Decimal` or a string like ``"2.01"``.

        Floats are refused outright: money is never binary floating point.
        """
        if isinstance(value, Decimal):
            if not value.is_finite() or value <= 0:
                self.fail(field, "must be a positive, finite decimal")
            elif not _DECIMAL.fullmatch(format(value, "f")):
                self.fail(field, "has too many digits")
        elif isinstance(value, str):
            if not _DECIMAL.fullmatch(value):
                self.fail(field, "must be a decimal string with a dot delimiter, e.g. '2.01'")
            elif Decimal(value) <= 0:
                self.fail(field, "must be positive")
        else:
            self.fail(field, "must be a Decimal or a decimal string, never a float")


def amount_string(value: Decimal | str) -> str:
    """The wire form of a validated amount: plain digits with a dot, no exponent."""
    return value if isinstance(value, str) else format(value, "f")


def parse_amount(value: object) -> Decimal:
    """A decimal string from a response, as :class:`~decimal.Decimal` (never a float)."""
    if not isinstance(value, str):
        raise ValueError(f"amount must be a decimal string, got {type(value).__name__}")
    try:
        amount = Decimal(value)
    except InvalidOperation:
        raise ValueError(f"amount {value!r} is not a decimal") from None
    if not amount.is_finite():
        raise ValueError(f"amount {value!r} is not finite")
    return amount


def check_identifier(field: str, value: object, *, max_length: int = MAX_ID_LENGTH) -> str:
    """Validate one path id on its own (e.g. ``customer_id`` of a block call) and return it."""
    checks = FieldChecks()
    checks.identifier(field, value, max_length=max_length)
    checks.raise_if_any()
    assert isinstance(value, str)
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class NewCustomer:
    """Body of ``POST /v1/b2b-gateway/customers``."""

    customer_id: str
    country_code: str
    ip: str
    email: str
    phone_number: str | None = None
    account_timezone: str | None = None
    first_name: str | None = None
    middle_name: str | None = None
    last_name: str | None = None
    date_of_birth: date | None = None

    def __post_init__(self) -> None:
        checks = FieldChecks()
        checks.identifier("customer_id", self.customer_id)
        checks.country("country_code", self.country_code)
        checks.ip("ip", self.ip)
        checks.email("email", self.email)
        checks.phone("phone_number", self.phone_number)
        checks.timezone("account_timezone", self.account_timezone)
        checks.optional_text("first_name", self.first_name)
        checks.optional_text("middle_name", self.middle_name)
        checks.optional_text("last_name", self.last_name)
        checks.birth_date("date_of_birth", self.date_of_birth, today=date.today())
        checks.raise_if_any()

    def to_json(self) -> dict[str, str]:
        """The request body; optional fields that are ``None`` are left out."""
        body = {
            "customer_id": self.customer_id,
            "country_code": self.country_code,
            "ip": self.ip,
            "email": self.email,
            "phone_number": self.phone_number,
            "account_timezone": self.account_timezone,
            "first_name": self.first_name,
            "middle_name": self.middle_name,
            "last_name": self.last_name,
            "date_of_birth": self.date_of_birth.isoformat() if self.date_of_birth else None,
        }
        return {key: value for key, value in body.items() if value is not None}


@dataclass(frozen=True, slots=True, kw_only=True)
class TradingBalance:
    """The customer's balance the trading room trades on."""

    balance_id: str
    currency_code: str
    balance_type: BalanceType = BalanceType.REAL

    def __post_init__(self) -> None:
        checks = FieldChecks()
        checks.identifier("balance_id", self.balance_id)
        checks.currency("balance_currency_code", self.currency_code)
        checks.enum("balance_type", self.balance_type, BalanceType)
        checks.raise_if_any()


@dataclass(frozen=True, slots=True, kw_only=True)
class Visit:
    """Where the customer is right now: detected country and IP, UI locale, our site domain."""

    country_code: str
    ip: str
    locale: str
    site_domain: str

    def __post_init__(self) -> None:
        checks = FieldChecks()
        checks.country("country_code", self.country_code)
        checks.ip("ip", self.ip)
        checks.locale("locale", self.locale)
        checks.domain("site_domain", self.site_domain)
        checks.raise_if_any()


def login_url_body(balance: TradingBalance, visit: Visit) -> dict[str, str]:
    """Body of ``POST /v1/b2b-gateway/customers/{customer_id}/session``."""
    return {
        "balance_id": balance.balance_id,
        "balance_currency_code": balance.currency_code,
        "balance_type": BalanceType(balance.balance_type).value,
        "country_code": visit.country_code,
        "ip": visit.ip,
        "locale": visit.locale,
        "site_domain": visit.site_domain,
    }


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionRequest:
    """Body of ``POST .../customers/{customer_id}/sessions`` (and the internal ``users`` twin)."""

    country_code: str
    ip: str
    user_agent: str
    platform_id: int

    def __post_init__(self) -> None:
        checks = FieldChecks()
        checks.country("country_code", self.country_code)
        checks.ip("ip", self.ip)
        checks.text("user_agent", self.user_agent, max_length=MAX_USER_AGENT_LENGTH)
        checks.integer("platform_id", self.platform_id, minimum=1, maximum=MAX_INT32)
        checks.raise_if_any()

    def to_json(self) -> dict[str, str | int]:
        """The request body."""
        return {
            "country_code": self.country_code,
            "ip": self.ip,
            "user_agent": self.user_agent,
            "platform_id": self.platform_id,
        }


@dataclass(frozen=True, slots=True)
class LoginUrl:
    """A one-time trading-room URL for the iframe on our site."""

    url: str


@dataclass(frozen=True, slots=True)
class CustomerSession:
    """A session Quadcode opened for the customer."""

    ssid: str


@dataclass(frozen=True, slots=True)
class AllowedCountry:
    """One entry of ``GET /v1/b2b-gateway/allowed-countries``."""

    name: str
    short_code: str
    iso_code: str
