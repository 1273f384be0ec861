"""Typed client of Quadcode's internal-balance gateway API (quadcode-internal-balance-openapi.yaml).

In this configuration Quadcode holds the money; we register users and move funds in and out.
Same signing, validation and error mapping as :class:`~quadcode_gateway.client.
QuadcodeGatewayClient`.

Safe to repeat after a 5xx or a timeout: every call except :meth:`InternalBalanceClient.
create_user`, which carries no idempotency key (a lost answer to it surfaces as
``GatewayUnavailable(outcome_unknown=True)``; look the user up before trying again). Deposits and
withdrawals are repeated with the same ``request_id``, which Quadcode uses to prevent a double
spend.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum

from quadcode_gateway.client import PREFIX, GatewayClientBase
from quadcode_gateway.errors import UnexpectedResponse, UserAlreadyExists, UserNotFound
from quadcode_gateway.models import (
    MAX_INT64,
    MAX_PASSWORD_LENGTH,
    MAX_REQUEST_ID_LENGTH,
    BalanceType,
    CustomerSession,
    FieldChecks,
    LoginUrl,
    SessionRequest,
    amount_string,
    parse_amount,
)
from quadcode_gateway.transport import GatewayResponse, Operation

CREATE_USER = Operation(
    "create_user",
    "POST",
    f"{PREFIX}/users",
    201,
    safe_to_repeat=False,
    conflict=UserAlreadyExists,
)
UPDATE_USER = Operation(
    "update_user",
    "PUT",
    f"{PREFIX}/users/{{user_id}}",
    200,
    safe_to_repeat=True,
    not_found=UserNotFound,
    conflict=UserAlreadyExists,
)
GET_BLOCK_STATUS = Operation(
    "get_block_status",
    "GET",
    f"{PREFIX}/users/{{user_id}}/block-status",
    200,
    safe_to_repeat=True,
    not_found=UserNotFound,
)
BLOCK_USER = Operation(
    "block_user",
    "POST",
    f"{PREFIX}/users/{{user_id}}/block-status",
    200,
    safe_to_repeat=True,
    not_found=UserNotFound,
)
CREATE_USER_SESSION = Operation(
    "create_user_session",
    "POST",
    f"{PREFIX}/users/{{user_id}}/sessions",
    201,
    safe_to_repeat=True,
    not_found=UserNotFound,
)
CREATE_USER_LOGIN_URL = Operation(
    "create_user_login_url",
    "POST",
    f"{PREFIX}/users/{{user_id}}/login-urls",
    201,
    safe_to_repeat=True,
    not_found=UserNotFound,
)
UPDATE_PASSWORD = Operation(
    "update_password",
    "PUT",
    f"{PREFIX}/users/{{user_id}}/password",
    200,
    safe_to_repeat=True,
    not_found=UserNotFound,
)
LIST_BALANCES = Operation(
    "list_balances",
    "GET",
    f"{PREFIX}/users/{{user_id}}/balances",
    200,
    safe_to_repeat=True,
    not_found=UserNotFound,
)
GET_BALANCE = Operation(
    "get_balance",
    "GET",
    f"{PREFIX}/users/{{user_id}}/balances/{{balance_id}}",
    200,
    safe_to_repeat=True,
    not_found=UserNotFound,
)
DEPOSIT = Operation(
    "deposit",
    "POST",
    f"{PREFIX}/users/{{user_id}}/balances/{{balance_id}}/deposits",
    201,
    safe_to_repeat=True,
    not_found=UserNotFound,
)
WITHDRAW = Operation(
    "withdraw",
    "POST",
    f"{PREFIX}/users/{{user_id}}/balances/{{balance_id}}/withdrawals",
    201,
    safe_to_repeat=True,
    not_found=UserNotFound,
)

INTERNAL_OPERATIONS = (
    CREATE_USER,
    UPDATE_USER,
    GET_BLOCK_STATUS,
    BLOCK_USER,
    CREATE_USER_SESSION,
    CREATE_USER_LOGIN_URL,
    UPDATE_PASSWORD,
    LIST_BALANCES,
    GET_BALANCE,
    DEPOSIT,
    WITHDRAW,
)


class BlockStatusCode(StrEnum):
    """The contract's ``BlockStatus.status`` enum."""

    UNKNOWN = "unknown"
    UNBLOCKED = "unblocked"
    DUPLICATE_ACCOUNT = "duplicate-account"
    CLOSED_AT_CLIENT = "closed-at-client"
    FRAUD = "fraud"
    CHARGEBACK = "chargeback"
    PLATFORM_MANIPULATION = "platform-manipulation"
    SELF_BLOCK = "self-block"
    ANTI_MONEY_LAUNDERING = "anti-money-laundering"
    TRADING_FRAUD = "trading-fraud"
    UNDERAGE = "underage"
    RESTRICTED_COUNTRY = "restricted-country"
    NO_KYC_DOCUMENTS = "account-closed-due-to-lack-of-kyc-documents"
    NON_COOPERATIVE_CLIENT = "non-cooperative-client"
    VPN = "vpn"
    THIRD_PARTY_TRADING = "3rd-party-trading"
    THIRD_PARTY_PAYMENT = "3rd-party-payment"
    HACKED = "hacked"
    OTHER = "other"


