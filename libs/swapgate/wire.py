"""The JSON shapes Swapgate sends and accepts, as typed frozen dataclasses.

Amounts cross the wire as decimal strings in both directions: parsing never goes through a
float, and :func:`decimal_text` writes a ``Decimal`` in plain notation (``"0.3"``, never
``"3E-1"``). Parsers raise :class:`~swapgate.errors.MalformedResponse` naming the field.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from swapgate.errors import (
    AmountAboveMaximum,
    AmountBelowMinimum,
    InvalidAmount,
    InvalidRequest,
    MalformedResponse,
)
from swapgate.markup import ZERO
from swapgate.signing import JsonValue

# Plain decimal notation only: no exponent, no NaN/Infinity, no sign on amounts we send.
_DECIMAL_TEXT = re.compile(r"-?[0-9]+(\.[0-9]+)?")


class RateMode(StrEnum):
    """Swapgate's rate modes: a floating rate, or one fixed at order creation."""

    FLOATING = "FLOATING"
    FIXED = "FIXED"


def decimal_text(amount: Decimal) -> str:
    """``amount`` as the decimal string Swapgate expects (plain notation, never a float)."""
    if not isinstance(amount, Decimal) or not amount.is_finite():
        raise InvalidAmount(f"amount must be a finite Decimal, got {amount!r}")
    return format(amount, "f")


def parse_decimal(text: object) -> Decimal:
    """A plain decimal string (``"0.3"``, ``"-1"``) as a ``Decimal``; anything else (floats,
    exponents, NaN, Infinity) raises :class:`~swapgate.errors.InvalidAmount`."""
    if not isinstance(text, str) or not _DECIMAL_TEXT.fullmatch(text):
        raise InvalidAmount(f"expected a plain decimal string, got {text!r}")
    return Decimal(text)


class _Fields:
    """Typed reads from one JSON object, with the field's path in every error."""

    def __init__(self, raw: object, path: str):
        if not isinstance(raw, Mapping):
            raise MalformedResponse(f"{path}: expected an object, got {type(raw).__name__}")
        self.raw: Mapping[str, object] = raw
        self.path = path

    def _get(self, name: str) -> object:
        if name not in self.raw:
            raise MalformedResponse(f"{self.path}.{name}: missing")
        return self.raw[name]

    def obj(self, name: str) -> _Fields:
        return _Fields(self._get(name), f"{self.path}.{name}")

    def text(self, name: str) -> str:
        value = self._get(name)
        if not isinstance(value, str):
            raise MalformedResponse(f"{self.path}.{name}: expected a string, got {value!r}")
        return value

    def opt_text(self, name: str) -> str | None:
        return None if self.raw.get(name) is None else self.text(name)

    def decimal(self, name: str) -> Decimal:
        value = self._get(name)
        # An integer is exact; a float has already lost digits, so it is refused.
        if isinstance(value, int) and not isinstance(value, bool):
            return Decimal(value)
        try:
            return parse_decimal(value)
        except InvalidAmount as exc:
            raise MalformedResponse(f"{self.path}.{name}: {exc}") from exc

    def opt_decimal(self, name: str) -> Decimal | None:
        return None if self.raw.get(name) is None else self.decimal(name)

    def integer(self, name: str) -> int:
        value = self._get(name)
        if isinstance(value, bool) or not isinstance(value, int):
            raise MalformedResponse(f"{self.path}.{name}: expected an integer, got {value!r}")
        return value

    def boolean(self, name: str) -> bool:
        value = self._get(name)
        if not isinstance(value, bool):
            raise MalformedResponse(f"{self.path}.{name}: expected a boolean, got {value!r}")
        return value

    def timestamp(self, name: str) -> datetime:
        text = self.text(name)
        try:
            return datetime.fromisoformat(text)
        except ValueError as exc:
            raise MalformedResponse(f"{self.path}.{name}: not an ISO timestamp: {text!r}") from exc

    def opt_timestamp(self, name: str) -> datetime | None:
        return None if self.raw.get(name) is None else self.timestamp(name)

    def strings(self, name: str) -> tuple[str, ...]:
        value = self._get(name)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise MalformedResponse(f"{self.path}.{name}: expected a list of strings")
        return tuple(value)


