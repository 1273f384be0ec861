"""Swapgate's markup formulas, the rounding step and the markup policy."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from swapgate import (
    PAYOUT_ROUNDING,
    InexactArithmetic,
    InvalidAmount,
    InvalidMarkup,
    MarkupOutOfBounds,
    MarkupPolicy,
    RoundingDirection,
    affiliate_margin,
    final_amount,
    round_to_exponent,
    withdrawal_amount,
)

pytestmark = pytest.mark.unit

amounts = st.decimals(
    min_value=0, max_value=10**12, places=18, allow_nan=False, allow_infinity=False
)
markups = st.decimals(min_value=0, max_value=Decimal("99.999"), places=3)
# C and K each below 50, so C + K < 100 always holds.
halves = st.decimals(min_value=0, max_value=Decimal("49.999"), places=3)
exponents = st.integers(min_value=0, max_value=18)
signed_amounts = st.decimals(
    min_value=-(10**12), max_value=10**12, places=24, allow_nan=False, allow_infinity=False
)


def test_final_amount_matches_documented_example_exactly() -> None:
    result = final_amount(Decimal("49549.728053855135"), Decimal("0.3"))
    assert str(result) == "49401.078869693569595"


def test_withdrawal_amount_matches_documented_example_exactly() -> None:
    result = withdrawal_amount(Decimal("50243.798064469251204"), Decimal(1), Decimal("0.3"))
    assert str(result) == "49590.628689631150938348"


def test_affiliate_margin_is_commission_share_plus_markup_share() -> None:
    # 20 % of 500 plus 0.3 % of 500.
    assert affiliate_margin(Decimal(500), Decimal(20), Decimal("0.3")) == Decimal("101.5")


@given(amount=amounts)
def test_markup_zero_is_the_identity(amount: Decimal) -> None:
    assert final_amount(amount, Decimal(0)) == amount
    assert withdrawal_amount(amount, Decimal(0), Decimal(0)) == amount


@given(amount=amounts, k=markups, c=halves, k_half=halves)
def test_payout_is_never_negative_for_valid_inputs(
    amount: Decimal, k: Decimal, c: Decimal, k_half: Decimal
) -> None:
    assert final_amount(amount, k) >= 0
    assert withdrawal_amount(amount, c, k_half) >= 0


@given(amount=amounts, k1=markups, k2=markups, c=halves, h1=halves, h2=halves)
def test_payouts_do_not_increase_with_markup(
    amount: Decimal, k1: Decimal, k2: Decimal, c: Decimal, h1: Decimal, h2: Decimal
) -> None:
    low, high = sorted((k1, k2))
    assert final_amount(amount, high) <= final_amount(amount, low)
    low_h, high_h = sorted((h1, h2))
    assert withdrawal_amount(amount, c, high_h) <= withdrawal_amount(amount, c, low_h)


@given(amount=signed_amounts, exponent=exponents, direction=st.sampled_from(RoundingDirection))
def test_rounded_plus_remainder_is_the_exact_amount(
    amount: Decimal, exponent: int, direction: RoundingDirection
) -> None:
    rounded = round_to_exponent(amount, exponent, direction)
    # .exact adds in the library's exact context (the default one has only 28 digits).
    assert rounded.exact == amount
    assert rounded.amount.as_tuple().exponent == -exponent


@given(amount=amounts, exponent=exponents)
def test_payout_rounding_never_pays_more_than_exact(amount: Decimal, exponent: int) -> None:
    rounded = round_to_exponent(amount, exponent, PAYOUT_ROUNDING)
    assert 0 <= rounded.amount <= amount
    assert 0 <= rounded.remainder < Decimal(1).scaleb(-exponent)


def test_payout_rounding_cuts_the_documented_example_to_usdt_precision() -> None:
    rounded = round_to_exponent(Decimal("49590.628689631150938348"), 6, PAYOUT_ROUNDING)
    assert rounded.amount == Decimal("49590.628689")
    assert rounded.remainder == Decimal("0.000000631150938348")


def test_rounding_refuses_an_exponent_out_of_range() -> None:
    with pytest.raises(InvalidAmount):
        round_to_exponent(Decimal(1), -1, PAYOUT_ROUNDING)
    with pytest.raises(InvalidAmount):
        round_to_exponent(Decimal(1), 31, PAYOUT_ROUNDING)


def test_float_amounts_are_refused() -> None:
    with pytest.raises(InvalidAmount):
        final_amount(49549.7, Decimal("0.3"))  # type: ignore[arg-type]
    with pytest.raises(InvalidMarkup):
        final_amount(Decimal(1), 0.3)  # type: ignore[arg-type]


def test_negative_amount_is_refused() -> None:
    with pytest.raises(InvalidAmount):
        withdrawal_amount(Decimal(-1), Decimal(1), Decimal("0.3"))


@pytest.mark.parametrize("markup", [Decimal("-0.1"), Decimal(100), Decimal("100.5")])
def test_markup_outside_zero_to_hundred_is_refused(markup: Decimal) -> None:
    with pytest.raises(InvalidMarkup):
        final_amount(Decimal(1), markup)


def test_platform_commission_plus_markup_of_hundred_is_refused() -> None:
    with pytest.raises(InvalidMarkup):
        withdrawal_amount(Decimal(1), Decimal(60), Decimal(40))


def test_result_beyond_working_precision_raises_instead_of_rounding() -> None:
    too_long = Decimal("1." + "1" * 49)
    with pytest.raises(InexactArithmetic):
        final_amount(too_long, Decimal("0.3"))


def test_policy_uses_its_default_when_no_markup_is_requested() -> None:
    assert MarkupPolicy(default=Decimal("0.3")).resolve() == Decimal("0.3")


def test_policy_accepts_markup_within_bounds() -> None:
    policy = MarkupPolicy(default=Decimal("0.5"), minimum=Decimal("0.1"), maximum=Decimal(2))
    assert policy.resolve(Decimal(2)) == Decimal(2)


def test_policy_refuses_markup_outside_bounds_with_the_bounds() -> None:
    policy = MarkupPolicy(default=Decimal("0.5"), minimum=Decimal("0.1"), maximum=Decimal(2))
    with pytest.raises(MarkupOutOfBounds) as refused:
        policy.resolve(Decimal("2.5"))
    assert (refused.value.requested, refused.value.maximum) == (Decimal("2.5"), Decimal(2))
    with pytest.raises(MarkupOutOfBounds):
        policy.resolve(Decimal("0.05"))


@pytest.mark.parametrize("markup", [Decimal(-1), Decimal(100)])
def test_policy_refuses_negative_markup_and_markup_of_hundred(markup: Decimal) -> None:
    with pytest.raises(InvalidMarkup):
        MarkupPolicy().resolve(markup)


def test_policy_with_default_outside_its_bounds_cannot_be_built() -> None:
    with pytest.raises(MarkupOutOfBounds):
        MarkupPolicy(default=Decimal(3), maximum=Decimal(2))


def test_policy_from_key_settings_reads_min_and_max_markup() -> None:
    policy = MarkupPolicy.from_key_settings({"minMarkup": "0.2", "maxMarkup": "1.5"})
    assert (policy.default, policy.minimum, policy.maximum) == (
        Decimal("0.2"),
        Decimal("0.2"),
        Decimal("1.5"),
    )
