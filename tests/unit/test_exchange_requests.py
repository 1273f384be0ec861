"""Exchange requests are checked completely before anything is quoted or held."""

from __future__ import annotations

import orjson
import pytest

from exchange.requests import ExchangeRequest, parse_request
from ledger_core.requests import RequestError

pytestmark = pytest.mark.unit

GOOD = {
    "exchange_id": "x1",
    "source_balance_id": "c_ETH",
    "target_balance_id": "c_BTC",
    "amount": "60.5",
    "currency_code": "ETH",
    "target_currency_code": "BTC",
}


def test_a_good_request_and_its_fingerprint() -> None:
    request = parse_request("c", orjson.dumps(GOOD))
    assert request == ExchangeRequest("c", "x1", "c_ETH", "c_BTC", "60.5", "ETH", "BTC")
    assert request.minor_amount == 60_500000000000000000  # beyond 64 bits: fine
    same = parse_request("c", orjson.dumps(GOOD | {"amount": "60.50"}))
    other = parse_request("c", orjson.dumps(GOOD | {"amount": "60.6"}))
    assert request.fingerprint() == same.fingerprint() != other.fingerprint()
    assert ExchangeRequest.from_json(request.to_json()) == request


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"{", "malformed_json"),
        (b'"x"', "malformed_json"),
        (orjson.dumps({k: v for k, v in GOOD.items() if k != "amount"}), "invalid_field"),
        (orjson.dumps(GOOD | {"extra": "1"}), "invalid_field"),
        (orjson.dumps(GOOD | {"amount": 1}), "invalid_field"),
        (orjson.dumps(GOOD | {"amount": "0"}), "invalid_amount"),
        (orjson.dumps(GOOD | {"amount": "1e3"}), "invalid_amount"),
        (orjson.dumps(GOOD | {"exchange_id": "x" * 129}), "invalid_id"),
        (orjson.dumps(GOOD | {"exchange_id": "a\nb"}), "invalid_id"),
        (orjson.dumps(GOOD | {"currency_code": "eth"}), "unknown_currency"),
        (orjson.dumps(GOOD | {"target_currency_code": "ETH"}), "exchange_not_supported"),
        (orjson.dumps(GOOD | {"target_balance_id": "c_ETH"}), "invalid_field"),
    ],
)
def test_bad_requests_are_refused_with_their_code(body: bytes, code: str) -> None:
    with pytest.raises(RequestError) as caught:
        parse_request("c", body)
    assert caught.value.code == code


def test_a_bad_customer_id_in_the_path_is_refused() -> None:
    with pytest.raises(RequestError) as caught:
        parse_request("", orjson.dumps(GOOD))
    assert caught.value.code == "invalid_id"
