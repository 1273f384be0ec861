"""The simulator checks our JWTs by Quadcode's rules: ES256, iss, aud, iat/exp, <= 10 minutes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jwt
import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from quadcode_gateway.tokens import load_private_key, load_public_key
from quadcode_harness import AUDIENCE, ISSUER, Keys, SimulatorHooks
from simulators.quadcode.auth import ClientTokenVerifier, TokenRejected

NOW = 1_700_000_000


def sign(keys: Keys, claims: dict[str, Any], *, key_path: Path | None = None) -> str:
    return jwt.encode(claims, load_private_key(key_path or keys.ours_private), algorithm="ES256")


def good_claims(**changes: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {"iss": ISSUER, "aud": AUDIENCE, "iat": NOW, "exp": NOW + 600}
    claims.update(changes)
    return {name: value for name, value in claims.items() if value is not None}


@pytest.fixture
def verifier(keys: Keys) -> ClientTokenVerifier:
    return ClientTokenVerifier(
        [load_public_key(keys.ours_public)],
        issuer=ISSUER,
        audience=AUDIENCE,
        leeway=5,
        clock=lambda: NOW + 10,
    )


@pytest.mark.unit
def test_a_good_token_passes(keys: Keys, verifier: ClientTokenVerifier) -> None:
    claims = verifier.verify(f"Bearer {sign(keys, good_claims())}")
    assert claims["iss"] == ISSUER


@pytest.mark.unit
@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"iss": "other"}, "(?i)issuer"),
        ({"aud": "production"}, "(?i)audience"),
        ({"iat": None}, "iat"),
        ({"exp": None}, "exp"),
        ({"iss": None}, "iss"),
        ({"exp": NOW + 601}, "lifetime"),
        ({"iat": NOW - 700, "exp": NOW - 100}, "expired"),
        ({"iat": NOW + 120, "exp": NOW + 300}, "future"),
        ({"iat": "yesterday"}, "NumericDate|iat"),
        ({"exp": NOW}, "after iat"),
    ],
)
def test_bad_claims_are_refused(
    keys: Keys, verifier: ClientTokenVerifier, changes: dict[str, Any], reason: str
) -> None:
    with pytest.raises(TokenRejected, match=reason):
        verifier.verify(f"Bearer {sign(keys, good_claims(**changes))}")


@pytest.mark.unit
def test_other_algorithms_and_keys_are_refused(keys: Keys, verifier: ClientTokenVerifier) -> None:
    public_pem = keys.ours_public.read_bytes()
    forged_hs256 = jwt.encode(good_claims(), "secret-of-32-bytes-at-least-0123456789", "HS256")
    unsigned = jwt.encode(good_claims(), None, algorithm="none")
    p384 = ec.generate_private_key(ec.SECP384R1())
    es384 = jwt.encode(good_claims(), p384, algorithm="ES384")
    stranger = sign(keys, good_claims(), key_path=keys.stranger_private)
    for token, reason in [
        (forged_hs256, "ES256"),
        (unsigned, "ES256"),
        (es384, "ES256"),
        (stranger, "signature"),
        ("not-a-jwt", "malformed"),
    ]:
        with pytest.raises(TokenRejected, match=reason):
            verifier.verify(f"Bearer {token}")
    for header in (None, "", sign(keys, good_claims()), "Basic abc"):
        with pytest.raises(TokenRejected, match="Bearer"):
            verifier.verify(header)
    assert public_pem.startswith(b"-----BEGIN PUBLIC KEY-----")


@pytest.mark.unit
def test_a_rotated_second_key_is_accepted(keys: Keys) -> None:
    verifier = ClientTokenVerifier(
        [load_public_key(keys.ours_public), _public_of(keys.stranger_private)],
        issuer=ISSUER,
        audience=AUDIENCE,
        clock=lambda: NOW,
    )
    verifier.verify(f"Bearer {sign(keys, good_claims(), key_path=keys.stranger_private)}")


def _public_of(private: Path) -> ec.EllipticCurvePublicKey:
    return serialization.load_pem_private_key(private.read_bytes(), None).public_key()  # type: ignore[return-value]


@pytest.mark.integration
async def test_simulator_answers_401_with_a_reason(keys: Keys, sim: SimulatorHooks) -> None:
    import time

    now = int(time.time())
    long_lived = sign(keys, {"iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 900})
    for token in (None, long_lived):
        status, body = await sim.raw("GET", "/v1/b2b-gateway/allowed-countries", token=token)
        assert status == 401
        assert orjson.loads(body)["error"] == "unauthorized"
    good = sign(keys, {"iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 600})
    status, _ = await sim.raw("GET", "/v1/b2b-gateway/allowed-countries", token=good)
    assert status == 200
