"""Exact money: parsing decimal strings into minor units and formatting them back."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger_core.currencies import EXPONENTS
from ledger_core.money import (
    COLUMN_DIGITS,
    AmountError,
    ceiling,
    format_amount,
    parse_amount,
    to_minor,
)

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("text", "currency", "minor"),
    [
        ("10", "USD", 1000),
        ("10.5", "USD", 1050),
        ("0.01", "USD", 1),
        ("7", "JPY", 7),
        ("1.234", "KWD", 1234),
        ("0.00000001", "BTC", 1),
        ("1.000000000000000001", "ETH", 10**18 + 1),
        ("999999999999999.99", "USD", 99999999999999999),
    ],
)
def test_parse_amount_gives_exact_minor_units(text: str, currency: str, minor: int) -> None:
    assert parse_amount(text, currency) == minor


@pytest.mark.parametrize(
    ("text", "currency", "code"),
    [
        ("0", "USD", "invalid_amount"),
        ("0.00", "USD", "invalid_amount"),
        ("-1", "USD", "invalid_amount"),
        ("+1", "USD", "invalid_amount"),
        ("1.", "USD", "invalid_amount"),
        (".5", "USD", "invalid_amount"),
        ("1.005", "USD", "invalid_amount"),
        ("1.5", "JPY", "invalid_amount"),
        ("1e2", "USD", "invalid_amount"),
        ("01", "USD", "invalid_amount"),
        ("1,000", "USD", "invalid_amount"),
        ("NaN", "USD", "invalid_amount"),
        ("١٢", "USD", "invalid_amount"),
        (12, "USD", "invalid_amount"),
        (1.5, "USD", "invalid_amount"),
        ("1000000000000000", "USD", "amount_too_large"),
        ("1", "ABC", "unknown_currency"),
        ("1" * 65, "USD", "invalid_amount"),
    ],
)
def test_parse_amount_refuses_what_it_cannot_take_exactly(
    text: object, currency: str, code: str
) -> None:
    with pytest.raises(AmountError) as info:
        parse_amount(text, currency)
    assert info.value.code == code


@given(st.sampled_from(sorted(EXPONENTS)), st.integers(min_value=1, max_value=10**30))
def test_format_then_parse_is_the_identity(currency: str, minor: int) -> None:
    text = format_amount(minor, currency)
    if len(text.split(".")[0]) <= 15:
        assert parse_amount(text, currency) == minor
    assert to_minor(text, currency) == minor
    assert to_minor(format_amount(-minor, currency), currency) == -minor


def test_format_amount_pads_to_the_exponent() -> None:
    assert format_amount(5, "USD") == "0.05"
    assert format_amount(0, "BTC") == "0.00000000"
    assert format_amount(-1050, "USD") == "-10.50"
    assert format_amount(3, "JPY") == "3"


def test_required_currencies_have_their_exponents() -> None:
    assert {
        c: EXPONENTS[c] for c in ("USD", "EUR", "JPY", "KWD", "BTC", "ETH", "USDT", "USDC")
    } == {
        "USD": 2,
        "EUR": 2,
        "JPY": 0,
        "KWD": 3,
        "BTC": 8,
        "ETH": 18,
        "USDT": 6,
        "USDC": 6,
    }


@pytest.mark.parametrize("currency", sorted(EXPONENTS))
def test_every_ceiling_is_accepted_exactly_and_well_inside_the_ledger_columns(
    currency: str,
) -> None:
    top = ceiling(currency)
    # Seven digits of room: a system account summing ten million of the largest amounts fits.
    assert len(str(top)) <= COLUMN_DIGITS - 7
    assert parse_amount(format_amount(top, currency), currency) == top
    with pytest.raises(AmountError) as info:
        parse_amount(format_amount(top + 1, currency), currency)
    assert info.value.code == "amount_too_large"
    assert format_amount(top, currency) in info.value.message  # says where the ceiling is
