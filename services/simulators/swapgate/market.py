"""The simulated market: instruments, prices, quotes and order settlement (pure, no I/O).

Every instrument has a USD price; the rate between two is the ratio of their prices, cut to
:data:`RATE_PLACES` decimals. The markup math is ``swapgate.markup``'s, shared with the client:

* quote: ``estimated = market * (1 - spread/100) * (1 - C/100)``, then
  ``final_amount(estimated, K)``, minus the payout network fee, rounded toward zero to the
  target's precision;
* settlement: ``exchange = received * rate * (1 - spread/100)``,
  ``payout = withdrawal_amount(exchange, C, K) - fee`` rounded toward zero (the remainder is
  reported), ``platform margin = exchange * C/100`` and
  ``affiliate margin = affiliate_margin(platform margin, affiliate %, K)``.
"""

from __future__ import annotations

import decimal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

import orjson

from swapgate.markup import (
    HUNDRED,
    PAYOUT_ROUNDING,
    ZERO,
    RoundingDirection,
    affiliate_margin,
    final_amount,
    round_to_exponent,
    withdrawal_amount,
)
from swapgate.wire import RateMode, decimal_text, parse_decimal

# Market figures (rates, market amounts) are cut to this many places so every later formula
# stays exact within swapgate.markup's 50 significant digits.
RATE_PLACES = 18

# Products and sums must be exact (an error, not a silent rounding, if they are not); only
# divisions round, and they are cut to RATE_PLACES right away.
_EXACT = decimal.Context(
    prec=50,
    traps=[decimal.InvalidOperation, decimal.DivisionByZero, decimal.Overflow, decimal.Inexact],
)
_DIVISION = decimal.Context(
    prec=50, traps=[decimal.InvalidOperation, decimal.DivisionByZero, decimal.Overflow]
)


@dataclass(frozen=True, slots=True)
class MarketInstrument:
    """A currency on a network as the simulator trades it."""

    currency: str
    network: str
    precision_decimals: int
    usd_price: Decimal
    min_deposit: Decimal
    max_deposit: Decimal  # 0: no maximum, as Swapgate writes it
    withdrawal_fee: Decimal
    min_withdrawal: Decimal

    def wire(self) -> dict[str, object]:
        """The ``instrumentFrom``/``instrumentTo`` object of a quote."""
        return {
            "currencyTitle": self.currency,
            "networkTitle": self.network,
            "precisionDecimals": self.precision_decimals,
        }


DEFAULT_INSTRUMENTS: tuple[MarketInstrument, ...] = (
    # This BTC price makes a 1 BTC -> USDT quote's marketAmountToGet the document's example.
    MarketInstrument(
        currency="BTC",
        network="BTC",
        precision_decimals=8,
        usd_price=Decimal("50243.798064469251204"),
        min_deposit=Decimal("0.001"),
        max_deposit=ZERO,
        withdrawal_fee=Decimal("0.00002"),
        min_withdrawal=Decimal("0.0001"),
    ),
    MarketInstrument(
        currency="USDT",
        network="TRC20",
        precision_decimals=6,
        usd_price=Decimal(1),
        min_deposit=Decimal(10),
        max_deposit=Decimal(1000000),
        withdrawal_fee=Decimal(1),
        min_withdrawal=Decimal(5),
    ),
    MarketInstrument(
        currency="ETH",
        network="ETH",
        precision_decimals=18,
        usd_price=Decimal(2500),
        min_deposit=Decimal("0.01"),
        max_deposit=ZERO,
        withdrawal_fee=Decimal("0.001"),
        min_withdrawal=Decimal("0.005"),
    ),
)


def iso(moment: datetime) -> str:
    """``2024-08-05T13:54:18.427Z``, the timestamp format Swapgate uses."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _cut(amount: Decimal, places: int = RATE_PLACES) -> Decimal:
    """``amount`` cut toward zero to ``places`` decimals, without trailing zeros."""
    cut = round_to_exponent(amount, places, RoundingDirection.TOWARD_ZERO).amount
    return cut.normalize(_DIVISION)


def _divide(numerator: Decimal, denominator: Decimal) -> Decimal:
    with decimal.localcontext(_DIVISION):
        return _cut(numerator / denominator)


def _positive_part(amount: Decimal) -> Decimal:
    return amount if amount > ZERO else ZERO


class MarketError(ValueError):
    """A request the market cannot serve; ``code`` is the simulator's error code."""

    def __init__(self, code: str, message: str):
        self.code = code
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class Estimate:
    """A quote's key figures: market rate and amount, expected payout with and without fee."""

    rate: Decimal
    market_amount: Decimal
    amount_to_get: Decimal
    amount_to_get_without_fee: Decimal