def _limit(amount: Decimal) -> Decimal | None:
    # Swapgate writes "0" for "no maximum".
    return None if amount == ZERO else amount


@dataclass(frozen=True, slots=True)
class Instrument:
    """A currency on a network, e.g. USDT on TRC20."""

    currency: str
    network: str

    def to_wire(self) -> dict[str, JsonValue]:
        """The ``{currencyTitle, networkTitle}`` object of an order body."""
        return {"currencyTitle": self.currency, "networkTitle": self.network}


@dataclass(frozen=True, slots=True)
class QuotedInstrument:
    """An instrument as a quote describes it, with its display precision."""

    currency: str
    network: str
    precision_decimals: int

    @property
    def instrument(self) -> Instrument:
        """The bare instrument (currency and network)."""
        return Instrument(self.currency, self.network)

    @classmethod
    def from_wire(cls, f: _Fields) -> QuotedInstrument:
        """Parse an ``instrumentFrom``/``instrumentTo`` object."""
        return cls(f.text("currencyTitle"), f.text("networkTitle"), f.integer("precisionDecimals"))


@dataclass(frozen=True, slots=True)
class DepositRules:
    """Accepted deposit range; ``max_amount`` is None when Swapgate sets no maximum ("0")."""

    min_amount: Decimal
    max_amount: Decimal | None

    @classmethod
    def from_wire(cls, f: _Fields) -> DepositRules:
        """Parse ``depositRules``."""
        return cls(f.decimal("minAmount"), _limit(f.decimal("maxAmount")))


@dataclass(frozen=True, slots=True)
class WithdrawalRules:
    """Accepted payout range and the network fee bounds of the payout."""

    min_amount: Decimal
    max_amount: Decimal | None
    fee_min_amount: Decimal
    fee_max_amount: Decimal

    @classmethod
    def from_wire(cls, f: _Fields) -> WithdrawalRules:
        """Parse ``withdrawalRules`` (with its ``withdrawalFeeRules``)."""
        fee = f.obj("withdrawalFeeRules")
        return cls(
            f.decimal("minAmount"),
            _limit(f.decimal("maxAmount")),
            fee.decimal("minAmount"),
            fee.decimal("maxAmount"),
        )


@dataclass(frozen=True, slots=True)
class QuoteSide:
    """One side of a quote: ``base_value`` of one currency for ``quote_value`` of the other."""

    base_value: Decimal
    quote_value: Decimal

    @classmethod
    def from_wire(cls, f: _Fields) -> QuoteSide:
        """Parse ``{baseValue, quoteValue}``."""
        return cls(f.decimal("baseValue"), f.decimal("quoteValue"))


@dataclass(frozen=True, slots=True)
class QuotePair:
    """A sell and a buy quote."""

    sell: QuoteSide
    buy: QuoteSide

    @classmethod
    def from_wire(cls, f: _Fields) -> QuotePair:
        """Parse ``{sellQuote, buyQuote}``."""
        return cls(QuoteSide.from_wire(f.obj("sellQuote")), QuoteSide.from_wire(f.obj("buyQuote")))


