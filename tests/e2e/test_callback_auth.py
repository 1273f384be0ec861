"""Every authentication failure of Quadcode's callbacks, against the running edge: 403 with a JSON
error code, and nothing written."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import time
from collections.abc import AsyncIterator

import jwt
import orjson
import pytest

from wallet_clients import Operator, Wallet
from wallet_stack import QuadcodeKey, Service, Stack, wait_ready

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
async def funded(operator: Operator) -> tuple[str, str]:
    return await operator.customer_with_balance("USD", "10.00")


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned_token(header: dict[str, object], claims: dict[str, object]) -> str:
    return f"{b64(orjson.dumps(header))}.{b64(orjson.dumps(claims))}."


def claims(**overrides: object) -> dict[str, object]:
    now = int(time.time())
    base: dict[str, object] = {"iss": "qc", "aud": "sandbox", "iat": now, "exp": now + 300}
    base.update(overrides)
    return base


def cases(key: QuadcodeKey) -> dict[str, tuple[dict[str, str], str]]:
    now = time.time()
    other = QuadcodeKey.generate()
    # The classic key-confusion attack: HS256 signed with the (public) ES256 key as the secret.
    signing_input = (
        f"{b64(orjson.dumps({'alg': 'HS256', 'typ': 'JWT'}))}.{b64(orjson.dumps(claims()))}"
    )
    mac = hmac.new(key.public_pem, signing_input.encode(), hashlib.sha256).digest()
    hs256 = f"{signing_input}.{b64(mac)}"
    bearer = lambda t: {"Authorization": f"Bearer {t}"}  # noqa: E731
    return {
        "expired": (bearer(key.token(iat=now - 700, lifetime=600)), "token_expired"),
        "not_yet_valid": (bearer(key.token(iat=now + 300, lifetime=300)), "token_not_yet_valid"),
        "lifetime_over_600s": (bearer(key.token(lifetime=601)), "token_lifetime_too_long"),
        "wrong_issuer": (bearer(key.token(iss="someone")), "invalid_issuer"),
        "wrong_audience": (bearer(key.token(aud="production")), "invalid_audience"),
        "wrong_key": (bearer(other.token()), "invalid_token"),
        "alg_none": (
            bearer(unsigned_token({"alg": "none", "typ": "JWT"}, claims())),
            "invalid_token",
        ),
        "hs256_with_public_key": (bearer(hs256), "invalid_token"),
        "malformed": (bearer("not.a.jwt"), "invalid_token"),
        "missing_iat": (
            bearer(
                jwt.encode(
                    {k: v for k, v in claims().items() if k != "iat"},
                    key.private_pem,
                    algorithm="ES256",
                )
            ),
            "invalid_token",
        ),
        "missing_header": ({}, "missing_token"),
        "basic_auth": ({"Authorization": "Basic dXNlcjpwYXNz"}, "missing_token"),
    }


CASES = list(cases(QuadcodeKey.generate()))


@pytest.mark.parametrize("case", CASES)
async def test_bad_token_is_403_and_writes_nothing(
    case: str, wallet: Wallet, funded: tuple[str, str], quadcode_key: QuadcodeKey
) -> None:
    headers, code = cases(quadcode_key)[case]
    customer, balance = funded

    debit = await wallet.post(
        "debit",
        customer,
        balance,
        {"request_id": f"auth-{case}", "amount": "1.00", "currency_code": "USD", "comment": "x"},
        headers=headers,
    )
    read = await wallet.get(customer, balance, headers=headers)

    assert (debit.status, debit.json["error"]) == (403, code)
    assert (read.status, read.json["error"]) == (403, code)
    assert (await wallet.read_eventually(customer, balance, "10.00")).json["amount"] == "10.00"


@contextlib.asynccontextmanager
async def extra_edge(stack: Stack, reply_partition: int, **env: str) -> AsyncIterator[Service]:
    """A second edge on the same stack with settings of its own, stopped afterwards."""
    edge = stack.add(
        "edge",
        "WALLET_EDGE_PORT",
        WALLET_PROJECTION_URL=stack.projection.url,
        WALLET_EDGE_REPLY_PARTITION=str(reply_partition),
        **env,
    )
    edge.start()
    try:
        await wait_ready(edge)
        yield edge
    finally:
        edge.stop()


async def test_token_from_a_rotated_second_key_is_accepted(
    stack: Stack, wallet: Wallet, funded: tuple[str, str], quadcode_key: QuadcodeKey
) -> None:
    second = QuadcodeKey.generate()
    async with extra_edge(
        stack,
        1,
        WALLET_QUADCODE_PUBLIC_KEY_FILES="",
        WALLET_QUADCODE_PUBLIC_KEYS=(quadcode_key.public_pem + second.public_pem).decode(),
    ) as edge:
        customer, balance = funded
        for key in (quadcode_key, second):
            answer = await wallet.post(
                "credit",
                customer,
                balance,
                {
                    "request_id": f"rot-{id(key)}",
                    "amount": "1.00",
                    "currency_code": "USD",
                    "comment": "x",
                },
                headers={"Authorization": f"Bearer {key.token()}"},
                base_url=edge.url,
            )
            assert answer.status == 201
        await wallet.credit(customer, balance, "0.01")


async def test_caller_outside_the_allowlist_is_403_even_with_a_spoofed_forwarded_for(
    stack: Stack, wallet: Wallet, funded: tuple[str, str]
) -> None:
    async with extra_edge(stack, 2, WALLET_ALLOWED_IPS="10.0.0.0/8,2001:db8::/32") as edge:
        customer, balance = funded
        body = {"request_id": "ip-1", "amount": "1.00", "currency_code": "USD", "comment": "x"}
        plain = await wallet.post("debit", customer, balance, body, base_url=edge.url)
        spoofed = await wallet.post(
            "debit",
            customer,
            balance,
            body,
            base_url=edge.url,
            headers=wallet.headers(**{"X-Forwarded-For": "10.1.2.3"}),
        )
        assert (plain.status, plain.json["error"]) == (403, "ip_not_allowed")
        assert (spoofed.status, spoofed.json["error"]) == (403, "ip_not_allowed")


async def test_forwarded_for_counts_only_from_a_trusted_proxy(
    stack: Stack, wallet: Wallet, funded: tuple[str, str]
) -> None:
    async with extra_edge(
        stack, 3, WALLET_ALLOWED_IPS="10.0.0.0/8", WALLET_EDGE_TRUSTED_PROXIES="127.0.0.1/32"
    ) as edge:
        customer, balance = funded
        body = {"request_id": "ip-2", "amount": "1.00", "currency_code": "USD", "comment": "x"}
        allowed = await wallet.post(
            "credit",
            customer,
            balance,
            body,
            base_url=edge.url,
            headers=wallet.headers(**{"X-Forwarded-For": "10.9.9.9"}),
        )
        outside = await wallet.post(
            "credit",
            customer,
            balance,
            body,
            base_url=edge.url,
            headers=wallet.headers(**{"X-Forwarded-For": "192.0.2.1"}),
        )
        assert allowed.status == 201
        assert (outside.status, outside.json["error"]) == (403, "ip_not_allowed")