@dataclass(frozen=True, slots=True)
class Settlement:
    """The amounts of a completed order (target currency except ``amount_received``)."""

    amount_received: Decimal
    exchange_amount: Decimal
    amount_paid_out: Decimal
    payout_rounding_remainder: Decimal
    network_fee: Decimal
    platform_margin: Decimal
    affiliate_margin: Decimal


class Market:
    """Instruments and prices, with the spread and commissions applied to them."""

    def __init__(
        self,
        instruments: Sequence[MarketInstrument],
        *,
        spread_pct: Decimal,
        platform_pct: Decimal,
        affiliate_pct: Decimal,
    ):
        self._instruments = {(i.currency, i.network): i for i in instruments}
        self.spread_pct = spread_pct
        self.platform_pct = platform_pct
        self.affiliate_pct = affiliate_pct

    def instrument(self, currency: str, network: str) -> MarketInstrument:
        """The instrument, or :class:`MarketError` ``unknown_instrument``."""
        found = self._instruments.get((currency, network))
        if found is None:
            raise MarketError("unknown_instrument", f"unknown instrument {currency}/{network}")
        return found

    def rate(self, source: MarketInstrument, target: MarketInstrument) -> Decimal:
        """Units of ``target`` per unit of ``source`` at market, cut to :data:`RATE_PLACES`."""
        if source == target:
            raise MarketError("same_instrument", "cannot exchange an instrument for itself")
        return _divide(source.usd_price, target.usd_price)

    def _after_spread(self, amount: Decimal) -> Decimal:
        with decimal.localcontext(_EXACT):
            return _cut(amount * (1 - self.spread_pct / HUNDRED))

    def estimate(
        self, source: MarketInstrument, target: MarketInstrument, claimed: Decimal, markup: Decimal
    ) -> Estimate:
        """What ``claimed`` units of ``source`` are expected to pay out in ``target``."""
        with decimal.localcontext(_EXACT):
            rate = self.rate(source, target)
            market = _cut(claimed * rate)
            estimated = withdrawal_amount(self._after_spread(market), self.platform_pct, ZERO)
            after_markup = final_amount(_cut(estimated), markup)
            without_fee = round_to_exponent(
                after_markup, target.precision_decimals, PAYOUT_ROUNDING
            ).amount
            with_fee = round_to_exponent(
                _positive_part(after_markup - target.withdrawal_fee),
                target.precision_decimals,
                PAYOUT_ROUNDING,
            ).amount
        return Estimate(rate, market, with_fee, without_fee)

    def quote(
        self,
        source: MarketInstrument,
        target: MarketInstrument,
        claimed: Decimal,
        markup: Decimal,
        rate_mode: RateMode,
        now: datetime,
    ) -> dict[str, object]:
        """The rates response for ``claimed`` units of ``source``, in Swapgate's shape."""
        with decimal.localcontext(_EXACT):
            return self._quote(source, target, claimed, markup, rate_mode, now)

    def _quote(
        self,
        source: MarketInstrument,
        target: MarketInstrument,
        claimed: Decimal,
        markup: Decimal,
        rate_mode: RateMode,
        now: datetime,
    ) -> dict[str, object]:
        est = self.estimate(source, target, claimed, markup)
        rate, market, to_get = est.rate, est.market_amount, est.amount_to_get
        fee = target.withdrawal_fee
        inverse = _divide(Decimal(1), rate)
        price = _divide(to_get, claimed)
        price_no_fee = _divide(est.amount_to_get_without_fee, claimed)
        usd = _cut(market * target.usd_price)
        return {
            "instrumentFrom": source.wire(),
            "instrumentTo": target.wire(),
            "depositRules": {
                "minAmount": decimal_text(source.min_deposit),
                "maxAmount": decimal_text(source.max_deposit),
            },
            "withdrawalRules": {
                "minAmount": decimal_text(target.min_withdrawal),
                "maxAmount": "0",
                "withdrawalFeeRules": {
                    "maxAmount": decimal_text(fee),
                    "minAmount": decimal_text(fee),
                },
            },
            "minConfirmationsToWithdraw": 2,
            "minConfirmationsToTrade": 2,
            "updatedAt": iso(now),
            "liquidityProviderPublicCode": "simulator",
            "amountToGet": decimal_text(to_get),
            "amountToGive": decimal_text(claimed),
            "marketMinAmount": decimal_text(source.min_deposit),
            "enableFixedRate": True,
            "amountToGiveCurrencyTitle": source.currency,
            "rateMode": rate_mode.value,
            "finalNetworkFeeAmount": decimal_text(fee),
            "platformFee_Absolute": None,
            "liquidityProviderQuotes": {
                "sellQuote": {"baseValue": "1", "quoteValue": decimal_text(rate)},
                "buyQuote": {"baseValue": decimal_text(rate), "quoteValue": "1"},
            },
            "price": decimal_text(price),
            "marketLeftPrice": decimal_text(rate),
            "marketRightPrice": decimal_text(inverse),
            "marketAmountToGet": decimal_text(market),
            "marketAmountToGetUSDT": decimal_text(usd),
            "quotesWithoutNetworkFee": {
                "sellQuote": {"baseValue": "1", "quoteValue": decimal_text(price_no_fee)},
                "buyQuote": {"baseValue": decimal_text(price_no_fee), "quoteValue": "1"},
            },
            "quotes": {
                "sellQuote": {"baseValue": "1", "quoteValue": decimal_text(price)},
                "buyQuote": {"baseValue": decimal_text(price), "quoteValue": "1"},
            },
            "markup": decimal_text(markup),
        }

    def check_deposit(self, source: MarketInstrument, claimed: Decimal) -> None:
        """Refuse a claimed deposit outside the source's deposit rules."""
        too_big = source.max_deposit != ZERO and claimed > source.max_deposit
        if claimed < source.min_deposit or too_big:
            raise MarketError(
                "amount_out_of_range",
                f"claimedDepositAmount {claimed} is outside [{source.min_deposit}, "
                f"{source.max_deposit if source.max_deposit != ZERO else 'unlimited'}]",
            )

    def settle(
        self, source: MarketInstrument, target: MarketInstrument, received: Decimal, markup: Decimal
    ) -> Settlement:
        """The amounts of an order that received ``received`` units of ``source``."""
        with decimal.localcontext(_EXACT):
            return self._settle(source, target, received, markup)

    def _settle(
        self, source: MarketInstrument, target: MarketInstrument, received: Decimal, markup: Decimal
    ) -> Settlement:
        rate = self.rate(source, target)
        market = _cut(received * rate)
        exchange = self._after_spread(market)
        fee = target.withdrawal_fee
        payout_exact = _positive_part(withdrawal_amount(exchange, self.platform_pct, markup) - fee)
        payout = round_to_exponent(payout_exact, target.precision_decimals, PAYOUT_ROUNDING)
        platform_margin = exchange * self.platform_pct / HUNDRED
        return Settlement(
            amount_received=received,
            exchange_amount=exchange,
            amount_paid_out=payout.amount,
            payout_rounding_remainder=payout.remainder,
            network_fee=fee,
            platform_margin=platform_margin,
            affiliate_margin=affiliate_margin(platform_margin, self.affiliate_pct, markup),
        )


