"""A completed order's amounts, rounded once toward zero, with the remainder booked."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exchange.booking import BookingError, book_completed
from simulators.swapgate.market import DEFAULT_INSTRUMENTS, Market
from swapgate import Completed

pytestmark = pytest.mark.unit

BTC, USDT, ETH = DEFAULT_INSTRUMENTS
MARKET = Market(
    DEFAULT_INSTRUMENTS,
    spread_pct=Decimal("0.5"),
    platform_pct=Decimal(1),
    affiliate_pct=Decimal(20),
)


def completed(received: str, markup: str, source=USDT, target=BTC) -> Completed:  # type: ignore[no-untyped-def]
    s = MARKET.settle(source, target, Decimal(received), Decimal(markup))
    return Completed(
        amount_received=s.amount_received,
        amount_paid_out=s.amount_paid_out,
        platform_margin=s.platform_margin,
        affiliate_margin=s.affiliate_margin,
        exchange_amount=s.exchange_amount,
        payout_rounding_remainder=s.payout_rounding_remainder,
    )


def test_a_simulated_order_books_its_payout_exactly_and_rounds_only_the_margins() -> None:
    order = completed("100", "0.3")
    booking = book_completed(order, Decimal("0.3"), "BTC")
    # The payout arrives at the target's precision: nothing to round.
    assert Decimal(booking.paid).scaleb(-8) == order.amount_paid_out
    markup_share = order.platform_margin * Decimal("0.003")
    assert booking.markup_revenue == int(markup_share.scaleb(8))  # toward zero
    assert booking.affiliate_margin == int((order.affiliate_margin - markup_share).scaleb(8))
    yield_ = int((order.amount_paid_out + order.affiliate_margin).scaleb(8))
    assert booking.clearing == yield_ and 0 <= booking.rounding <= 2
    assert set(booking.amounts()) == {"paid", "markup_revenue", "affiliate_margin", "rounding"}
    assert not any("E" in text for text in booking.exact.values())  # plain notation only


@settings(max_examples=200, deadline=None)
@given(
    received=st.decimals(min_value=10, max_value=100000, places=6),
    markup=st.sampled_from(["0", "0.3", "1", "2.5"]),
    currency=st.sampled_from(["BTC", "ETH", "USD", "JPY"]),
)
def test_nothing_representable_is_lost_and_nobody_is_paid_more_than_exact(
    received: Decimal, markup: str, currency: str
) -> None:
    order = completed(str(received), markup, USDT, ETH if currency == "ETH" else BTC)
    booking = book_completed(order, Decimal(markup), currency)
    exp = {"BTC": 8, "ETH": 18, "USD": 2, "JPY": 0}[currency]
    unit = Decimal(1).scaleb(-exp)
    assert Decimal(booking.paid) * unit <= order.amount_paid_out < (booking.paid + 1) * unit
    assert (
        min(booking.paid, booking.markup_revenue, booking.affiliate_margin, booking.rounding) >= 0
    )
    yield_ = order.amount_paid_out + (order.affiliate_margin or 0)
    # The clearing charge is the yield rounded toward zero: less than one unit stays unbooked.
    assert 0 <= yield_ - booking.clearing * unit < unit
    assert booking.rounding < 3


def test_an_order_without_an_affiliate_margin_books_only_the_payout() -> None:
    order = Completed(Decimal(1), Decimal("0.123456789"), Decimal("0.5"), None, None, Decimal(0))
    booking = book_completed(order, Decimal("0.3"), "BTC")
    assert (booking.paid, booking.markup_revenue, booking.affiliate_margin, booking.rounding) == (
        12345678,
        0,
        0,
        0,
    )


@pytest.mark.parametrize("currency", ["XXX", ""])
def test_an_unknown_currency_is_refused(currency: str) -> None:
    with pytest.raises(BookingError):
        book_completed(completed("100", "0"), Decimal(0), currency)


def test_negative_amounts_are_refused() -> None:
    order = Completed(Decimal(1), Decimal("-0.1"), Decimal("0.5"), None, None, Decimal(0))
    with pytest.raises(BookingError):
        book_completed(order, Decimal(0), "BTC")
