"""Operator API keys, the pure parts: the signature check (with Swapgate's published example
code), the timestamp window, header forms, the role table, key settings and bodies, master key
rotation, and the audit log's canonical encoding."""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from base64 import b64decode, b64encode
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from cryptography.fernet import Fernet
from multidict import CIMultiDict, CIMultiDictProxy

from ledger_core.requests import RequestError
from operator_api import audit
from operator_api.api_keys import (
    KeySettings,
    new_key_material,
    parse_key_changes,
    parse_new_key,
    role_allows,
)
from operator_api.auth import RefusalBudget
from operator_api.master_keys import MasterKeyError, MasterKeys, parse_master_keys
from operator_api.signatures import (
    Refused,
    SignedHeaders,
    read_signed_headers,
    replay_digest,
    signature_matches,
    within_window,
)
from swapgate.errors import MarkupOutOfBounds
from swapgate.signing import sign
from wallet_platform.config import ConfigError

pytestmark = pytest.mark.unit

# The key pair printed in Swapgate's API v2 documentation (the seed), and its example body.
SEED_PUBLIC = "ZgzycV6Sf78BZKuyIAiz+0Bor002+0/rx1gLKsmYCsY="
SEED_SECRET = "a482a8e3a3ff9aeadefb11d3d8c11253e7e8412e05ef2b8599016cc87a64b7d6"


def swapgate_example_sign(request_body: object, timestamp: int, public: str, private: str) -> str:
    """Swapgate's published ``signRequest``, line for line:

        const data = encoder.encode(timestamp + JSON.stringify(requestBody) + PUBKEY);
        const hmac = createHmac('sha256', PRIVKEY);
        return hmac.update(data).digest('base64');

    ``JSON.stringify`` of a plain object is compact JSON in insertion order."""
    stringified = json.dumps(request_body, separators=(",", ":"), ensure_ascii=False)
    data = (str(timestamp) + stringified + public).encode("utf-8")
    return b64encode(hmac.new(private.encode("utf-8"), data, hashlib.sha256).digest()).decode()


def headers(**values: str) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict(values))


def signed(body: bytes, timestamp: int = 1_722_866_058_427) -> SignedHeaders:
    return SignedHeaders(SEED_PUBLIC, timestamp, sign(SEED_SECRET, timestamp, body, SEED_PUBLIC))


def test_a_signature_from_swapgates_example_code_verifies() -> None:
    body = {"myKey": "myValue"}
    timestamp = 1_722_866_058_427
    signature = swapgate_example_sign(body, timestamp, SEED_PUBLIC, SEED_SECRET)
    raw = json.dumps(body, separators=(",", ":")).encode()
    assert signature_matches(SEED_SECRET, SignedHeaders(SEED_PUBLIC, timestamp, signature), raw)


def test_the_readmes_worked_example() -> None:
    timestamp, body = 1_722_866_058_427, {"myKey": "myValue"}
    expected = "Q+aWe5uqfRbsPKvPqq8flwWHWqeQG4JmRJzS8QhyzbU="
    assert swapgate_example_sign(body, timestamp, SEED_PUBLIC, SEED_SECRET) == expected
    assert sign(SEED_SECRET, timestamp, b'{"myKey":"myValue"}', SEED_PUBLIC) == expected


def test_a_body_other_than_the_signed_bytes_does_not_verify() -> None:
    raw = b'{"myKey":"myValue"}'
    assert signature_matches(SEED_SECRET, signed(raw), raw)
    # The same JSON with a space: equal when parsed, but not the bytes that were signed.
    assert not signature_matches(SEED_SECRET, signed(raw), b'{"myKey": "myValue"}')
    assert not signature_matches(SEED_SECRET, signed(raw), b'{"myKey":"myValue2"}')


def test_another_timestamp_or_secret_does_not_verify() -> None:
    raw = b"{}"
    good = signed(raw)
    assert not signature_matches(
        SEED_SECRET, SignedHeaders(SEED_PUBLIC, good.timestamp_ms + 1, good.signature), raw
    )
    assert not signature_matches("0" * 64, good, raw)


def test_a_get_signs_the_empty_body() -> None:
    assert signature_matches(SEED_SECRET, signed(b""), b"")


@pytest.mark.parametrize(
    ("now", "verdict"),
    [(1_000_000, True), (1_030_000, True), (970_000, True), (1_030_001, False), (969_999, False)],
)
def test_the_timestamp_window_is_inclusive_and_both_ways(now: int, verdict: bool) -> None:
    assert within_window(1_000_000, now, 30_000) is verdict


def test_well_formed_headers_are_read() -> None:
    read = read_signed_headers(
        headers(
            **{"x-api-public-key": SEED_PUBLIC, "x-api-timestamp": "17", "x-api-signature": "YWJj"}
        )
    )
    assert read == SignedHeaders(SEED_PUBLIC, 17, "YWJj")


