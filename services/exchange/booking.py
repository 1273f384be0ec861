"""What a completed Swapgate order books in the ledger (pure; no I/O).

Swapgate reports exact decimals in the target currency: ``amountPaidOut`` (what it sent to our
payout address, net of its commission C, our markup K and the network fee) and
``affiliateMargin``, the partner's share it owes us, which by its formula is
``C_platform * aff% + C_platform * K%``. The ledger holds integers in the target currency's minor
units, so each amount is **rounded once, where it enters a balance, toward zero**
(:data:`swapgate.PAYOUT_ROUNDING`), and the remainder goes to the rounding account:

* ``paid`` (to the customer's target balance) = ``amountPaidOut`` rounded toward zero: a
  customer is never credited more than was paid out;
* ``markup_revenue`` = the markup's term ``C_platform * K / 100`` rounded toward zero;
* ``affiliate_margin`` = the rest of ``affiliateMargin`` rounded toward zero;
* the exchange clearing account is charged with the yield ``amountPaidOut + affiliateMargin``
  rounded toward zero, and ``rounding`` = that charge minus the three parts (0 to 2 minor units):
  what rounding the parts separately cut off is booked, not lost.

What is left below one minor unit of the whole yield is not an amount the target currency can
hold (nobody can pay it out); the exact figures are kept with the exchange (``exact``) and in the
settled fact's order, so a reconciliation of Swapgate's affiliate payouts sees them.
"""

from __future__ import annotations

import decimal
from dataclasses import dataclass
from decimal import Decimal

from ledger_core.currencies import EXPONENTS
from ledger_core.money import format_amount
from swapgate import (
    PAYOUT_ROUNDING,
    Completed,
    affiliate_margin,
    decimal_text,
    round_to_exponent,
)

_EXACT = decimal.Context(
    prec=80,
    traps=[decimal.InvalidOperation, decimal.DivisionByZero, decimal.Overflow, decimal.Inexact],
)


class BookingError(ValueError):
    """A completed order whose amounts can not be booked (negative, or not a known currency)."""


@dataclass(frozen=True, slots=True)
class Booking:
    """The settle command's amounts (minor units of the target currency) and their sources."""

    currency: str
    paid: int
    markup_revenue: int
    affiliate_margin: int
    rounding: int
    exact: dict[str, str]  # the exact decimals they were rounded from

    @property
    def clearing(self) -> int:
        """What the exchange clearing account gives in the target currency."""
        return self.paid + self.markup_revenue + self.affiliate_margin + self.rounding

    def amounts(self) -> dict[str, str]:
        """The four amounts as the ledger's decimal strings (the settle command's fields)."""
        return {
            name: format_amount(getattr(self, name), self.currency)
            for name in ("paid", "markup_revenue", "affiliate_margin", "rounding")
        }


def _minor(amount: Decimal, exponent: int) -> int:
    """``amount`` rounded toward zero to ``exponent`` places, in minor units."""
    rounded = round_to_exponent(amount, exponent, PAYOUT_ROUNDING).amount
    with decimal.localcontext(_EXACT):
        return int(rounded.scaleb(exponent))


def book_completed(completed: Completed, markup_pct: Decimal, currency: str) -> Booking:
    """The amounts to book for a completed order paying out in ``currency``."""
    exponent = EXPONENTS.get(currency)
    if exponent is None:
        raise BookingError(f"currency {currency!r} is not supported")
    paid_out = completed.amount_paid_out
    owed = completed.affiliate_margin if completed.affiliate_margin is not None else Decimal(0)
    if min(paid_out, owed, completed.platform_margin) < 0:
        raise BookingError(f"negative amounts in a completed order: {completed}")
    with decimal.localcontext(_EXACT):
        # The markup's share of what Swapgate owes us (never more than it owes).
        markup = min(owed, affiliate_margin(completed.platform_margin, Decimal(0), markup_pct))
        commission = owed - markup
        yield_ = paid_out + owed
    paid, markup_revenue, commission_margin = (
        _minor(x, exponent) for x in (paid_out, markup, commission)
    )
    rounding = _minor(yield_, exponent) - paid - markup_revenue - commission_margin
    assert 0 <= rounding < 3, "rounding three parts down loses less than three minor units"
    return Booking(
        currency,
        paid,
        markup_revenue,
        commission_margin,
        rounding,
        exact={  # plain decimal notation, never "5.9E-8"
            "amount_paid_out": decimal_text(paid_out),
            "affiliate_margin": decimal_text(owed),
            "platform_margin": decimal_text(completed.platform_margin),
            "markup_share": decimal_text(markup),
            "commission_share": decimal_text(commission),
            "markup_pct": decimal_text(markup_pct),
        },
    )
