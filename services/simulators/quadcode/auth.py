"""Verification of the B2B client's JWTs, by Quadcode's rules (contracts/quadcode/README.md).

ES256 only; ``iss`` the issuer assigned to the client; ``aud`` the environment; ``iat`` and
``exp`` required; ``exp - iat`` at most 600 s. Time is checked here with an injected clock
rather than inside PyJWT, so tests can move it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import jwt
from cryptography.hazmat.primitives.asymmetric import ec

from quadcode_gateway.tokens import ALGORITHM, MAX_LIFETIME_SECONDS, Clock


class TokenRejected(Exception):
    """The request's token does not satisfy the rules; the message says which one."""


def _numeric(claims: dict[str, object], name: str) -> float:
    value = claims.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TokenRejected(f"claim {name!r} must be a NumericDate")
    return float(value)


class ClientTokenVerifier:
    """Checks ``Authorization: Bearer <JWT>`` against one or more public keys (rotation)."""

    def __init__(
        self,
        public_keys: Sequence[ec.EllipticCurvePublicKey],
        *,
        issuer: str,
        audience: str,
        leeway: float = 5.0,
        clock: Clock = time.time,
    ) -> None:
        if not public_keys:
            raise ValueError("at least one public key is required")
        self._keys = tuple(public_keys)
        self._issuer = issuer
        self._audience = audience
        self._leeway = leeway
        self._clock = clock

    def verify(self, authorization: str | None) -> dict[str, object]:
        """The token's claims, or :class:`TokenRejected`."""
        if not authorization or not authorization.startswith("Bearer "):
            raise TokenRejected("missing 'Authorization: Bearer <JWT>'")
        token = authorization.removeprefix("Bearer ").strip()
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise TokenRejected(f"malformed token: {exc}") from None
        # Checked before any key is tried: "none" and HS256 (with the public key as the
        # secret) are the classic ways to forge a token.
        if header.get("alg") != ALGORITHM:
            raise TokenRejected(f"algorithm must be {ALGORITHM}, got {header.get('alg')!r}")
        claims: dict[str, object] | None = None
        for key in self._keys:
            try:
                claims = jwt.decode(
                    token,
                    key,
                    algorithms=[ALGORITHM],
                    issuer=self._issuer,
                    audience=self._audience,
                    options={
                        "require": ["iss", "aud", "iat", "exp"],
                        "verify_exp": False,
                        "verify_iat": False,
                        "verify_nbf": False,
                    },
                )
                break
            except jwt.InvalidSignatureError:
                continue
            except jwt.PyJWTError as exc:
                raise TokenRejected(str(exc)) from None
        if claims is None:
            raise TokenRejected("signature does not verify with any configured key")

        issued_at, expires_at = _numeric(claims, "iat"), _numeric(claims, "exp")
        now = self._clock()
        if expires_at <= issued_at:
            raise TokenRejected("exp must be after iat")
        if expires_at - issued_at > MAX_LIFETIME_SECONDS:
            raise TokenRejected(f"token lifetime exceeds {MAX_LIFETIME_SECONDS} s")
        if issued_at > now + self._leeway:
            raise TokenRejected("iat is in the future")
        if expires_at <= now - self._leeway:
            raise TokenRejected("token has expired")
        return claims