@pytest.mark.parametrize(
    "values",
    [
        {},
        {"x-api-timestamp": "17", "x-api-signature": "YWJj"},
        {"x-api-public-key": SEED_PUBLIC, "x-api-signature": "YWJj"},
        {"x-api-public-key": SEED_PUBLIC, "x-api-timestamp": "17"},
        {"x-api-public-key": SEED_PUBLIC, "x-api-timestamp": "-17", "x-api-signature": "YWJj"},
        {"x-api-public-key": SEED_PUBLIC, "x-api-timestamp": "1.5", "x-api-signature": "YWJj"},
        {"x-api-public-key": SEED_PUBLIC, "x-api-timestamp": "١٢", "x-api-signature": "YWJj"},
        {"x-api-public-key": SEED_PUBLIC, "x-api-timestamp": "9" * 17, "x-api-signature": "YWJj"},
        {"x-api-public-key": "", "x-api-timestamp": "17", "x-api-signature": "YWJj"},
        {"x-api-public-key": "a b", "x-api-timestamp": "17", "x-api-signature": "YWJj"},
        {"x-api-public-key": SEED_PUBLIC, "x-api-timestamp": "17", "x-api-signature": "x" * 129},
    ],
)
def test_missing_or_malformed_headers_are_refused(values: dict[str, str]) -> None:
    with pytest.raises(Refused) as refused:
        read_signed_headers(headers(**values))
    assert refused.value.code == "malformed_signature_headers"


def test_a_repeated_header_is_refused() -> None:
    multi = CIMultiDict(
        [("x-api-public-key", SEED_PUBLIC), ("x-api-public-key", "other"),
         ("x-api-timestamp", "17"), ("x-api-signature", "YWJj")]
    )  # fmt: skip
    with pytest.raises(Refused, match="x-api-public-key"):
        read_signed_headers(CIMultiDictProxy(multi))


def test_the_replay_digest_names_one_signature_of_one_key() -> None:
    a, b = signed(b"{}"), signed(b"{}", timestamp=1)
    assert replay_digest(a) == replay_digest(signed(b"{}"))
    assert replay_digest(a) != replay_digest(b)
    assert len(replay_digest(a)) == 32


@pytest.mark.parametrize(
    ("role", "method", "path", "allowed"),
    [
        ("read_only", "GET", "/v1/customers/c1", True),
        ("read_only", "POST", "/v1/customers", False),
        ("read_only", "DELETE", "/v1/customers/c1", False),
        ("read_only", "GET", "/v1/api-keys", False),
        ("operator", "POST", "/v1/customers", True),
        ("operator", "PATCH", "/v1/customers/c1", True),
        ("operator", "GET", "/v1/api-keys", False),
        ("operator", "POST", "/v1/api-keys", False),
        ("operator", "PATCH", "/v1/api-keys/x", False),
        ("operator", "GET", "/v1/api-keysx", True),
        ("admin", "POST", "/v1/api-keys", True),
        ("admin", "PATCH", "/v1/api-keys/x", True),
        ("admin", "POST", "/v1/customers", True),
        ("nobody", "GET", "/v1/customers/c1", False),
    ],
)
def test_the_role_table(role: str, method: str, path: str, allowed: bool) -> None:
    assert role_allows(role, method, path) is allowed


def test_key_settings_are_checked() -> None:
    assert KeySettings.parse({}) == KeySettings("read_only")
    parsed = KeySettings.parse({"role": "operator", "minMarkup": "0.1", "maxMarkup": "0.5"})
    assert parsed.to_json() == {"role": "operator", "minMarkup": "0.1", "maxMarkup": "0.5"}
    for bad in (
        {"role": "root"},
        {"minMarkup": "0.5", "maxMarkup": "0.1"},
        {"minMarkup": 0.5},
        {"maxMarkup": "100"},
        {"colour": "red"},
        [],
    ):
        with pytest.raises(RequestError) as exc:
            KeySettings.parse(bad)
        assert exc.value.code == "invalid_field", bad


def test_a_markup_outside_the_keys_bounds_is_refused() -> None:
    settings = KeySettings.parse({"role": "operator", "minMarkup": "0.1", "maxMarkup": "0.5"})
    assert settings.markup_policy(Decimal("0.3")).default == Decimal("0.3")
    with pytest.raises(MarkupOutOfBounds):
        settings.markup_policy(Decimal("0.6"))
    KeySettings("operator").markup_policy(Decimal("0.6"))  # no bounds: any markup


