"""Verification of Quadcode's tokens and the caller-IP policy, with an injected clock."""

from __future__ import annotations

import ipaddress
import math

import pytest

from hand_signed_tokens import hand_signed_token
from wallet_platform.callback_auth import (
    AuthError,
    IpPolicy,
    TokenVerifier,
    bearer_token,
    load_public_keys,
    parse_address,
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
    assert policy.allowed(ip("10.1.2.3"))
    assert policy.allowed(ip("::ffff:10.1.2.3"))
    assert policy.allowed(ip("2001:db8::1"))
    assert not policy.allowed(ip("11.0.0.1"))
    assert parse_address("not-an-ip") is None


def test_forwarded_for_is_believed_only_from_trusted_proxies() -> None:
    policy = IpPolicy(["10.0.0.0/8"], trusted_proxies=["192.168.0.0/16"])
    assert policy.client_ip("8.8.8.8", ["10.0.0.1"]) == ip("8.8.8.8")
    assert policy.client_ip("192.168.1.1", ["10.0.0.1"]) == ip("10.0.0.1")
    # A client prepending a fake hop does not help: the right-most untrusted hop counts.
    assert policy.client_ip("192.168.1.1", ["10.0.0.1, 8.8.8.8"]) == ip("8.8.8.8")
    assert policy.client_ip("192.168.1.1", ["8.8.8.8, 10.0.0.1, 192.168.9.9"]) == ip("10.0.0.1")


# -- caller address: every X-Forwarded-For header, malformed hops, IPv6, the cache ---------------


def ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    address = parse_address(text)
    assert address is not None
    return address


PROXY = "127.0.0.1"


def behind_proxy(*allow: str) -> IpPolicy:
    return IpPolicy(allow, trusted_proxies=[f"{PROXY}/32", "192.168.0.0/16"])


def test_second_forwarded_for_header_counts() -> None:
    policy = behind_proxy("203.0.113.0/24")
    # The proxy appended 198.51.100.9 (the real caller) in a header of its own; the client had
    # sent 203.0.113.7, an allowed address, in the first.
    caller = policy.client_ip(PROXY, ["203.0.113.7", "198.51.100.9"])
    assert caller == ip("198.51.100.9")
    assert not policy.allowed(caller)
    # Two headers are one chain: the same as one header with both hops.
    assert caller == policy.client_ip(PROXY, ["203.0.113.7, 198.51.100.9"])


def test_headers_are_one_chain_in_order() -> None:
    policy = behind_proxy("10.0.0.0/8")
    headers = ["8.8.8.8", "10.0.0.1, 192.168.0.7", "192.168.0.8"]
    assert policy.client_ip(PROXY, headers) == ip("10.0.0.1")


@pytest.mark.parametrize(
    "headers",
    [
        ["10.0.0.1, not-an-ip"],
        ["10.0.0.1", "unknown"],
        ["10.0.0.1, 10.0.0.2:8080"],
        ["[2001:db8::1]"],
        ["10.0.0.1, 192.168.0.7 junk"],
        # Malformed left of a trusted hop: still at or right of the point where trust stops.
        ["10.0.0.1, 1.2.3, 192.168.0.7"],
        ["10.0.0.1, 1.2.3.4%eth0"],  # a zone id only exists on IPv6 addresses
    ],
)
def test_malformed_hop_where_trust_stops_refuses_the_request(headers: list[str]) -> None:
    assert behind_proxy("0.0.0.0/0", "::/0").client_ip(PROXY, headers) is None


def test_malformed_hop_left_of_the_caller_is_never_read() -> None:
    policy = behind_proxy("10.0.0.0/8")
    assert policy.client_ip(PROXY, ["junk, 10.0.0.1"]) == ip("10.0.0.1")
    assert policy.client_ip(PROXY, ["junk", "10.0.0.1, 192.168.0.7"]) == ip("10.0.0.1")


def test_empty_list_elements_are_skipped() -> None:
    policy = behind_proxy("10.0.0.0/8")
    assert policy.client_ip(PROXY, ["10.0.0.1, , ", ""]) == ip("10.0.0.1")
    assert policy.client_ip(PROXY, [" , "]) == ip(PROXY)


def test_only_trusted_hops_give_the_left_most() -> None:
    policy = behind_proxy("192.168.0.0/16")
    assert policy.client_ip(PROXY, ["192.168.0.5, 192.168.0.6"]) == ip("192.168.0.5")


def test_a_peer_without_an_address_is_refused() -> None:
    assert behind_proxy("0.0.0.0/0").client_ip("", ["10.0.0.1"]) is None


def test_ipv6_callers_and_proxies() -> None:
    policy = IpPolicy(["2001:db8::/32"], trusted_proxies=["fd00::/8"])
    caller = policy.client_ip("fd00::1", ["2001:db8::7, fd00::2"])
    assert caller == ip("2001:db8::7")
    assert policy.allowed(caller)
    assert policy.client_ip("fd00::1", ["2001:db9::7"]) == ip("2001:db9::7")
    assert not policy.allowed(ip("2001:db9::7"))


def test_ipv4_mapped_addresses_count_as_ipv4() -> None:
    policy = IpPolicy(["10.0.0.0/8"], trusted_proxies=["192.168.0.0/16"])
    # A dual-stack socket reports an IPv4 proxy in mapped form; it is still the trusted proxy.
    caller = policy.client_ip("::ffff:192.168.1.1", ["::ffff:10.1.2.3"])
    assert caller == ipaddress.IPv4Address("10.1.2.3")
    assert policy.allowed(caller)


def test_zone_ids_are_dropped_not_trusted() -> None:
    assert parse_address("fe80::1%eth0") == parse_address("fe80::1") == ip("fe80::1")
    assert str(ip("fe80::1%eth0")) == "fe80::1"
    policy = IpPolicy(["fe80::/10"], trusted_proxies=["fe80::1/128"])
    assert policy.client_ip("fe80::1%eth0", ["10.0.0.1"]) == ip("10.0.0.1")
    assert policy.client_ip("fe80::9%eth1", ["10.0.0.1"]) == ip("fe80::9")
    assert policy.allowed(ip("fe80::9%eth1"))


def test_the_allow_cache_is_bounded_and_keeps_answering() -> None:
    policy = IpPolicy(["10.0.0.0/8"], cache_size=16)
    addresses = [ipaddress.IPv4Address(f"10.0.{i // 256}.{i % 256}") for i in range(1000)]
    outside = [ipaddress.IPv4Address(f"11.0.{i // 256}.{i % 256}") for i in range(1000)]
    assert all(policy.allowed(a) for a in addresses)
    assert not any(policy.allowed(a) for a in outside)
    assert policy.cached_addresses == 16
    assert policy.allowed(addresses[0]) and not policy.allowed(outside[0])  # evicted, recomputed


def test_the_parsed_peer_cache_is_bounded_and_keeps_answering() -> None:
    policy = IpPolicy(["10.0.0.0/8"], ["10.9.0.0/16"], cache_size=16)
    peers = [f"10.0.{i // 256}.{i % 256}" for i in range(1000)]
    assert [policy.client_ip(p) for p in peers] == [ipaddress.IPv4Address(p) for p in peers]
    assert policy.client_ip("not an address") is None
    assert policy.cached_peers == 16
    # Evicted, parsed again; and a cached proxy peer still reads X-Forwarded-For every time.
    assert policy.client_ip(peers[0]) == ipaddress.IPv4Address(peers[0])
    assert policy.client_ip("10.9.0.1", ["10.0.0.7"]) == ipaddress.IPv4Address("10.0.0.7")
    assert policy.client_ip("10.9.0.1", ["10.0.0.8"]) == ipaddress.IPv4Address("10.0.0.8")
    assert policy.client_ip("10.9.0.1", ["junk"]) is None


# -- tokens: time claims and audience ------------------------------------------------------------


def test_a_hand_signed_token_verifies(key: QuadcodeKey) -> None:
    """The hand signer below makes tokens the verifier takes: the refusals are for the claims."""
    good = {"iss": "qc", "aud": "sandbox", "iat": int(T0), "exp": int(T0) + 300}
    assert code_of(verifier(Clock(), key), hand_signed_token(key.private_pem, good)) is None


@pytest.mark.parametrize("claim", ["iat", "exp"])
@pytest.mark.parametrize(
    "value",
    [
        math.nan,
        math.inf,
        -math.inf,
        T0 + 0.5,
        T0,  # a float, even a whole one
        True,
        "1800000000",
        None,
        -1,
        10**400,
    ],
    ids=repr,
)
def test_time_claims_must_be_whole_seconds(key: QuadcodeKey, claim: str, value: object) -> None:
    claims: dict[str, object] = {
        "iss": "qc",
        "aud": "sandbox",
        "iat": int(T0),
        "exp": int(T0) + 300,
    }
    claims[claim] = value
    v = verifier(Clock(), key)
    assert code_of(v, hand_signed_token(key.private_pem, claims)) == "invalid_token"
    # The refusal is not cached as a success: a second try is refused the same way.
    assert code_of(v, hand_signed_token(key.private_pem, claims)) == "invalid_token"


@pytest.mark.parametrize(
    ("aud", "code"),
    [
        ("sandbox", None),
        (["sandbox"], None),
        (["production", "sandbox"], "invalid_audience"),
        (["sandbox", "sandbox"], "invalid_audience"),
        ([], "invalid_audience"),
        ("production", "invalid_audience"),
        (["production"], "invalid_audience"),
        ("sandbox ", "invalid_audience"),
        ({"sandbox": True}, "invalid_audience"),
    ],
    ids=repr,
)
def test_audience_is_exactly_this_environment(
    key: QuadcodeKey, aud: object, code: str | None
) -> None:
    claims = {"iss": "qc", "aud": aud, "iat": int(T0), "exp": int(T0) + 300}
    assert code_of(verifier(Clock(), key), hand_signed_token(key.private_pem, claims)) == code
