"""Every authentication failure of Quadcode's callbacks, against the running edge: 403 with a JSON
error code, and nothing written."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import math
import time
import uuid
from collections.abc import AsyncIterator

import jwt
import orjson
import pytest
from multidict import CIMultiDict

from hand_signed_tokens import hand_signed_token
from ledger_core.errors import error_body
from wallet_clients import Answer, Operator, Wallet
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

    def bearer(token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

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
        # Python's JSON reader takes NaN; PyJWT will not write it, so the token is signed by hand.
        "nan_iat": (
            bearer(hand_signed_token(key.private_pem, claims(iat=math.nan))),
            "invalid_token",
        ),
        "infinite_exp": (
            bearer(hand_signed_token(key.private_pem, claims(exp=math.inf))),
            "invalid_token",
        ),
        "audience_of_two_environments": (
            bearer(hand_signed_token(key.private_pem, claims(aud=["production", "sandbox"]))),
            "invalid_audience",
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


# -- behind a trusted proxy: X-Forwarded-For ----------------------------------------------------


@pytest.fixture(scope="module")
async def proxied_edge(stack: Stack) -> AsyncIterator[Service]:
    """An edge behind a proxy at 127.0.0.1 (the tests play the proxy), allowing 10.0.0.0/8 and
    2001:db8::/32."""
    async with extra_edge(
        stack,
        3,
        WALLET_ALLOWED_IPS="10.0.0.0/8,2001:db8::/32",
        WALLET_EDGE_TRUSTED_PROXIES="127.0.0.1/32",
    ) as edge:
        yield edge


async def credit_forwarded_for(
    wallet: Wallet, edge: Service, customer: str, balance: str, *forwarded_for: str
) -> Answer:
    """A 1.00 credit with one X-Forwarded-For header per value, in order."""
    headers = CIMultiDict([("Authorization", f"Bearer {wallet.default_token}")])
    for value in forwarded_for:
        headers.add("X-Forwarded-For", value)
    body = {
        "request_id": uuid.uuid4().hex,
        "amount": "1.00",
        "currency_code": "USD",
        "comment": "x",
    }
    url = f"{edge.url}/v1/customers/{customer}/balances/{balance}/credit"
    async with wallet.http.post(url, data=orjson.dumps(body), headers=headers) as resp:
        return Answer(resp.status, await resp.read())


REFUSED = error_body("ip_not_allowed")  # the fixed body: nothing of the request in it


async def test_forwarded_for_counts_only_from_a_trusted_proxy(
    proxied_edge: Service, operator: Operator, wallet: Wallet
) -> None:
    customer, balance = await operator.customer_with_balance("USD", "10.00")

    allowed = await credit_forwarded_for(wallet, proxied_edge, customer, balance, "10.9.9.9")
    outside = await credit_forwarded_for(wallet, proxied_edge, customer, balance, "192.0.2.1")

    assert allowed.status == 201
    assert (outside.status, outside.body) == (403, REFUSED)
    assert (await wallet.read_eventually(customer, balance, "11.00")).json["amount"] == "11.00"


async def test_second_forwarded_for_header_counts(
    proxied_edge: Service, operator: Operator, wallet: Wallet
) -> None:
    customer, balance = await operator.customer_with_balance("USD", "10.00")

    # The client sent an allowed address; the proxy appended the real one in a second header.
    spoofed = await credit_forwarded_for(
        wallet, proxied_edge, customer, balance, "10.9.9.9", "192.0.2.1"
    )
    # The other way round the right-most hop is allowed: the headers are read as one chain.
    chained = await credit_forwarded_for(
        wallet, proxied_edge, customer, balance, "192.0.2.1", "10.9.9.9"
    )

    assert (spoofed.status, spoofed.body) == (403, REFUSED)
    assert chained.status == 201
    assert (await wallet.read_eventually(customer, balance, "11.00")).json["amount"] == "11.00"


@pytest.mark.parametrize(
    "chain",
    [
        ("10.9.9.9, <script>alert(1)</script>",),
        ("10.9.9.9", "unknown"),
        ("10.9.9.9, 10.9.9.10:4711",),
        ("10.9.9.9", "[2001:db8::7]"),
        ("10.9.9.9", "x" * 4000),
    ],
    ids=["markup", "unknown", "port", "brackets", "long"],
)
async def test_malformed_forwarded_for_hop_is_refused_without_echo(
    chain: tuple[str, ...], proxied_edge: Service, operator: Operator, wallet: Wallet
) -> None:
    customer, balance = await operator.customer_with_balance("USD", "10.00")

    answer = await credit_forwarded_for(wallet, proxied_edge, customer, balance, *chain)

    assert (answer.status, answer.body) == (403, REFUSED)
    assert (await wallet.read_eventually(customer, balance, "10.00")).json["amount"] == "10.00"


async def test_ipv6_and_ipv4_mapped_callers_behind_the_proxy(
    proxied_edge: Service, operator: Operator, wallet: Wallet
) -> None:
    customer, balance = await operator.customer_with_balance("USD", "10.00")
    answers = {
        hop: await credit_forwarded_for(wallet, proxied_edge, customer, balance, hop)
        for hop in (
            "2001:db8::7",
            "::ffff:10.9.9.9",
            "2001:db9::7",
            "::ffff:192.0.2.1",
            "fe80::1%eth0",
        )
    }

    assert {hop: a.status for hop, a in answers.items()} == {
        "2001:db8::7": 201,
        "::ffff:10.9.9.9": 201,
        "2001:db9::7": 403,
        "::ffff:192.0.2.1": 403,
        "fe80::1%eth0": 403,
    }
    assert all(a.body == REFUSED for a in answers.values() if a.status == 403)
    assert (await wallet.read_eventually(customer, balance, "12.00")).json["amount"] == "12.00"
