"""ES256 tokens signed by hand, for claims PyJWT refuses to encode (``NaN``, ``Infinity``).

Python's JSON reader, which PyJWT uses to decode, accepts those literals, so a caller holding a
valid key can send them; the wallet must answer such a token with a 403, not crash on it. Every
other test token comes from :meth:`wallet_stack.QuadcodeKey.token`.
"""

from __future__ import annotations

import base64
import json

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.serialization import load_pem_private_key


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hand_signed_token(private_pem: bytes, claims: dict[str, object]) -> str:
    """A compact ES256 JWS of ``claims``, written with ``NaN`` and ``Infinity`` as JSON literals
    where the claims hold them, and signed with ``private_pem`` (a P-256 key)."""
    key = load_pem_private_key(private_pem, None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    header = _b64(json.dumps({"alg": "ES256", "typ": "JWT"}).encode())
    payload = _b64(json.dumps(claims, allow_nan=True).encode())
    signing_input = f"{header}.{payload}".encode()
    r, s = decode_dss_signature(key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
    # JWS wants the raw 64-byte r || s, not the DER that cryptography produces.
    return f"{header}.{payload}.{_b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"