@dataclass(frozen=True, slots=True, kw_only=True)
class NewUser:
    """Body of ``POST /v1/b2b-gateway/users``."""

    email: str
    password: str
    country_code: str
    ip: str
    balance_currency_code: str
    first_name: str | None = None
    last_name: str | None = None
    locale: str | None = None
    aff_id: int | None = None
    aff_model: str | None = None
    aff_track: str | None = None

    def __post_init__(self) -> None:
        checks = FieldChecks()
        checks.email("email", self.email)
        checks.text("password", self.password, max_length=MAX_PASSWORD_LENGTH)
        checks.country("country_code", self.country_code)
        checks.ip("ip", self.ip)
        checks.currency("balance_currency_code", self.balance_currency_code)
        checks.optional_text("first_name", self.first_name)
        checks.optional_text("last_name", self.last_name)
        if self.locale is not None:
            checks.locale("locale", self.locale)
        if self.aff_id is not None:
            checks.integer("aff_id", self.aff_id, minimum=0, maximum=MAX_INT64)
        checks.optional_text("aff_model", self.aff_model)
        checks.optional_text("aff_track", self.aff_track)
        checks.raise_if_any()

    def to_json(self) -> dict[str, str | int]:
        """The request body; optional fields that are ``None`` are left out."""
        body: dict[str, str | int | None] = {
            "email": self.email,
            "password": self.password,
            "country_code": self.country_code,
            "ip": self.ip,
            "balance_currency_code": self.balance_currency_code,
            "first_name": self.first_name,
            "last_name": self.last_name,
            "locale": self.locale,
            "aff_id": self.aff_id,
            "aff_model": self.aff_model,
            "aff_track": self.aff_track,
        }
        return {key: value for key, value in body.items() if value is not None}

    def __repr__(self) -> str:
        # Keep the password out of logs and tracebacks.
        return f"NewUser(email={self.email!r}, country_code={self.country_code!r}, ...)"


@dataclass(frozen=True, slots=True, kw_only=True)
class UserLoginUrlRequest:
    """Body of ``POST /v1/b2b-gateway/users/{user_id}/login-urls``."""

    country_code: str
    ip: str
    site_domain: str

    def __post_init__(self) -> None:
        checks = FieldChecks()
        checks.country("country_code", self.country_code)
        checks.ip("ip", self.ip)
        checks.domain("site_domain", self.site_domain)
        checks.raise_if_any()


@dataclass(frozen=True, slots=True, kw_only=True)
class MoneyTransfer:
    """Body of a deposit or withdrawal: idempotency key, positive decimal amount, currency."""

    request_id: str
    amount: Decimal | str
    currency_code: str

    def __post_init__(self) -> None:
        checks = FieldChecks()
        checks.identifier("request_id", self.request_id, max_length=MAX_REQUEST_ID_LENGTH)
        checks.amount("amount", self.amount)
        checks.currency("amount_currency_code", self.currency_code)
        checks.raise_if_any()

    def to_json(self) -> dict[str, str]:
        """The request body; the amount as a decimal string."""
        return {
            "request_id": self.request_id,
            "amount": amount_string(self.amount),
            "amount_currency_code": self.currency_code,
        }


