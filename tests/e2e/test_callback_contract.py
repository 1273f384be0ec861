"""The callback contract, checked with openapi-core against our own description of it,
docs/api/wallet-callbacks.yaml: real requests to the running edge, validated with their real
responses, for every status the description gives (503 aside: it needs the ledger to fail).

The description has Quadcode's paths, bodies and success shapes
(``python -m api_contract``, run by CI, compares it with Quadcode's file), and adds our error bodies: each status names the codes it may carry, so an error body
with another code fails here too."""

from __future__ import annotations

import orjson
import pytest
from openapi_core import OpenAPI
from openapi_core.testing import MockRequest, MockResponse

from api_contract import WALLET_CALLBACKS
from wallet_clients import Operator, Wallet

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def api() -> OpenAPI:
    return OpenAPI.from_file_path(str(WALLET_CALLBACKS))


async def exchange(
    wallet: Wallet, method: str, path: str, body: dict[str, object] | None, headers: dict[str, str]
) -> tuple[MockRequest, MockResponse, int]:
    data = orjson.dumps(body) if body is not None else None
    async with wallet.http.request(method, wallet.base_url + path, data=data, headers=headers) as r:
        payload = await r.read()
        response = MockResponse(payload, status_code=r.status, content_type=r.content_type)
        status = r.status
    request = MockRequest(
        "http://wallet.example",
        method.lower(),
        path,
        headers=headers,
        data=data,
        content_type="application/json",
    )
    return request, response, status


async def test_every_described_status_conforms_to_the_callback_description(
    api: OpenAPI, operator: Operator, wallet: Wallet
) -> None:
    customer, balance = await operator.customer_with_balance("USD", "10.00")
    blocked, blocked_balance = await operator.customer_with_balance("USD", "10.00")
    await operator.block(blocked)
    await wallet.read_eventually(customer, balance, "10.00")
    good = wallet.headers()
    base = f"/v1/customers/{customer}/balances/{balance}"
    cases = [
        (
            "post",
            base + "/debit",
            {"request_id": "k1", "amount": "1.50", "currency_code": "USD", "comment": "o"},
            good,
            201,
        ),
        (
            "post",
            base + "/credit",
            {"request_id": "k2", "amount": "3.00", "currency_code": "USD", "comment": "c"},
            good,
            201,
        ),
        ("get", base, None, good, 200),
        (
            "post",
            base + "/debit",
            {"request_id": "k3", "amount": "1.001", "currency_code": "USD", "comment": "o"},
            good,
            400,
        ),
        (
            "post",
            base + "/debit",
            {"request_id": "k4", "amount": "999.00", "currency_code": "USD", "comment": "o"},
            good,
            402,
        ),
        (
            "post",
            base + "/debit",
            {"request_id": "k1", "amount": "1.60", "currency_code": "USD", "comment": "o"},
            good,
            409,
        ),
        ("get", f"/v1/customers/{customer}/balances/{'b' * 200}", None, good, 400),
        (
            "post",
            base + "/debit",
            {"request_id": "k5", "amount": "1.00", "currency_code": "USD", "comment": "o"},
            {"Authorization": "Bearer nope"},
            403,
        ),
        ("get", base, None, {}, 403),
        (
            "post",
            f"/v1/customers/{customer}/balances/nope/debit",
            {"request_id": "k6", "amount": "1.00", "currency_code": "USD", "comment": "o"},
            good,
            404,
        ),
        ("get", f"/v1/customers/{customer}/balances/nope", None, good, 404),
        (
            "post",
            f"/v1/customers/{blocked}/balances/{blocked_balance}/credit",
            {"request_id": "k7", "amount": "1.00", "currency_code": "USD", "comment": "o"},
            good,
            451,
        ),
    ]
    seen = set()
    for method, path, body, headers, expected in cases:
        request, response, status = await exchange(wallet, method, path, body, headers)
        if status == 451 and method == "get":
            continue
        assert status == expected, (method, path, status, response.data)
        if status < 400:
            api.validate_request(request)
        api.validate_response(request, response)
        assert orjson.loads(response.data)  # every answer, errors included, is a JSON body
        seen.add((method, status))
    for _ in range(100):  # the blocked customer's GET, once the projection saw the block
        request, response, status = await exchange(
            wallet, "get", f"/v1/customers/{blocked}/balances/{blocked_balance}", None, good
        )
        if status == 451:
            api.validate_response(request, response)
            seen.add(("get", 451))
            break
    assert seen == {
        ("post", 201),
        ("get", 200),
        ("post", 400),
        ("post", 402),
        ("post", 409),
        ("get", 400),
        ("post", 403),
        ("get", 403),
        ("post", 404),
        ("get", 404),
        ("post", 451),
        ("get", 451),
    }


def test_contract_validation_rejects_a_wrong_success_body(api: OpenAPI) -> None:
    """The check above can fail: a 201 without balance_current_amount does not conform."""
    request = MockRequest(
        "http://wallet.example",
        "post",
        "/v1/customers/c/balances/b/debit",
        data=orjson.dumps(
            {"request_id": "r", "amount": "1", "currency_code": "USD", "comment": "x"}
        ),
        content_type="application/json",
    )
    response = MockResponse(
        orjson.dumps(
            {"customer_id": "c", "balance_id": "b", "amount": "1", "currency_code": "USD"}
        ),
        status_code=201,
        content_type="application/json",
    )
    with pytest.raises(Exception, match=r"(?i)valid|required"):
        api.validate_response(request, response)


def test_contract_validation_rejects_an_error_code_the_status_does_not_carry(api: OpenAPI) -> None:
    """Error bodies are checked too: a 402 must be insufficient_funds, not another code."""
    request = MockRequest(
        "http://wallet.example",
        "post",
        "/v1/customers/c/balances/b/debit",
        data=orjson.dumps(
            {"request_id": "r", "amount": "1", "currency_code": "USD", "comment": "x"}
        ),
        content_type="application/json",
    )
    right = {"error": "insufficient_funds", "message": "m"}
    api.validate_response(
        request, MockResponse(orjson.dumps(right), status_code=402, content_type="application/json")
    )
    wrong = MockResponse(
        orjson.dumps({**right, "error": "customer_blocked"}),
        status_code=402,
        content_type="application/json",
    )
    with pytest.raises(Exception, match=r"(?i)valid"):
        api.validate_response(request, wrong)
