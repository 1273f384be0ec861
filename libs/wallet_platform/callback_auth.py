"""Authentication of Quadcode's callbacks: ES256 JWTs and the caller-IP allowlist.

Rules (Quadcode's README plus our contract decisions): ``Authorization: Bearer <JWT>``; ES256
only (no ``none``, no HMAC with the public key as secret, keys never chosen by the token's
``kid``); ``iss`` = ``qc``; ``aud`` = this deployment's environment; ``iat`` and ``exp`` required;
``exp - iat`` at most 600 s; a small clock leeway. Several public keys may be configured (rotation):
a token is valid if any of them verifies it.

Verification is on the hot path and a caller reuses one token for many requests, so a token whose
signature verified is remembered until it expires; its time claims are re-checked on every use.
"""

from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import jwt
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, EllipticCurvePublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

MAX_LIFETIME_SECONDS = 600
ENVIRONMENTS = ("production", "integration", "sandbox")


class AuthError(Exception):
    """Authentication failed; ``code`` is an error code of ``ledger_core.errors``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def load_public_keys(pems: Iterable[bytes]) -> list[EllipticCurvePublicKey]:
    """Parse PEM public keys; only P-256 keys (what ES256 uses) are accepted."""
    keys = []
    for pem in pems:
        key = load_pem_public_key(pem)
        if not isinstance(key, EllipticCurvePublicKey) or not isinstance(key.curve, SECP256R1):
            raise ValueError("Quadcode public keys must be EC P-256 (ES256) keys")
        keys.append(key)
    if not keys:
        raise ValueError("at least one Quadcode public key is required")
    return keys


@dataclass(frozen=True, slots=True)
class _Verified:
    iat: int
    exp: int


class TokenVerifier:
    """Verifies Quadcode's bearer tokens, caching verified signatures until the token expires."""

    def __init__(
        self,
        keys: list[EllipticCurvePublicKey],
        *,
        audience: str,
        issuer: str = "qc",
        leeway: float = 5.0,
        clock: Callable[[], float] = time.time,
        cache_size: int = 4096,
    ) -> None:
        if audience not in ENVIRONMENTS:
            raise ValueError(f"audience must be one of {ENVIRONMENTS}")
        self._keys = keys
        self._audience = audience
        self._issuer = issuer
        self._leeway = leeway
        self._clock = clock
        self._cache: OrderedDict[str, _Verified] = OrderedDict()
        self._cache_size = cache_size

    def verify(self, token: str) -> None:
        """Return if ``token`` is acceptable now; raise :class:`AuthError` otherwise."""
        verified = self._cache.get(token)
        if verified is None:
            verified = self._verify_signature_and_claims(token)
            self._cache[token] = verified
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        self._check_time(verified)

    def _check_time(self, v: _Verified) -> None:
        now = self._clock()
        if now > v.exp + self._leeway:
            raise AuthError("token_expired", "the token has expired")
        if v.iat > now + self._leeway:
            raise AuthError("token_not_yet_valid", "the token's iat is in the future")

    def _verify_signature_and_claims(self, token: str) -> _Verified:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise AuthError("invalid_token", "the token is malformed") from None
        if header.get("alg") != "ES256":
            raise AuthError("invalid_token", "only ES256 tokens are accepted")
        claims = None
        for key in self._keys:
            try:
                claims = jwt.decode(
                    token,
                    key=key,
                    algorithms=["ES256"],
                    audience=self._audience,
                    issuer=self._issuer,
                    leeway=self._leeway,
                    options={
                        "require": ["iss", "aud", "iat", "exp"],
                        "verify_exp": False,  # time is checked by _check_time on every use
                        "verify_iat": False,
                        "verify_nbf": True,
                    },
                )
                break
            except jwt.InvalidSignatureError:
                continue
            except jwt.InvalidIssuerError:
                raise AuthError("invalid_issuer", "the token's iss is not 'qc'") from None
            except jwt.InvalidAudienceError:
                raise AuthError(
                    "invalid_audience", "the token's aud is not this environment"
                ) from None
            except jwt.ImmatureSignatureError:
                raise AuthError("token_not_yet_valid", "the token is not valid yet") from None
            except jwt.PyJWTError as exc:
                raise AuthError("invalid_token", f"the token is invalid: {exc}") from None
        if claims is None:
            raise AuthError("invalid_token", "the token's signature does not verify")
        iat, exp = claims["iat"], claims["exp"]
        if not isinstance(iat, int | float) or not isinstance(exp, int | float):
            raise AuthError("invalid_token", "iat and exp must be numbers")
        if exp - iat > MAX_LIFETIME_SECONDS:
            raise AuthError("token_lifetime_too_long", "exp - iat exceeds 600 seconds")
        if exp <= iat:
            raise AuthError("invalid_token", "exp must be after iat")
        return _Verified(int(iat), int(exp))


def bearer_token(header: str | None) -> str:
    """The token of an ``Authorization: Bearer`` header, or :class:`AuthError`."""
    if not header:
        raise AuthError("missing_token", "Authorization: Bearer token required")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError("missing_token", "Authorization: Bearer token required")
    return token.strip()


class IpPolicy:
    """The caller-IP allowlist, and which peers may speak for a client via X-Forwarded-For."""

    def __init__(self, allow: Iterable[str], trusted_proxies: Iterable[str] = ()) -> None:
        self._allow = [ipaddress.ip_network(c, strict=False) for c in allow]
        self._proxies = [ipaddress.ip_network(c, strict=False) for c in trusted_proxies]
        self._allowed_cache: dict[str, bool] = {}

    @staticmethod
    def _within(ip: str, networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
        try:
            addr = ipaddress.ip_address(ip.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        return any(addr in net for net in networks)

    def client_ip(self, peer: str, forwarded_for: str | None) -> str:
        """The caller's address: the peer, unless the peer is a trusted proxy, in which case the
        right-most X-Forwarded-For entry that is not itself a trusted proxy."""
        if not forwarded_for or not self._within(peer, self._proxies):
            return peer
        hops = [h.strip() for h in forwarded_for.split(",") if h.strip()]
        for hop in reversed(hops):
            if not self._within(hop, self._proxies):
                return hop
        return hops[0] if hops else peer

    def allowed(self, ip: str) -> bool:
        cached = self._allowed_cache.get(ip)
        if cached is None:
            cached = self._within(ip, self._allow)
            if len(self._allowed_cache) < 65536:
                self._allowed_cache[ip] = cached
        return cached