def load_instruments(path: str) -> tuple[MarketInstrument, ...]:
    """Instruments from a JSON file: ``{"instruments": [{"currency", "network",
    "precisionDecimals", "usdPrice", "minDeposit", "maxDeposit", "withdrawalFee",
    "minWithdrawal"}]}`` with every amount a decimal string."""
    with open(path, "rb") as fh:
        document = orjson.loads(fh.read())
    if not isinstance(document, Mapping) or not isinstance(document.get("instruments"), list):
        raise ValueError(f"{path}: expected an object with an 'instruments' list")
    instruments = []
    for entry in document["instruments"]:
        if not isinstance(entry, Mapping):
            raise ValueError(f"{path}: every instrument must be an object")
        precision = entry.get("precisionDecimals")
        if not isinstance(precision, int) or isinstance(precision, bool):
            raise ValueError(f"{path}: precisionDecimals must be an integer")
        instruments.append(
            MarketInstrument(
                currency=str(entry["currency"]),
                network=str(entry["network"]),
                precision_decimals=precision,
                usd_price=parse_decimal(entry["usdPrice"]),
                min_deposit=parse_decimal(entry.get("minDeposit", "0")),
                max_deposit=parse_decimal(entry.get("maxDeposit", "0")),
                withdrawal_fee=parse_decimal(entry.get("withdrawalFee", "0")),
                min_withdrawal=parse_decimal(entry.get("minWithdrawal", "0")),
            )
        )
    return tuple(instruments)
