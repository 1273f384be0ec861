"""Swapgate's markup formulas and the one place where an amount is rounded.

Everything here is pure ``Decimal`` arithmetic in a local context of 50 significant digits with
``Inexact`` trapped: a formula either gives the exact decimal result or raises
:class:`~swapgate.errors.InexactArithmetic`; it never rounds silently. Rounding happens only in
:func:`round_to_exponent`, once, to a currency's exponent, and returns the remainder so that
nothing is lost (the ledger books it to a rounding account).

Formulas (see ``docs/exchange-swapgate.md``):

* ``A_final = A_estimated * (1 - K/100)``  (quote)
* ``Withdrawal = Exchange * (1 - (C + K)/100)``  (order payout)
* ``C_affiliate = C_platform * (C_aff/100) + C_platform * (K/100)``  (partner margin)
"""

from __future__ import annotations

import decimal
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from enum import Enum

from swapgate.errors import InexactArithmetic, InvalidAmount, InvalidMarkup, MarkupOutOfBounds

PRECISION = 50
HUNDRED = Decimal(100)
ZERO = Decimal(0)
# Largest exponent accepted by round_to_exponent: ETH-like currencies use 18; leave headroom.
MAX_EXPONENT = 30

_TRAPS = [decimal.InvalidOperation, decimal.DivisionByZero, decimal.Overflow]
# Formulas: exact or an error, never a silent rounding.
_EXACT = decimal.Context(
    prec=PRECISION, rounding=decimal.ROUND_HALF_EVEN, traps=[*_TRAPS, decimal.Inexact]
)
# Quantizing is meant to round, so Inexact is a flag there, not a trap.
_ROUNDING = decimal.Context(prec=PRECISION, rounding=decimal.ROUND_HALF_EVEN, traps=_TRAPS)


def _amount(value: object, name: str) -> Decimal:
    """``value`` as a finite, non-negative Decimal, or :class:`InvalidAmount`."""
    if not isinstance(value, Decimal):
        raise InvalidAmount(f"{name} must be a Decimal, got {type(value).__name__}")
    if not value.is_finite():
        raise InvalidAmount(f"{name} must be finite, got {value}")
    if value < ZERO:
        raise InvalidAmount(f"{name} must not be negative, got {value}")
    return value


def _percent(value: object, name: str, *, upper_inclusive: bool = False) -> Decimal:
    """``value`` as a percentage in [0, 100) (or [0, 100]), or :class:`InvalidMarkup`."""
    if not isinstance(value, Decimal) or not value.is_finite():
        raise InvalidMarkup(f"{name} must be a finite Decimal, got {value!r}")
    too_big = value > HUNDRED if upper_inclusive else value >= HUNDRED
    if value < ZERO or too_big:
        bound = "100]" if upper_inclusive else "100)"
        raise InvalidMarkup(f"{name} must be in [0, {bound}, got {value}")
    return value


def final_amount(estimated: Decimal, markup_pct: Decimal) -> Decimal:
    """The quoted amount after the partner's markup: ``estimated * (1 - markup_pct/100)``.

    ``estimated`` is Swapgate's predicted amount (>= 0); ``markup_pct`` is K in [0, 100).
    Exact: ``final_amount(Decimal("49549.728053855135"), Decimal("0.3"))`` is
    ``Decimal("49401.078869693569595")``.
    """
    estimated = _amount(estimated, "estimated")
    k = _percent(markup_pct, "markup_pct")
    try:
        with decimal.localcontext(_EXACT):
            return estimated * (1 - k / HUNDRED)
    except decimal.Inexact as exc:
        raise InexactArithmetic(f"final_amount({estimated}, {k}) exceeds precision") from exc


def withdrawal_amount(exchange: Decimal, platform_pct: Decimal, markup_pct: Decimal) -> Decimal:
    """What the customer receives: ``exchange * (1 - (platform_pct + markup_pct)/100)``.

    ``exchange`` is what Swapgate obtained after trading (>= 0); ``platform_pct`` is Swapgate's
    commission C and ``markup_pct`` the partner's markup K, both percentages with C + K < 100.
    """
    exchange = _amount(exchange, "exchange")
    c = _percent(platform_pct, "platform_pct")
    k = _percent(markup_pct, "markup_pct")
    try:
        with decimal.localcontext(_EXACT):
            if c + k >= HUNDRED:
                raise InvalidMarkup(f"platform_pct + markup_pct must be below 100, got {c + k}")
            return exchange * (1 - (c + k) / HUNDRED)
    except decimal.Inexact as exc:
        raise InexactArithmetic(
            f"withdrawal_amount({exchange}, {c}, {k}) exceeds precision"
        ) from exc


def affiliate_margin(
    platform_margin: Decimal, affiliate_pct: Decimal, markup_pct: Decimal
) -> Decimal:
    """The partner's margin on a completed order.

    ``platform_margin * (affiliate_pct/100) + platform_margin * (markup_pct/100)``, where
    ``platform_margin`` is what Swapgate earned on the order in currency units (>= 0),
    ``affiliate_pct`` the partner's commission in [0, 100] and ``markup_pct`` K in [0, 100).
    """
    margin = _amount(platform_margin, "platform_margin")
    aff = _percent(affiliate_pct, "affiliate_pct", upper_inclusive=True)
    k = _percent(markup_pct, "markup_pct")
    try:
        with decimal.localcontext(_EXACT):
            return margin * (aff / HUNDRED) + margin * (k / HUNDRED)
    except decimal.Inexact as exc:
        raise InexactArithmetic(
            f"affiliate_margin({margin}, {aff}, {k}) exceeds precision"
        ) from exc