@dataclass(frozen=True, slots=True)
class CreatedUser:
    """The 201 answer to create user. The echoed password is deliberately not kept."""

    id: int
    email: str
    country_code: str
    locale: str
    first_name: str | None = None
    last_name: str | None = None


@dataclass(frozen=True, slots=True)
class BlockStatus:
    """One entry of a user's block-status history."""

    status: BlockStatusCode
    reason: str
    created_at: str


@dataclass(frozen=True, slots=True)
class BalanceSummary:
    """One entry of a user's balance list."""

    id: int
    user_id: int
    type: BalanceType
    currency_code: str


@dataclass(frozen=True, slots=True)
class UserBalance:
    """A balance with its cash, equity, margin and PnL (decimals, never floats)."""

    id: int
    user_id: int
    type: BalanceType
    currency_code: str
    cash: Decimal
    equity: Decimal
    margin: Decimal
    pnl: Decimal
    pnl_net: Decimal


def _user_id(user_id: int) -> int:
    checks = FieldChecks()
    checks.integer("user_id", user_id, minimum=1, maximum=MAX_INT64)
    checks.raise_if_any()
    return user_id


def _balance_ids(user_id: int, balance_id: int) -> dict[str, int]:
    checks = FieldChecks()
    checks.integer("user_id", user_id, minimum=1, maximum=MAX_INT64)
    checks.integer("balance_id", balance_id, minimum=1, maximum=MAX_INT64)
    checks.raise_if_any()
    return {"user_id": user_id, "balance_id": balance_id}


def _malformed(operation: Operation, response: GatewayResponse, why: str) -> UnexpectedResponse:
    return UnexpectedResponse(
        f"{operation.name}: {why}",
        operation=operation.name,
        status=response.status,
        body=response.body[:500],
    )


def _int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError("expected an integer")
    return value