def test_a_new_key_body_is_checked() -> None:
    new = parse_new_key(b'{"name":"ops","whiteListIp":["127.0.0.1","10.0.0.0/8","::1"]}')
    assert [str(n) for n in new.white_list] == ["127.0.0.1/32", "10.0.0.0/8", "::1/128"]
    assert new.is_active and new.settings.role == "read_only"
    for body, code in (
        (b"[]", "malformed_json"),
        (b"{", "malformed_json"),
        (b'{"whiteListIp":["127.0.0.1"]}', "invalid_field"),
        (b'{"name":"ops"}', "invalid_field"),
        (b'{"name":"ops","whiteListIp":[]}', "invalid_field"),
        (b'{"name":"ops","whiteListIp":["10.0.0.5/8"]}', "invalid_field"),
        (b'{"name":"ops","whiteListIp":["localhost"]}', "invalid_field"),
        (b'{"name":"ops","whiteListIp":["127.0.0.1"],"isActive":"yes"}', "invalid_field"),
        (b'{"name":"","whiteListIp":["127.0.0.1"]}', "invalid_field"),
        (b'{"name":"a\\u0000b","whiteListIp":["127.0.0.1"]}', "invalid_field"),
        (b'{"name":"ops","whiteListIp":["127.0.0.1"],"secretKey":"x"}', "invalid_field"),
    ):
        with pytest.raises(RequestError) as exc:
            parse_new_key(body)
        assert exc.value.code == code, body


def test_a_change_names_at_least_one_known_field() -> None:
    assert parse_key_changes(b'{"isActive":false}').is_active is False
    for body in (b"{}", b'{"publicKey":"x"}', b'{"isActive":null}'):
        with pytest.raises(RequestError):
            parse_key_changes(body)


def test_new_key_material_has_swapgates_formats() -> None:
    public, secret = new_key_material()
    assert len(b64decode(public, validate=True)) == 32
    assert len(bytes.fromhex(secret)) == 32
    assert new_key_material() != (public, secret)


def test_a_secret_encrypted_with_the_old_master_key_opens_after_rotation() -> None:
    old, new = Fernet.generate_key(), Fernet.generate_key()
    token = MasterKeys([old]).encrypt("the-secret")
    both = MasterKeys([new, old])
    assert both.decrypt(token) == "the-secret"
    rotated = both.rotate(token)
    assert MasterKeys([new]).decrypt(rotated) == "the-secret"
    with pytest.raises(MasterKeyError):
        MasterKeys([new]).decrypt(token)


def test_master_keys_are_read_from_lines_or_commas_and_checked() -> None:
    a, b = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    token = parse_master_keys(f"# new first\n{a}\n\n{b}\n", separator="\n", where="F").encrypt("s")
    assert MasterKeys([a.encode()]).decrypt(token) == "s"  # the first line encrypts
    assert parse_master_keys(f"{b}, {a}", separator=",", where="E").decrypt(token) == "s"
    with pytest.raises(ConfigError, match="WALLET_X") as exc:
        parse_master_keys("not-a-key", separator=",", where="WALLET_X")
    assert "not-a-key" not in str(exc.value)  # a key is never echoed
    with pytest.raises(ConfigError):
        parse_master_keys("# only a comment\n", separator="\n", where="F")


def record(**changes: object) -> audit.AuditRecord:
    fields: dict[str, object] = {
        "at": datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=UTC),
        "api_id": uuid.UUID(int=7),
        "method": "PATCH",
        "route": "/v1/api-keys/{api_id}",
        "path": "/v1/api-keys/00000000-0000-0000-0000-000000000007",
        "body_sha256": hashlib.sha256(b"{}").digest(),
        "status": 200,
        "outcome": "ok",
        "detail": {"changed": {"isActive": {"from": True, "to": False}}},
    }
    fields.update(changes)
    return audit.AuditRecord(**fields)  # type: ignore[arg-type]


def test_the_canonical_audit_encoding_is_sorted_compact_json() -> None:
    encoded = audit.canonical(3, record(), bytes(32))
    assert encoded.startswith(b'{"api_id":"00000000-0000-0000-0000-000000000007","at":')
    assert b'"at":"2025-01-02T03:04:05.678901Z"' in encoded
    assert b" " not in encoded
    # The same moment in another zone encodes the same.
    shifted = record(at=record().at.astimezone(timezone(timedelta(hours=3))))
    assert audit.canonical(3, shifted, bytes(32)) == encoded


@pytest.mark.parametrize(
    "change",
    [
        {"status": 403},
        {"outcome": "role_forbidden"},
        {"api_id": None},
        {"path": "/v1/api-keys/x"},
        {"body_sha256": bytes(32)},
        {"detail": {}},
        {"at": datetime(2025, 1, 2, 3, 4, 5, 678902, tzinfo=UTC)},
    ],
)
def test_every_field_is_covered_by_the_hash(change: dict[str, object]) -> None:
    assert audit.chain_hash(1, record(**change), bytes(32)) != audit.chain_hash(
        1, record(), bytes(32)
    )


def test_the_hash_chains_to_the_previous_one_and_the_position() -> None:
    base = audit.chain_hash(1, record(), bytes(32))
    assert audit.chain_hash(1, record(), b"\x01" * 32) != base
    assert audit.chain_hash(2, record(), bytes(32)) != base


def test_refusals_recorded_per_second_are_bounded() -> None:
    now = [0.0]
    budget = RefusalBudget(3, clock=lambda: now[0])
    assert [budget.take() for _ in range(5)] == [True, True, True, False, False]
    now[0] = 1.0
    assert [budget.take() for _ in range(4)] == [True, True, True, False]
