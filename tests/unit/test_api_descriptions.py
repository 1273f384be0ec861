"""Our OpenAPI descriptions (docs/api/) are valid OpenAPI and in step with the code they describe.

The callbacks' traffic is checked against wallet-callbacks.yaml end to end
(tests/e2e/test_callback_contract.py), and the gateway client's against quadcode-gateway.yaml
(tests/quadcode_gateway/); here, without I/O: the error codes each status names, the limits, the
gateway operations, and the operator API's answers as its code builds them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from openapi_core import OpenAPI
from openapi_core.testing import MockRequest, MockResponse
from openapi_spec_validator import validate

from api_contract import (
    DESCRIPTIONS,
    OPERATOR_API,
    QUADCODE_GATEWAY,
    WALLET_CALLBACKS,
    Spec,
    json_schema,
    load,
    operations,
    resolve,
)
from exchange import store
from exchange.booking import book_completed
from exchange.requests import REQUIRED as EXCHANGE_FIELDS
from exchange.requests import ExchangeRequest
from ledger_core.commands import MAX_COMMENT_LENGTH, MAX_ID_LENGTH
from ledger_core.errors import ERRORS
from ledger_core.money import MAX_AMOUNT_LENGTH
from operator_api.trading_room import OPTIONAL_FIELDS, REQUIRED_FIELDS, outcome_response
from quadcode_gateway import TradingRoomOutcome, TradingRoomStatus
from quadcode_gateway.client import EXTERNAL_OPERATIONS
from quadcode_gateway.internal import INTERNAL_OPERATIONS
from swapgate.orders import Completed

pytestmark = pytest.mark.unit

# A signed request's three headers (their values are not checked against the description).
SECRET_HEADER = {
    "x-api-public-key": "ZgzycV6Sf78BZKuyIAiz+0Bor002+0/rx1gLKsmYCsY=",
    "x-api-timestamp": "1722866058427",
    "x-api-signature": "c2lnbmF0dXJl",
}


@pytest.mark.parametrize("path", DESCRIPTIONS, ids=lambda path: path.name)
def test_each_description_is_valid_openapi(path: Path) -> None:
    validate(load(path))  # raises on the first violation of the OpenAPI 3.0 schema
    OpenAPI.from_file_path(str(path))  # and openapi-core, which the tests validate with, reads it


def error_codes_by_status(spec: Spec) -> dict[int, set[str]]:
    """Every ``error`` code each status of each operation names (in its body schema's enum)."""
    named: dict[int, set[str]] = {}
    for operation in operations(spec).values():
        for status, response in operation["responses"].items():
            schema = resolve(spec, json_schema(spec, response) or {})
            error = resolve(spec, schema.get("properties", {}).get("error", {}))
            named.setdefault(int(status), set()).update(error.get("enum", ()))
    return {status: codes for status, codes in named.items() if codes}


@pytest.mark.parametrize("path", [WALLET_CALLBACKS, OPERATOR_API], ids=lambda path: path.name)
def test_every_error_code_a_description_names_has_that_status_in_ledger_core(path: Path) -> None:
    named = error_codes_by_status(load(path))
    assert named, "the description names no error codes at all"
    wrong = sorted(
        (status, code)
        for status, codes in named.items()
        for code in codes
        if code not in ERRORS or ERRORS[code].status != status
    )
    assert wrong == [], "codes unknown to ledger_core.errors, or under another status"


def test_every_callback_error_status_is_a_json_error_naming_its_codes() -> None:
    spec = load(WALLET_CALLBACKS)
    for key, operation in operations(spec).items():
        for status, response in operation["responses"].items():
            if int(status) < 400:
                continue
            schema = resolve(spec, json_schema(spec, response))
            assert schema is not None, (key, status)
            assert sorted(schema["required"]) == ["error", "message"], (key, status)
            assert resolve(spec, schema["properties"]["error"]).get("enum"), (key, status)


def test_the_callbacks_limits_are_ledger_cores() -> None:
    spec = load(WALLET_CALLBACKS)
    schemas = spec["components"]["schemas"]
    request = schemas["MoneyMovementRequest"]["properties"]
    for name in ("customer_id", "balance_id"):
        assert spec["components"]["parameters"][name]["schema"]["maxLength"] == MAX_ID_LENGTH
    assert request["request_id"]["maxLength"] == MAX_ID_LENGTH
    assert request["comment"]["maxLength"] == MAX_COMMENT_LENGTH
    assert schemas["Amount"]["maxLength"] == MAX_AMOUNT_LENGTH


def test_the_gateway_description_names_exactly_our_clients_operations() -> None:
    described = {}
    for key, operation in operations(load(QUADCODE_GATEWAY)).items():
        successes = [int(s) for s in operation["responses"] if 200 <= int(s) < 300]
        described[key] = (operation["operationId"], successes, operation["tags"])
    expected = {
        (op.method, op.path): (op.name, [op.success], [tag])
        for tag, client_operations in (
            ("external balances", EXTERNAL_OPERATIONS),
            ("internal balances", INTERNAL_OPERATIONS),
        )
        for op in client_operations
    }
    assert described == expected


def test_the_operator_description_has_the_fields_and_states_of_the_code() -> None:
    schemas = load(OPERATOR_API)["components"]["schemas"]
    room = schemas["TradingRoomRequest"]
    assert sorted(room["required"]) == sorted(REQUIRED_FIELDS)
    assert sorted(room["properties"]) == sorted(REQUIRED_FIELDS + OPTIONAL_FIELDS)
    exchange = schemas["ExchangeRequest"]
    assert sorted(exchange["required"]) == sorted(exchange["properties"]) == sorted(EXCHANGE_FIELDS)
    states = {*store.RESUMABLE, *store.FINAL, store.ATTENTION}
    assert set(schemas["Exchange"]["properties"]["state"]["enum"]) == states


@pytest.fixture(scope="module")
def operator_api() -> OpenAPI:
    return OpenAPI.from_file_path(str(OPERATOR_API))


def room_request() -> MockRequest:
    body = {
        "balance_id": "c-1_USD",
        "balance_currency_code": "USD",
        "country_code": "DE",
        "ip": "203.0.113.7",
        "locale": "en_US",
        "site_domain": "trade.example.com",
        "email": "anna@example.com",
    }
    return MockRequest(
        "http://operator.example",
        "post",
        "/v1/customers/c-1/trading-room",
        headers=SECRET_HEADER,
        data=orjson.dumps(body),
        content_type="application/json",
    )


@pytest.mark.parametrize("status", list(TradingRoomStatus))
def test_every_trading_room_answer_conforms_to_the_operator_description(
    operator_api: OpenAPI, status: TradingRoomStatus
) -> None:
    url = "https://qc.example/traderoom?token=t" if status is TradingRoomStatus.URL else None
    answer = outcome_response(TradingRoomOutcome(status=status, url=url, customer_created=True))
    assert isinstance(answer.body, bytes)
    request = room_request()
    operator_api.validate_request(request)
    operator_api.validate_response(
        request,
        MockResponse(
            answer.body,
            status_code=answer.status,
            headers=dict(answer.headers),
            content_type="application/json",
        ),
    )


def test_a_trading_room_answer_without_its_fields_does_not_conform(operator_api: OpenAPI) -> None:
    """The check above can fail: a URL answer that does not say whether a customer was created."""
    broken = MockResponse(
        orjson.dumps({"outcome": "url", "url": "https://x", "message": ""}),
        status_code=200,
        headers={"Cache-Control": "no-store"},
        content_type="application/json",
    )
    with pytest.raises(Exception, match=r"(?i)valid|required"):
        operator_api.validate_response(room_request(), broken)


def exchange_row(state: str, **changes: Any) -> store.ExchangeRow:
    now = datetime.now(UTC)
    fields: dict[str, Any] = {
        "request": ExchangeRequest("ben", "ex-1", "ben_USDT", "ben_BTC", "100.00", "USDT", "BTC"),
        "fingerprint": b"",
        "state": state,
        "order_id": None,
        "quote": None,
        "settlement": None,
        "ledger_status": None,
        "ledger_body": None,
        "detail": None,
        "created_at": now,
        "updated_at": now,
    }
    fields.update(changes)
    return store.ExchangeRow(**fields)


QUOTE = {
    "amount_to_get": "0.00193465",
    "price": "0.0000193465",
    "markup": "0.3",
    "network_fee": "0.00002",
    "rate_mode": "FLOATING",
    "from": "USDT/TRC20",
    "to": "BTC/BTC",
    "quoted_at": "2026-11-22T01:56:15+00:00",
}


def settled_row() -> store.ExchangeRow:
    completed = Completed(
        amount_received=Decimal("100"),
        amount_paid_out=Decimal("0.00193459"),
        platform_margin=Decimal("0.0000198"),
        affiliate_margin=Decimal("0.00000402"),
        exchange_amount=None,
        payout_rounding_remainder=Decimal(0),
    )
    booking = book_completed(completed, Decimal("0.3"), "BTC")
    return exchange_row(
        store.SETTLED,
        order_id="dc99569f",
        quote=QUOTE,
        # As the orchestrator records a completed order.
        settlement={"order_status": "completed", **booking.amounts(), "exact": booking.exact},
        ledger_status=201,
        ledger_body={"status": "settled", "entry_id": "d7364557"},
    )


@pytest.mark.parametrize(
    "row",
    [
        exchange_row(store.RESERVING, quote=QUOTE),
        settled_row(),
        exchange_row(
            store.VOIDED,
            order_id="o-2",
            quote=QUOTE,
            settlement={"order_status": "refunded", "reason": "order refunded: r"},
            ledger_status=200,
            ledger_body={"status": "voided"},
            detail="order refunded: r",
        ),
        exchange_row(store.VOIDING, settlement={"reason": "no order at Swapgate"}),
    ],
    ids=lambda row: row.state,
)
def test_an_exchange_as_the_api_shows_it_conforms_to_the_operator_description(
    operator_api: OpenAPI, row: store.ExchangeRow
) -> None:
    request = MockRequest(
        "http://operator.example", "get", "/v1/customers/ben/exchanges/ex-1", headers=SECRET_HEADER
    )
    operator_api.validate_request(request)
    response = MockResponse(orjson.dumps(row.view()), content_type="application/json")
    operator_api.validate_response(request, response)