def _str(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError("expected a string")
    return value


def _optional_str(value: object) -> str | None:
    return None if value is None else _str(value)


def _summary(entry: object) -> BalanceSummary:
    if not isinstance(entry, dict):
        raise TypeError("expected an object")
    return BalanceSummary(
        id=_int(entry.get("id")),
        user_id=_int(entry.get("user_id")),
        type=BalanceType(_str(entry.get("type"))),
        currency_code=_str(entry.get("currency_code")),
    )


class InternalBalanceClient(GatewayClientBase):
    """The internal-balance operations: users, block status, sessions, login URLs, password,
    balances, deposits and withdrawals."""

    async def create_user(self, user: NewUser) -> CreatedUser:
        """Register a user (201). Not retried after a 5xx or timeout (no idempotency key).

        Raises :class:`UserAlreadyExists` (409), :class:`CountryRestricted` (451),
        :class:`UnprocessableEntity` (422) and the common errors.
        """
        response = await self.transport.call(CREATE_USER, user.to_json())
        body = response.json_object(CREATE_USER.name)
        try:
            return CreatedUser(
                id=_int(body.get("id")),
                email=_str(body.get("email")),
                country_code=_str(body.get("country_code")),
                locale=_str(body.get("locale")),
                first_name=_optional_str(body.get("first_name")),
                last_name=_optional_str(body.get("last_name")),
            )
        except (TypeError, ValueError) as exc:
            raise _malformed(CREATE_USER, response, str(exc)) from None

    async def update_user(self, user_id: int, *, group_id: int) -> None:
        """Move the user to another group (200)."""
        checks = FieldChecks()
        checks.integer("group_id", group_id, minimum=0, maximum=MAX_INT64)
        checks.raise_if_any()
        await self.transport.call(UPDATE_USER, {"group_id": group_id}, user_id=_user_id(user_id))

    async def block_status(self, user_id: int) -> list[BlockStatus]:
        """The user's block-status history."""
        response = await self.transport.call(GET_BLOCK_STATUS, user_id=_user_id(user_id))
        entries = response.json_object(GET_BLOCK_STATUS.name).get("statuses")
        try:
            if not isinstance(entries, list):
                raise TypeError("'statuses' is not a list")
            statuses = []
            for entry in entries:
                if not isinstance(entry, dict):
                    raise TypeError("a status entry is not an object")
                statuses.append(
                    BlockStatus(
                        status=BlockStatusCode(_str(entry.get("status"))),
                        reason=_str(entry.get("reason")),
                        created_at=_str(entry.get("created_at")),
                    )
                )
            return statuses
        except (TypeError, ValueError) as exc:
            raise _malformed(GET_BLOCK_STATUS, response, str(exc)) from None

    async def block_user(self, user_id: int) -> None:
        """Block the user's account (200)."""
        await self.transport.call(BLOCK_USER, user_id=_user_id(user_id))

    async def create_user_session(self, user_id: int, request: SessionRequest) -> CustomerSession:
        """Open a session for the user and return its ``ssid`` (201)."""
        response = await self.transport.call(
            CREATE_USER_SESSION, request.to_json(), user_id=_user_id(user_id)
        )
        ssid = response.json_object(CREATE_USER_SESSION.name).get("ssid")
        if not isinstance(ssid, str) or not ssid:
            raise _malformed(CREATE_USER_SESSION, response, "no string 'ssid'")
        return CustomerSession(ssid)

    async def create_user_login_url(self, user_id: int, request: UserLoginUrlRequest) -> LoginUrl:
        """A one-time login URL that stores the session in the user's browser (201)."""
        body = {
            "country_code": request.country_code,
            "ip": request.ip,
            "site_domain": request.site_domain,
        }
        response = await self.transport.call(CREATE_USER_LOGIN_URL, body, user_id=_user_id(user_id))
        url = response.json_object(CREATE_USER_LOGIN_URL.name).get("url")
        if not isinstance(url, str) or not url:
            raise _malformed(CREATE_USER_LOGIN_URL, response, "no string 'url'")
        return LoginUrl(url)

    async def update_password(self, user_id: int, new_password: str) -> None:
        """Set the user's password (200)."""
        checks = FieldChecks()
        checks.text("new_password", new_password, max_length=MAX_PASSWORD_LENGTH)
        checks.raise_if_any()
        await self.transport.call(
            UPDATE_PASSWORD, {"new_password": new_password}, user_id=_user_id(user_id)
        )

    async def balances(self, user_id: int) -> list[BalanceSummary]:
        """The user's balances."""
        response = await self.transport.call(LIST_BALANCES, user_id=_user_id(user_id))
        entries = response.json_object(LIST_BALANCES.name).get("balances")
        try:
            if not isinstance(entries, list):
                raise TypeError("'balances' is not a list")
            return [_summary(entry) for entry in entries]
        except (TypeError, ValueError) as exc:
            raise _malformed(LIST_BALANCES, response, str(exc)) from None

    async def balance(self, user_id: int, balance_id: int) -> UserBalance:
        """One balance with cash, equity, margin and PnL."""
        response = await self.transport.call(GET_BALANCE, **_balance_ids(user_id, balance_id))
        body = response.json_object(GET_BALANCE.name)
        try:
            summary = _summary(body)
            return UserBalance(
                id=summary.id,
                user_id=summary.user_id,
                type=summary.type,
                currency_code=summary.currency_code,
                cash=parse_amount(body.get("cash")),
                equity=parse_amount(body.get("equity")),
                margin=parse_amount(body.get("margin")),
                pnl=parse_amount(body.get("pnl")),
                pnl_net=parse_amount(body.get("pnl_net")),
            )
        except (TypeError, ValueError) as exc:
            raise _malformed(GET_BALANCE, response, str(exc)) from None

    async def deposit(self, user_id: int, balance_id: int, transfer: MoneyTransfer) -> None:
        """Increase the balance (201); repeated with the same ``request_id`` if unanswered."""
        await self.transport.call(DEPOSIT, transfer.to_json(), **_balance_ids(user_id, balance_id))

    async def withdraw(self, user_id: int, balance_id: int, transfer: MoneyTransfer) -> None:
        """Reduce the balance (201). Raises :class:`InsufficientFunds` on 402."""
        await self.transport.call(WITHDRAW, transfer.to_json(), **_balance_ids(user_id, balance_id))