@dataclass(frozen=True, slots=True)
class Quote:
    """A rate quote from ``GET /api/v1/rates/public/one``; every number is a ``Decimal``."""

    instrument_from: QuotedInstrument
    instrument_to: QuotedInstrument
    deposit_rules: DepositRules
    withdrawal_rules: WithdrawalRules
    min_confirmations_to_withdraw: int
    min_confirmations_to_trade: int
    updated_at: datetime
    liquidity_provider_code: str | None
    rate_mode: RateMode
    amount_to_give: Decimal
    amount_to_give_currency: str
    amount_to_get: Decimal
    price: Decimal
    markup: Decimal
    market_min_amount: Decimal | None
    enable_fixed_rate: bool
    final_network_fee: Decimal
    platform_fee_absolute: Decimal | None
    market_left_price: Decimal
    market_right_price: Decimal
    market_amount_to_get: Decimal
    market_amount_to_get_usdt: Decimal | None
    liquidity_provider_quotes: QuotePair
    quotes: QuotePair
    quotes_without_network_fee: QuotePair

    @classmethod
    def from_wire(cls, raw: object) -> Quote:
        """Parse a rates response (the shape of Swapgate's documented example)."""
        f = _Fields(raw, "quote")
        rate_mode = f.text("rateMode")
        try:
            mode = RateMode(rate_mode)
        except ValueError as exc:
            raise MalformedResponse(f"quote.rateMode: unknown {rate_mode!r}") from exc
        return cls(
            instrument_from=QuotedInstrument.from_wire(f.obj("instrumentFrom")),
            instrument_to=QuotedInstrument.from_wire(f.obj("instrumentTo")),
            deposit_rules=DepositRules.from_wire(f.obj("depositRules")),
            withdrawal_rules=WithdrawalRules.from_wire(f.obj("withdrawalRules")),
            min_confirmations_to_withdraw=f.integer("minConfirmationsToWithdraw"),
            min_confirmations_to_trade=f.integer("minConfirmationsToTrade"),
            updated_at=f.timestamp("updatedAt"),
            liquidity_provider_code=f.opt_text("liquidityProviderPublicCode"),
            rate_mode=mode,
            amount_to_give=f.decimal("amountToGive"),
            amount_to_give_currency=f.text("amountToGiveCurrencyTitle"),
            amount_to_get=f.decimal("amountToGet"),
            price=f.decimal("price"),
            markup=f.decimal("markup"),
            market_min_amount=f.opt_decimal("marketMinAmount"),
            enable_fixed_rate=f.boolean("enableFixedRate"),
            final_network_fee=f.decimal("finalNetworkFeeAmount"),
            platform_fee_absolute=f.opt_decimal("platformFee_Absolute"),
            market_left_price=f.decimal("marketLeftPrice"),
            market_right_price=f.decimal("marketRightPrice"),
            market_amount_to_get=f.decimal("marketAmountToGet"),
            market_amount_to_get_usdt=f.opt_decimal("marketAmountToGetUSDT"),
            liquidity_provider_quotes=QuotePair.from_wire(f.obj("liquidityProviderQuotes")),
            quotes=QuotePair.from_wire(f.obj("quotes")),
            quotes_without_network_fee=QuotePair.from_wire(f.obj("quotesWithoutNetworkFee")),
        )

    def check_deposit(self, claimed: Decimal) -> None:
        """Refuse ``claimed`` if it is outside this quote's deposit rules.

        Raises :class:`AmountBelowMinimum` or :class:`AmountAboveMaximum` (the quote attached).
        """
        rules = self.deposit_rules
        if claimed < rules.min_amount:
            raise AmountBelowMinimum(claimed, rules.min_amount, rules.max_amount, self)
        if rules.max_amount is not None and claimed > rules.max_amount:
            raise AmountAboveMaximum(claimed, rules.min_amount, rules.max_amount, self)


@dataclass(frozen=True, slots=True)
class CreateOrderRequest:
    """The body of ``POST /api/v2/orders/public/create``, every documented field.

    Amounts are Decimals here and decimal strings on the wire; ``None`` is sent as ``null``.
    """

    rate_mode: RateMode
    instrument_from: Instrument
    instrument_to: Instrument
    destination_address: str
    claimed_deposit_amount: Decimal
    markup: Decimal
    destination_address_memo: str | None = None
    refund_address: str | None = None
    refund_address_memo: str | None = None
    claimed_network_fee: Decimal | None = None
    legacy_order_id: str | None = None
    referrer_id: str | None = None
    utm_data: tuple[Mapping[str, str], ...] = ()
    browser_fingerprint: str | None = None

    def __post_init__(self) -> None:
        if not self.destination_address:
            raise InvalidRequest("destination_address must not be empty")
        decimal_text(self.claimed_deposit_amount)
        if self.claimed_deposit_amount <= ZERO:
            raise InvalidAmount(
                f"claimed deposit must be positive, got {self.claimed_deposit_amount}"
            )
        if self.claimed_network_fee is not None:
            decimal_text(self.claimed_network_fee)

    def to_wire(self) -> dict[str, JsonValue]:
        """The JSON object, keys in the order of Swapgate's reference code."""
        fee = self.claimed_network_fee
        return {
            "rateMode": self.rate_mode.value,
            "instrumentFrom": self.instrument_from.to_wire(),
            "instrumentTo": self.instrument_to.to_wire(),
            "destinationAddress": self.destination_address,
            "destinationAddressMemo": self.destination_address_memo,
            "refundAddress": self.refund_address,
            "refundAddressMemo": self.refund_address_memo,
            "markup": decimal_text(self.markup),
            "claimedNetworkFee": None if fee is None else decimal_text(fee),
            "legacyOrderId": self.legacy_order_id,
            "referrerId": self.referrer_id,
            "claimedDepositAmount": decimal_text(self.claimed_deposit_amount),
            "utmData": [dict(entry) for entry in self.utm_data],
            "browserFingerprint": self.browser_fingerprint,
        }


