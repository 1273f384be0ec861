"""Verification of Quadcode's tokens and the caller-IP policy, with an injected clock."""

from __future__ import annotations

import pytest

from wallet_platform.callback_auth import (
    AuthError,
    IpPolicy,
    TokenVerifier,
    bearer_token,
    load_public_keys,
)
from wallet_stack import QuadcodeKey

pytestmark = pytest.mark.unit

T0 = 1_800_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def key() -> QuadcodeKey:
    return QuadcodeKey.generate()


def verifier(clock: Clock, *keys: QuadcodeKey) -> TokenVerifier:
    return TokenVerifier(
        load_public_keys(k.public_pem for k in keys), audience="sandbox", leeway=5, clock=clock
    )


def code_of(v: TokenVerifier, token: str) -> str | None:
    try:
        v.verify(token)
    except AuthError as exc:
        return exc.code
    return None


def test_a_cached_token_still_expires(key: QuadcodeKey) -> None:
    clock = Clock()
    v = verifier(clock, key)
    token = key.token(iat=T0, lifetime=600)
    assert code_of(v, token) is None
    clock.now = T0 + 605  # inside the leeway
    assert code_of(v, token) is None
    clock.now = T0 + 606
    assert code_of(v, token) == "token_expired"


def test_issued_in_the_future_is_refused_until_its_time(key: QuadcodeKey) -> None:
    clock = Clock()
    v = verifier(clock, key)
    token = key.token(iat=T0 + 60, lifetime=300)
    assert code_of(v, token) == "token_not_yet_valid"
    clock.now = T0 + 60
    assert code_of(v, token) is None


def test_lifetime_is_checked_exactly(key: QuadcodeKey) -> None:
    v = verifier(Clock(), key)
    assert code_of(v, key.token(iat=T0, lifetime=600)) is None
    assert code_of(v, key.token(iat=T0, lifetime=601)) == "token_lifetime_too_long"


def test_any_configured_key_verifies(key: QuadcodeKey) -> None:
    second = QuadcodeKey.generate()
    v = verifier(Clock(), key, second)
    assert code_of(v, second.token(iat=T0)) is None
    assert code_of(verifier(Clock(), key), second.token(iat=T0)) == "invalid_token"


def test_only_p256_keys_are_loaded() -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    rsa_pem = (
        rsa.generate_private_key(65537, 2048)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    p384 = (
        ec.generate_private_key(ec.SECP384R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    for pem in (rsa_pem, p384):
        with pytest.raises(ValueError):
            load_public_keys([pem])


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer ", "Token abc", "Basic x"])
def test_missing_or_foreign_authorization_header(header: str | None) -> None:
    with pytest.raises(AuthError) as info:
        bearer_token(header)
    assert info.value.code == "missing_token"


def test_ip_allowlist_covers_ipv4_ipv6_and_mapped_addresses() -> None:
    policy = IpPolicy(["10.0.0.0/8", "2001:db8::/32"])
    assert policy.allowed("10.1.2.3")
    assert policy.allowed("::ffff:10.1.2.3")
    assert policy.allowed("2001:db8::1")
    assert not policy.allowed("11.0.0.1")
    assert not policy.allowed("not-an-ip")


def test_forwarded_for_is_believed_only_from_trusted_proxies() -> None:
    policy = IpPolicy(["10.0.0.0/8"], trusted_proxies=["192.168.0.0/16"])
    assert policy.client_ip("8.8.8.8", "10.0.0.1") == "8.8.8.8"
    assert policy.client_ip("192.168.1.1", "10.0.0.1") == "10.0.0.1"
    # A client prepending a fake hop does not help: the right-most untrusted hop counts.
    assert policy.client_ip("192.168.1.1", "10.0.0.1, 8.8.8.8") == "8.8.8.8"
    assert policy.client_ip("192.168.1.1", "8.8.8.8, 10.0.0.1, 192.168.9.9") == "10.0.0.1"
