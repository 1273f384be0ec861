"""Request signing and the exact body bytes (expected values computed with Node.js)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from swapgate import (
    CreateOrderRequest,
    Instrument,
    NotJsonSafe,
    RateMode,
    compact_json,
    decimal_text,
    sign,
    signed_headers,
    verify,
)

pytestmark = pytest.mark.unit

PUBLIC_KEY = "ZgzycV6Sf78BZKuyIAiz+0Bor002+0/rx1gLKsmYCsY="
SECRET_KEY = "a482a8e3a3ff9aeadefb11d3d8c11253e7e8412e05ef2b8599016cc87a64b7d6"
TIMESTAMP = 1722866058427

# The seed's order example, as JSON.stringify writes it.
SEED_ORDER_BYTES = (
    b'{"rateMode":"FLOATING","instrumentFrom":{"currencyTitle":"USDT","networkTitle":"TRC20"},'
    b'"instrumentTo":{"currencyTitle":"BTC","networkTitle":"BTC"},'
    b'"destinationAddress":"bc1qxy2kgdygjrsqtzq2n0yrf2493p83kkfjhx0wlh",'
    b'"destinationAddressMemo":null,"refundAddress":null,"refundAddressMemo":null,'
    b'"markup":"0.2","claimedNetworkFee":null,"legacyOrderId":null,"referrerId":"aff_616",'
    b'"claimedDepositAmount":"125000","utmData":[],'
    b'"browserFingerprint":"6b3add86bec11616427d069556a33548"}'
)


def seed_order() -> CreateOrderRequest:
    return CreateOrderRequest(
        rate_mode=RateMode.FLOATING,
        instrument_from=Instrument("USDT", "TRC20"),
        instrument_to=Instrument("BTC", "BTC"),
        destination_address="bc1qxy2kgdygjrsqtzq2n0yrf2493p83kkfjhx0wlh",
        claimed_deposit_amount=Decimal(125000),
        markup=Decimal("0.2"),
        referrer_id="aff_616",
        browser_fingerprint="6b3add86bec11616427d069556a33548",
    )


def test_documented_test_vector_signs_to_the_documented_signature() -> None:
    body = compact_json({"myKey": "myValue"})
    assert body == b'{"myKey":"myValue"}'
    assert sign(SECRET_KEY, TIMESTAMP, body, PUBLIC_KEY) == (
        "Q+aWe5uqfRbsPKvPqq8flwWHWqeQG4JmRJzS8QhyzbU="
    )


def test_verify_accepts_the_documented_vector() -> None:
    signature = "Q+aWe5uqfRbsPKvPqq8flwWHWqeQG4JmRJzS8QhyzbU="
    assert verify(SECRET_KEY, TIMESTAMP, b'{"myKey":"myValue"}', PUBLIC_KEY, signature)


def test_verify_rejects_a_body_that_differs_by_one_space() -> None:
    signature = "Q+aWe5uqfRbsPKvPqq8flwWHWqeQG4JmRJzS8QhyzbU="
    assert not verify(SECRET_KEY, TIMESTAMP, b'{"myKey": "myValue"}', PUBLIC_KEY, signature)


def test_verify_rejects_another_timestamp_or_key() -> None:
    signature = "Q+aWe5uqfRbsPKvPqq8flwWHWqeQG4JmRJzS8QhyzbU="
    body = b'{"myKey":"myValue"}'
    assert not verify(SECRET_KEY, TIMESTAMP + 1, body, PUBLIC_KEY, signature)
    assert not verify(SECRET_KEY[:-1] + "0", TIMESTAMP, body, PUBLIC_KEY, signature)


def test_verify_returns_false_for_a_non_ascii_signature() -> None:
    assert not verify(SECRET_KEY, TIMESTAMP, b"", PUBLIC_KEY, "sïgnature")


def test_empty_body_signs_timestamp_and_public_key_only() -> None:
    assert sign(SECRET_KEY, TIMESTAMP, b"", PUBLIC_KEY) == (
        "hkRG6IVraRf0ItQF4x+jWGAzyrXkGVhrg0JZESQa9gM="
    )


def test_signed_headers_carry_key_millisecond_timestamp_and_signature() -> None:
    headers = signed_headers(SECRET_KEY, PUBLIC_KEY, TIMESTAMP, b'{"myKey":"myValue"}')
    assert headers == {
        "x-api-public-key": PUBLIC_KEY,
        "x-api-timestamp": "1722866058427",
        "x-api-signature": "Q+aWe5uqfRbsPKvPqq8flwWHWqeQG4JmRJzS8QhyzbU=",
    }


def test_order_body_bytes_are_what_json_stringify_gives_for_the_seed_example() -> None:
    body = compact_json(seed_order().to_wire())
    assert body == SEED_ORDER_BYTES
    assert sign(SECRET_KEY, TIMESTAMP, body, PUBLIC_KEY) == (
        "t6AvUkAsL9jV+eaeAQ+7mdfBO2M0RNHnR8hXagYGcYA="
    )


def test_non_ascii_is_raw_utf8_and_control_characters_are_escaped_like_javascript() -> None:
    body = compact_json({"note": "café ☕ \u0007"})
    assert body == '{"note":"café ☕ \\u0007"}'.encode()


def test_integer_like_keys_come_first_as_in_javascript() -> None:
    body = compact_json({"note": "x", "10": 1, "2": 2, "01": 3, "4294967295": 4})
    assert body == b'{"2":2,"10":1,"note":"x","01":3,"4294967295":4}'


def test_signature_over_non_ascii_body_matches_node() -> None:
    body = compact_json({"note": "café ☕ \u0007", "10": 1})
    assert sign(SECRET_KEY, TIMESTAMP, body, PUBLIC_KEY) == (
        "zka7l8pwdbPsHfQck3L38NxnsOtycZjCoDvST3qExJ0="
    )


@pytest.mark.parametrize("value", [0.3, Decimal("0.3"), 2**53, -(2**53)])
def test_floats_decimals_and_unsafe_integers_are_refused(value: object) -> None:
    with pytest.raises(NotJsonSafe):
        compact_json({"markup": value})  # type: ignore[dict-item]


def test_amounts_go_on_the_wire_as_plain_decimal_strings() -> None:
    assert decimal_text(Decimal("1E+2")) == "100"
    assert decimal_text(Decimal("1E-8")) == "0.00000001"
    assert decimal_text(Decimal("0.30")) == "0.30"