class RoundingDirection(Enum):
    """How :func:`round_to_exponent` rounds; the value is the ``decimal`` rounding mode."""

    TOWARD_ZERO = decimal.ROUND_DOWN
    AWAY_FROM_ZERO = decimal.ROUND_UP
    HALF_EVEN = decimal.ROUND_HALF_EVEN


# Customer payouts never exceed the exact amount: the fraction below the currency's smallest
# unit stays with us and is booked to the rounding account.
PAYOUT_ROUNDING = RoundingDirection.TOWARD_ZERO


@dataclass(frozen=True, slots=True)
class RoundedAmount:
    """An amount rounded to a currency's exponent; ``amount + remainder`` is the exact value."""

    amount: Decimal
    remainder: Decimal

    @property
    def exact(self) -> Decimal:
        """The value before rounding (``amount + remainder``, computed exactly)."""
        with decimal.localcontext(_EXACT):
            return self.amount + self.remainder


def round_to_exponent(
    amount: Decimal, exponent: int, direction: RoundingDirection
) -> RoundedAmount:
    """Round ``amount`` once to ``exponent`` decimal places in ``direction``.

    ``exponent`` is the currency's number of decimal places (8 for BTC, 6 for USDT). Use
    :data:`PAYOUT_ROUNDING` (toward zero) for what a customer is paid. The returned remainder
    (``exact - rounded``, same sign as ``amount`` when rounding toward zero) must be booked,
    e.g. to a rounding account, so the books still balance.
    """
    if not isinstance(amount, Decimal) or not amount.is_finite():
        raise InvalidAmount(f"amount must be a finite Decimal, got {amount!r}")
    if isinstance(exponent, bool) or not isinstance(exponent, int):
        raise InvalidAmount(f"exponent must be an int, got {exponent!r}")
    if not 0 <= exponent <= MAX_EXPONENT:
        raise InvalidAmount(f"exponent must be in [0, {MAX_EXPONENT}], got {exponent}")
    unit = Decimal(1).scaleb(-exponent)
    try:
        with decimal.localcontext(_ROUNDING):
            rounded = amount.quantize(unit, rounding=direction.value)
        with decimal.localcontext(_EXACT):
            remainder = amount - rounded
            # The whole point of returning a remainder: nothing may be lost.
            assert rounded + remainder == amount
    except (decimal.InvalidOperation, decimal.Inexact) as exc:
        raise InvalidAmount(f"{amount} cannot be held at exponent {exponent}") from exc
    return RoundedAmount(rounded, remainder)


# Names of the per-key settings that bound the markup. Swapgate mentions min/max markup settings
# per API key without naming the fields; these are ours (and the simulator's).
SETTING_MIN_MARKUP = "minMarkup"
SETTING_MAX_MARKUP = "maxMarkup"


@dataclass(frozen=True, slots=True)
class MarkupPolicy:
    """Which markup an order may carry: a default K and optional inclusive bounds.

    Mirrors Swapgate's per-key min/max markup settings, so a markup the key would refuse is
    refused here first, before anything is sent.
    """

    default: Decimal = ZERO
    minimum: Decimal | None = None
    maximum: Decimal | None = None

    def __post_init__(self) -> None:
        _percent(self.default, "default markup")
        if self.minimum is not None:
            _percent(self.minimum, "minimum markup")
        if self.maximum is not None:
            _percent(self.maximum, "maximum markup")
        if self.minimum is not None and self.maximum is not None and self.minimum > self.maximum:
            raise InvalidMarkup(f"minimum markup {self.minimum} is above maximum {self.maximum}")
        self._check_bounds(self.default)

    def _check_bounds(self, markup: Decimal) -> None:
        if (self.minimum is not None and markup < self.minimum) or (
            self.maximum is not None and markup > self.maximum
        ):
            raise MarkupOutOfBounds(markup, self.minimum, self.maximum)

    def resolve(self, requested: Decimal | None = None) -> Decimal:
        """The markup to use: ``requested`` if allowed, the default if ``None``.

        Raises :class:`InvalidMarkup` for a negative markup or one of 100 or more, and
        :class:`MarkupOutOfBounds` for one outside ``[minimum, maximum]``.
        """
        if requested is None:
            return self.default
        markup = _percent(requested, "markup")
        self._check_bounds(markup)
        return markup

    @classmethod
    def from_key_settings(
        cls, settings: Mapping[str, object], default: Decimal | None = None
    ) -> MarkupPolicy:
        """A policy from an API key's ``settings`` (``minMarkup``/``maxMarkup`` as strings).

        Without an explicit ``default`` the default is the minimum (or 0 without one).
        """

        def bound(name: str) -> Decimal | None:
            raw = settings.get(name)
            if raw is None:
                return None
            if not isinstance(raw, str):
                raise InvalidMarkup(f"setting {name} must be a decimal string, got {raw!r}")
            try:
                return Decimal(raw)
            except decimal.InvalidOperation as exc:
                raise InvalidMarkup(f"setting {name} is not a decimal: {raw!r}") from exc

        minimum = bound(SETTING_MIN_MARKUP)
        maximum = bound(SETTING_MAX_MARKUP)
        if default is None:
            default = minimum if minimum is not None else ZERO
        return cls(default=default, minimum=minimum, maximum=maximum)
