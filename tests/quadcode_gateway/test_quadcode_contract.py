"""Recorded simulator traffic replayed through openapi-core against our description of the
gateway (docs/api/quadcode-gateway.yaml; ``python -m api_contract``, run by CI, keeps it in step
with Quadcode's own files).

Two recordings: what our client sends (requests and responses must both conform), and
hand-made invalid requests (only the simulator's answers must conform). Between them every
status the description gives the external-balance calls is produced at least once, 418 included:
that one is not in Quadcode's OpenAPI file but in its README's sequence diagram, on the two
session calls only.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from openapi_core import OpenAPI
from openapi_core.testing import MockRequest, MockResponse

from quadcode_gateway import (
    NewCustomer,
    QuadcodeError,
    QuadcodeGatewayClient,
    RetryPolicy,
    SessionRequest,
    TradingBalance,
    Visit,
)
from quadcode_harness import ClientFactory, SimulatorHooks

pytestmark = pytest.mark.integration

ANNA = NewCustomer(customer_id="anna-9", country_code="DE", ip="203.0.113.7", email="anna@ex.com")
SAM = NewCustomer(customer_id="sam-9", country_code="US", ip="198.51.100.9", email="sam@ex.us")
USD = TradingBalance(balance_id="1234_USD", currency_code="USD")
EUR_SAME_ID = TradingBalance(balance_id="1234_USD", currency_code="EUR")
JPY = TradingBalance(balance_id="5_JPY", currency_code="JPY")
DE = Visit(country_code="DE", ip="203.0.113.7", locale="de_DE", site_domain="trade.example.com")
US = Visit(country_code="US", ip="198.51.100.9", locale="en_US", site_domain="trade.example.com")
SESSION = SessionRequest(country_code="DE", ip="203.0.113.7", user_agent="bot/1", platform_id=3)
SESSION_US = SessionRequest(country_code="US", ip="198.51.100.9", user_agent="bot/1", platform_id=3)
PATHS = {
    "customers": "/v1/b2b-gateway/customers",
    "block": "/v1/b2b-gateway/customers/{customer_id}/block",
    "session": "/v1/b2b-gateway/customers/{customer_id}/session",
    "sessions": "/v1/b2b-gateway/customers/{customer_id}/sessions",
    "countries": "/v1/b2b-gateway/allowed-countries",
}
FORCED_422 = {
    "/customers": {"email": {"code": "invalid_email_format", "message": "Bad email."}},
    "/session": {"locale": {"code": "is_required", "message": "Required."}},
    "/sessions": {"platform_id": {"code": "is_required", "message": "Required."}},
}


@pytest.fixture(scope="module")
def api(gateway_description: Path) -> OpenAPI:
    return OpenAPI.from_file_path(str(gateway_description))


def as_request(exchange: dict[str, Any]) -> MockRequest:
    body = exchange["request_body"].encode()
    return MockRequest(
        "http://127.0.0.1",
        exchange["method"],
        exchange["path"],
        headers=exchange["request_headers"],
        data=body or None,
        content_type=exchange["request_headers"].get("Content-Type", "application/json"),
    )


def as_response(exchange: dict[str, Any]) -> MockResponse:
    return MockResponse(
        exchange["response_body"].encode(),
        status_code=exchange["status"],
        headers=exchange["response_headers"],
        content_type=exchange["response_content_type"],
    )


def replay(
    api: OpenAPI, exchanges: list[dict[str, Any]], *, requests_too: bool
) -> list[tuple[str, str, int, str]]:
    """Every contract violation found: (method, path, status, what)."""
    violations = []
    for exchange in exchanges:
        request = as_request(exchange)
        where = (exchange["method"], exchange["path"], exchange["status"])
        if requests_too:
            try:
                api.validate_request(request)
            except Exception as exc:
                violations.append((*where, f"request: {exc!r} {exc.__cause__!r}"))
        try:
            api.validate_response(request, as_response(exchange))
        except Exception as exc:
            violations.append((*where, f"response: {exc!r} {exc.__cause__!r}"))
    return violations


def template_of(path: str) -> str:
    for template in PATHS.values():
        prefix, _, suffix = template.partition("{customer_id}")
        if path == template or (
            suffix
            and path.startswith(prefix)
            and path.endswith(suffix)
            and "/" not in path[len(prefix) : len(path) - len(suffix)]
        ):
            return template
    raise AssertionError(f"unexpected path {path}")


async def attempt(call: Any) -> None:
    """Make the call; its documented error is the point, so swallow it."""
    with contextlib.suppress(QuadcodeError):
        await call


async def drive_client(sim: SimulatorHooks, make_client: ClientFactory) -> None:
    """Our client producing every status the contract documents (natural where possible)."""
    no_retry = RetryPolicy(max_attempts=1)
    client = make_client(retry=no_retry)
    await client.create_customer(ANNA)  # 201
    await attempt(client.create_customer(ANNA))  # 409
    await attempt(client.create_customer(SAM))  # 451 country
    await attempt(client.create_login_url("ghost", USD, DE))  # 404
    await client.create_login_url("anna-9", USD, DE)  # 201
    await attempt(client.create_login_url("anna-9", EUR_SAME_ID, DE))  # 409
    await attempt(client.create_login_url("anna-9", USD, US))  # 451 country
    await attempt(client.create_login_url("anna-9", JPY, DE))  # 451 currency
    await client.create_session("anna-9", SESSION)  # 201
    await attempt(client.create_session("ghost", SESSION))  # 404
    await attempt(client.create_session("anna-9", SESSION_US))  # 451
    await client.allowed_countries()  # 200
    await attempt(client.block_customer("ghost"))  # 404
    await client.block_customer("anna-9")  # 200
    await attempt(client.create_login_url("anna-9", USD, DE))  # 418
    await attempt(client.create_session("anna-9", SESSION))  # 418

    await client.create_customer(NewCustomer(**{**_fields(ANNA), "customer_id": "bo-9"}))
    operations = [
        ("/customers", lambda: client.create_customer(ANNA)),
        ("/session", lambda: client.create_login_url("bo-9", USD, DE)),
        ("/sessions", lambda: client.create_session("bo-9", SESSION)),
        ("/block", lambda: client.block_customer("bo-9")),
        ("/allowed-countries", lambda: client.allowed_countries()),
    ]
    for suffix, call in operations:
        statuses = [500]
        if suffix in FORCED_422:
            statuses += [400, 429]
        for status in statuses:
            await sim.force(
                status=status,
                path=suffix,
                method="POST" if suffix != "/allowed-countries" else "GET",
            )
            await attempt(call())
        if suffix in FORCED_422:
            await sim.force(status=422, body=FORCED_422[suffix], path=suffix)
            await attempt(call())

    stranger = make_client(
        signer=make_client.signer(private_key=make_client.keys.stranger_private), retry=no_retry
    )
    await _each_operation(stranger)  # 401 everywhere
    await sim.configure(allowed_ips=["10.0.0.0/8"])
    await _each_operation(client)  # 403 everywhere
    await sim.configure(allowed_ips=["127.0.0.0/8"])


def _fields(customer: NewCustomer) -> dict[str, Any]:
    return {
        "customer_id": customer.customer_id,
        "country_code": customer.country_code,
        "ip": customer.ip,
        "email": customer.email,
    }


async def _each_operation(client: QuadcodeGatewayClient) -> None:
    await attempt(client.create_customer(ANNA))
    await attempt(client.block_customer("bo-9"))
    await attempt(client.create_login_url("bo-9", USD, DE))
    await attempt(client.create_session("bo-9", SESSION))
    await attempt(client.allowed_countries())


@pytest.fixture(scope="module")
def documented(gateway_description: Path) -> set[tuple[str, str, int]]:
    """(method, path template, status) for every response of the external-balance calls."""
    spec = yaml.safe_load(gateway_description.read_text())
    return {
        (method.upper(), path, int(status))
        for path, item in spec["paths"].items()
        for method, operation in item.items()
        if method != "parameters" and "external balances" in operation["tags"]
        for status in operation["responses"]
    }


async def test_client_traffic_conforms_to_the_contract(
    api: OpenAPI,
    documented: set[tuple[str, str, int]],
    sim: SimulatorHooks,
    make_client: ClientFactory,
) -> None:
    await drive_client(sim, make_client)
    exchanges = await sim.exchanges()
    assert replay(api, exchanges, requests_too=True) == []
    blocked = {(e["path"], e["status"]) for e in exchanges if e["status"] == 418}
    assert blocked == {
        ("/v1/b2b-gateway/customers/anna-9/session", 418),
        ("/v1/b2b-gateway/customers/anna-9/sessions", 418),
    }
    # Every documented status of every operation was produced, and so checked above.
    produced = {(e["method"], template_of(e["path"]), e["status"]) for e in exchanges}
    assert sorted(documented - produced) == []


async def test_invalid_requests_get_documented_answers(
    api: OpenAPI, sim: SimulatorHooks, make_client: ClientFactory
) -> None:
    client = make_client()
    await client.create_customer(ANNA)
    await sim.reset()
    await client.create_customer(ANNA)
    token = make_client.signer().token()
    customers, session = PATHS["customers"], PATHS["session"].format(customer_id="anna-9")
    sessions = PATHS["sessions"].format(customer_id="anna-9")
    cases: list[tuple[str, bytes, int, dict[str, str]]] = [
        (customers, b"{not json", 400, {}),
        (customers, b"[1, 2]", 400, {}),
        (customers, orjson.dumps({**_fields(ANNA), "ip": 12345}), 400, {}),
        (
            customers,
            orjson.dumps({}),
            422,
            {
                "customer_id": "is_required",
                "country_code": "is_required",
                "ip": "is_required",
                "email": "is_required",
            },
        ),
        (
            customers,
            orjson.dumps(
                {
                    **_fields(ANNA),
                    "customer_id": "new",
                    "country_code": "ZZ",
                    "ip": "999.1.1.1",
                    "email": "nope",
                }
            ),
            422,
            {
                "country_code": "unknown_country_code",
                "ip": "invalid_ip_format",
                "email": "invalid_email_format",
            },
        ),
        (
            session,
            orjson.dumps({"balance_type": "real"}),
            422,
            {
                "balance_id": "is_required",
                "balance_currency_code": "is_required",
                "country_code": "is_required",
                "ip": "is_required",
                "locale": "is_required",
                "site_domain": "is_required",
            },
        ),
        (
            session,
            orjson.dumps(
                {
                    "balance_id": "1",
                    "balance_currency_code": "USD",
                    "balance_type": "gold",
                    "country_code": "DE",
                    "ip": "1.2.3.4",
                    "locale": "en_US",
                    "site_domain": "x.com",
                }
            ),
            400,
            {},
        ),
        (
            sessions,
            orjson.dumps({"country_code": "QQ", "ip": "x", "user_agent": "a"}),
            422,
            {
                "country_code": "unknown_country_code",
                "ip": "invalid_ip_format",
                "platform_id": "is_required",
            },
        ),
        (
            sessions,
            orjson.dumps(
                {"country_code": "DE", "ip": "1.2.3.4", "user_agent": "a", "platform_id": "7"}
            ),
            400,
            {},
        ),
    ]
    for path, body, expected_status, expected_codes in cases:
        status, answer = await sim.raw("POST", path, body=body, token=token)
        assert status == expected_status, (path, body, answer)
        if expected_codes:
            codes = {name: entry["code"] for name, entry in orjson.loads(answer).items()}
            assert codes == expected_codes
    exchanges = await sim.exchanges()
    assert replay(api, exchanges, requests_too=False) == []


async def test_the_replay_really_checks(
    api: OpenAPI, sim: SimulatorHooks, make_client: ClientFactory
) -> None:
    # Negative controls: a tampered answer and a tampered request are both caught.
    client = make_client()
    await client.create_customer(ANNA)
    await attempt(client.create_login_url("anna-9", USD, US))
    exchanges = await sim.exchanges()
    assert [(e["path"], e["status"]) for e in exchanges] == [
        (PATHS["customers"], 201),
        (PATHS["session"].format(customer_id="anna-9"), 451),
    ]
    created, restricted = exchanges
    tampered_answer = {**restricted, "response_body": '{"error": "because", "message": "no"}'}
    tampered_request = {**created, "request_body": orjson.dumps({"customer_id": "x"}).decode()}
    tampered_success = {**restricted, "status": 201, "response_body": '{"link": "x"}'}
    assert replay(api, [restricted], requests_too=True) == []
    assert len(replay(api, [tampered_answer], requests_too=False)) == 1
    assert len(replay(api, [tampered_request], requests_too=True)) == 1
    assert len(replay(api, [tampered_success], requests_too=False)) == 1