@dataclass(frozen=True, slots=True)
class OrderView:
    """An order as Swapgate (or our simulator) reports it on creation and on status reads.

    Swapgate documents neither shape; only ``id`` and ``status`` are required, the amounts are
    filled in as the order progresses (see ``docs/exchange-swapgate.md``). ``raw`` keeps the
    whole object for fields this type does not name.
    """

    order_id: str
    status: str
    markup: Decimal | None
    claimed_deposit_amount: Decimal | None
    amount_to_get: Decimal | None
    deposit_address: str | None
    deposit_address_memo: str | None
    amount_received: Decimal | None
    exchange_amount: Decimal | None
    amount_paid_out: Decimal | None
    payout_rounding_remainder: Decimal | None
    platform_margin: Decimal | None
    affiliate_margin: Decimal | None
    amount_refunded: Decimal | None
    failure_reason: str | None
    created_at: datetime | None
    updated_at: datetime | None
    raw: Mapping[str, object] = field(repr=False, compare=False)

    @classmethod
    def from_wire(cls, raw: object) -> OrderView:
        """Parse an order object."""
        f = _Fields(raw, "order")
        return cls(
            order_id=f.text("id"),
            status=f.text("status"),
            markup=f.opt_decimal("markup"),
            claimed_deposit_amount=f.opt_decimal("claimedDepositAmount"),
            amount_to_get=f.opt_decimal("amountToGet"),
            deposit_address=f.opt_text("depositAddress"),
            deposit_address_memo=f.opt_text("depositAddressMemo"),
            amount_received=f.opt_decimal("amountReceived"),
            exchange_amount=f.opt_decimal("exchangeAmount"),
            amount_paid_out=f.opt_decimal("amountPaidOut"),
            payout_rounding_remainder=f.opt_decimal("payoutRoundingRemainder"),
            platform_margin=f.opt_decimal("platformMargin"),
            affiliate_margin=f.opt_decimal("affiliateMargin"),
            amount_refunded=f.opt_decimal("amountRefunded"),
            failure_reason=f.opt_text("failureReason"),
            created_at=f.opt_timestamp("createdAt"),
            updated_at=f.opt_timestamp("updatedAt"),
            raw=f.raw,
        )


@dataclass(frozen=True, slots=True)
class ApiCredentials:
    """An API key pair; the secret never appears in a repr or a log line."""

    public_key: str
    secret_key: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class ApiKey:
    """An API key as listed (never with its secret)."""

    api_id: int
    name: str
    is_active: bool
    public_key: str
    white_list_ip: tuple[str, ...]
    created_at: datetime
    settings: Mapping[str, object] = field(compare=False)

    @classmethod
    def from_wire(cls, raw: object) -> ApiKey:
        """Parse one key of ``list-api-key`` (or the key part of ``generate-api-key``)."""
        f = _Fields(raw, "apiKey")
        settings = f.raw.get("settings") or {}
        if not isinstance(settings, Mapping):
            raise MalformedResponse("apiKey.settings: expected an object")
        return cls(
            api_id=f.integer("apiId"),
            name=f.text("name"),
            is_active=f.boolean("isActive"),
            public_key=f.text("publicKey"),
            white_list_ip=f.strings("whiteListIp"),
            created_at=f.timestamp("createdAt"),
            settings=dict(settings),
        )


@dataclass(frozen=True, slots=True)
class GeneratedApiKey:
    """A freshly generated key: the only time Swapgate shows its secret."""

    key: ApiKey
    credentials: ApiCredentials

    @classmethod
    def from_wire(cls, raw: object) -> GeneratedApiKey:
        """Parse the ``generate-api-key`` response."""
        key = ApiKey.from_wire(raw)
        secret = _Fields(raw, "apiKey").text("secretKey")
        return cls(key, ApiCredentials(key.public_key, secret))
