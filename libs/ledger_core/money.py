"""Exact money: decimal strings at the edges, integers in minor units inside.

Nothing here rounds. An amount with more fractional digits than its currency allows is refused,
never rounded, so a cent can not appear or vanish silently.
"""

from __future__ import annotations

import re

from ledger_core.currencies import EXPONENTS

# Positive decimal without sign, exponent or grouping: "10", "10.5", "0.01".
_AMOUNT = re.compile(r"(0|[1-9][0-9]*)(?:\.([0-9]+))?")

MAX_AMOUNT_LENGTH = 64
# The ceiling of every currency: at most this many digits before the decimal point, for an amount
# and for a customer balance (999,999,999,999,999.99 USD). No wallet holds 10^15 of any unit. In
# minor units that is at most 15 + 18 (ETH's exponent) = 33 digits, seven fewer than the
# ledger's NUMERIC(40, 0) columns hold, so even a system account, which sums the movements of a
# whole partition, has room for ten million of the largest amounts.
MAX_INTEGER_DIGITS = 15
# What the ledger's amount and balance_after columns, NUMERIC(40, 0), hold.
COLUMN_DIGITS = 40


class AmountError(ValueError):
    """An amount string that can not be accepted; ``code`` is the error code to answer with."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def ceiling(currency: str) -> int:
    """The largest amount, and the largest balance a credit or deposit may make, in minor units
    of ``currency``: :data:`MAX_INTEGER_DIGITS` nines before the point and all after it."""
    top: int = 10 ** (MAX_INTEGER_DIGITS + EXPONENTS[currency]) - 1
    return top


def parse_amount(text: object, currency: str) -> int:
    """Parse a positive decimal string into minor units of ``currency``.

    Raises :class:`AmountError` for anything that is not a positive amount representable exactly
    in the currency.
    """
    minor = parse_amount_or_zero(text, currency)
    if minor <= 0:
        raise AmountError("invalid_amount", "amount must be greater than zero")
    return minor


def parse_amount_or_zero(text: object, currency: str) -> int:
    """Like :func:`parse_amount`, but zero ("0", "0.00") is allowed: for the parts of an amount
    that may be empty (an exchange's margins and rounding remainder)."""
    if not isinstance(text, str):
        raise AmountError("invalid_amount", "amount must be a decimal string")
    exp = EXPONENTS.get(currency)
    if exp is None:
        raise AmountError("unknown_currency", f"currency {currency!r} is not supported")
    if len(text) > MAX_AMOUNT_LENGTH:
        raise AmountError("invalid_amount", "amount is too long")
    match = _AMOUNT.fullmatch(text)
    if match is None:
        raise AmountError("invalid_amount", "amount must be a positive decimal string like '10.50'")
    whole, frac = match.group(1), match.group(2) or ""
    if len(frac) > exp:
        raise AmountError(
            "invalid_amount", f"{currency} allows at most {exp} decimal places, got {len(frac)}"
        )
    if len(whole) > MAX_INTEGER_DIGITS:
        top = format_amount(ceiling(currency), currency)
        raise AmountError("amount_too_large", f"amount is above the {currency} ceiling of {top}")
    minor: int = int(whole) * 10**exp + (int(frac.ljust(exp, "0")) if exp else 0)
    return minor


def format_amount(minor: int, currency: str) -> str:
    """Format minor units as a decimal string with exactly the currency's exponent digits."""
    exp = EXPONENTS[currency]
    sign = "-" if minor < 0 else ""
    digits = str(abs(minor))
    if exp == 0:
        return sign + digits
    digits = digits.rjust(exp + 1, "0")
    return f"{sign}{digits[:-exp]}.{digits[-exp:]}"


_SIGNED = re.compile(r"(-?)(0|[1-9][0-9]*)(?:\.([0-9]+))?")


def to_minor(text: str, currency: str) -> int:
    """Inverse of :func:`format_amount`: any exact decimal (zero and negatives included) to
    minor units. Used to read amounts the ledger itself wrote; raises ValueError otherwise."""
    exp = EXPONENTS[currency]
    match = _SIGNED.fullmatch(text)
    if match is None or len(match.group(3) or "") > exp:
        raise ValueError(f"not an exact {currency} amount: {text!r}")
    sign = -1 if match.group(1) else 1
    frac = (match.group(3) or "").ljust(exp, "0")
    minor: int = sign * (int(match.group(2)) * 10**exp + (int(frac) if exp else 0))
    return minor
