"""Outbound integration with Quadcode's B2B gateway.

* :mod:`~quadcode_gateway.tokens`: our ES256 JWTs and key pairs.
* :mod:`~quadcode_gateway.client`: the external-balance API (customers, login URLs, sessions).
* :mod:`~quadcode_gateway.internal`: the internal-balance API (users, balances, money movements).
* :mod:`~quadcode_gateway.trading_room`: the "open the trading room" flow for our website.
* :mod:`~quadcode_gateway.errors`: every status as an exception, and what the client does with it.

See docs/quadcode-integration.md.
"""

from quadcode_gateway.client import QuadcodeGatewayClient
from quadcode_gateway.errors import (
    AccessRestricted,
    BadRequest,
    BalanceCurrencyMismatch,
    Conflict,
    CountryRestricted,
    CurrencyRestricted,
    CustomerAlreadyExists,
    CustomerBlocked,
    CustomerNotFound,
    FieldError,
    Forbidden,
    GatewayUnavailable,
    InsufficientFunds,
    InvalidRequest,
    NotFound,
    QuadcodeError,
    RateLimited,
    ServerError,
    Unauthorized,
    UnexpectedResponse,
    UnprocessableEntity,
    UserAlreadyExists,
    UserNotFound,
)
from quadcode_gateway.internal import InternalBalanceClient, MoneyTransfer, NewUser
from quadcode_gateway.models import (
    AllowedCountry,
    BalanceType,
    CustomerSession,
    LoginUrl,
    NewCustomer,
    SessionRequest,
    TradingBalance,
    Visit,
)
from quadcode_gateway.tokens import Environment, TokenSigner, generate_keypair
from quadcode_gateway.trading_room import TradingRoomOutcome, TradingRoomStatus, open_trading_room
from quadcode_gateway.transport import RetryPolicy

__all__ = [
    "AccessRestricted",
    "AllowedCountry",
    "BadRequest",
    "BalanceCurrencyMismatch",
    "BalanceType",
    "Conflict",
    "CountryRestricted",
    "CurrencyRestricted",
    "CustomerAlreadyExists",
    "CustomerBlocked",
    "CustomerNotFound",
    "CustomerSession",
    "Environment",
    "FieldError",
    "Forbidden",
    "GatewayUnavailable",
    "InsufficientFunds",
    "InternalBalanceClient",
    "InvalidRequest",
    "LoginUrl",
    "MoneyTransfer",
    "NewCustomer",
    "NewUser",
    "NotFound",
    "QuadcodeError",
    "QuadcodeGatewayClient",
    "RateLimited",
    "RetryPolicy",
    "ServerError",
    "SessionRequest",
    "TokenSigner",
    "TradingBalance",
    "TradingRoomOutcome",
    "TradingRoomStatus",
    "Unauthorized",
    "UnexpectedResponse",
    "UnprocessableEntity",
    "UserAlreadyExists",
    "UserNotFound",
    "Visit",
    "generate_keypair",
    "open_trading_room",
]
