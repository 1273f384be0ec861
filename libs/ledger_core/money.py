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
# An amount whose integer part has more digits than this is "absurd": no wallet holds 10^15 of
# any unit, and it keeps every value well inside NUMERIC(40, 0) in minor units.
MAX_INTEGER_DIGITS = 15


class AmountError(ValueError):
    """An amount string that can not be accepted; ``code`` is the error code to answer with."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


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
        raise AmountError("amount_too_large", "amount is absurdly large")
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
