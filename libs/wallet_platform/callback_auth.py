"""Authentication of Quadcode's callbacks: ES256 JWTs and the caller-IP allowlist.

Rules (Quadcode's README plus our contract decisions): ``Authorization: Bearer <JWT>``; ES256
only (no ``none``, no HMAC with the public key as secret, keys never chosen by the token's
``kid``); ``iss`` = ``qc``; ``aud`` = this deployment's environment (a string, or an array of
exactly that one string); ``iat`` and ``exp`` required, whole seconds; ``exp - iat`` at most
600 s; a small clock leeway. Several public keys may be configured (rotation):
a token is valid if any of them verifies it.

Verification is on the hot path and a caller reuses one token for many requests, so a token whose
signature verified is remembered until it expires; its time claims are re-checked on every use.
"""

from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
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
                    issuer=self._issuer,
                    leeway=self._leeway,
                    options={
                        "require": ["iss", "aud", "iat", "exp"],
                        # PyJWT lets a list pass when it merely contains the audience: checked
                        # below, exactly.
                        "verify_aud": False,
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
            except jwt.ImmatureSignatureError:
                raise AuthError("token_not_yet_valid", "the token is not valid yet") from None
            except jwt.PyJWTError as exc:
                raise AuthError("invalid_token", f"the token is invalid: {exc}") from None
        if claims is None:
            raise AuthError("invalid_token", "the token's signature does not verify")
        # RFC 7519 lets aud be a string or an array; an array counts only when its one element
        # is this environment, so a token is never good for two environments at once.
        if claims["aud"] != self._audience and claims["aud"] != [self._audience]:
            raise AuthError("invalid_audience", "the token's aud is not this environment")
        iat, exp = _numeric_date(claims, "iat"), _numeric_date(claims, "exp")
        if exp - iat > MAX_LIFETIME_SECONDS:
            raise AuthError("token_lifetime_too_long", "exp - iat exceeds 600 seconds")
        if exp <= iat:
            raise AuthError("invalid_token", "exp must be after iat")
        return _Verified(iat, exp)


# Time claims beyond this are nonsense; the bound keeps every comparison with the clock (a float)
# exact and free of overflow.
_LATEST_NUMERIC_DATE = 2**53


def _numeric_date(claims: dict[str, object], name: str) -> int:
    """A time claim as whole seconds since the epoch, or :class:`AuthError` (``invalid_token``).

    JSON numbers arrive as int or float, and Python's JSON reader also turns ``NaN`` and
    ``Infinity`` into floats; only a whole number in a sane range is accepted. ``bool`` is an
    ``int`` in Python, hence the exact type check.
    """
    value = claims[name]
    if type(value) is not int or not 0 <= value < _LATEST_NUMERIC_DATE:
        raise AuthError("invalid_token", f"{name} must be a whole number of seconds")
    return value


def bearer_token(header: str | None) -> str:
    """The token of an ``Authorization: Bearer`` header, or :class:`AuthError`."""
    if not header:
        raise AuthError("missing_token", "Authorization: Bearer token required")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError("missing_token", "Authorization: Bearer token required")
    return token.strip()


Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_address(text: str) -> Address | None:
    """An IPv4 or IPv6 address in its canonical form, or None if ``text`` is not exactly one.

    An IPv4-mapped IPv6 address (``::ffff:10.1.2.3``, what a dual-stack socket reports for an
    IPv4 peer) counts as the IPv4 address it maps. A zone id (``fe80::1%eth0``) is dropped: it
    names an interface of the host that wrote it, not another host, so it can neither widen nor
    narrow what the allowlist lets in, and dropping it keeps one cache entry per address. Nothing
    else is tolerated: no brackets, ports, spaces or ``unknown``.
    """
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address):
        if address.scope_id is not None:
            address = ipaddress.IPv6Address(address.packed)
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
    return address


class IpPolicy:
    """The caller-IP allowlist, and which peers may speak for a client via X-Forwarded-For.

    Only parsed addresses are ever kept (the allowlist's answers, in a bounded cache), never the
    header text a caller sent.
    """

    def __init__(
        self,
        allow: Iterable[str],
        trusted_proxies: Iterable[str] = (),
        *,
        cache_size: int = 4096,
    ) -> None:
        self._allow: list[Network] = [ipaddress.ip_network(c, strict=False) for c in allow]
        self._proxies: list[Network] = [
            ipaddress.ip_network(c, strict=False) for c in trusted_proxies
        ]
        self._allowed_cache: dict[Address, bool] = {}
        # Peer addresses as the socket reported them (never text a caller wrote), parsed: the
        # same few peers make nearly every request, and parsing one costs more than the lookup.
        self._peers: dict[str, Address | None] = {}
        self._cache_size = cache_size

    @staticmethod
    def _within(address: Address, networks: list[Network]) -> bool:
        return any(address in net for net in networks)

    def client_ip(self, peer: str, forwarded_for: Sequence[str] = ()) -> Address | None:
        """The caller's address, or None when it can not be established (refuse the request).

        ``forwarded_for`` holds every X-Forwarded-For header of the request, in order; together
        they are one chain, each proxy having appended the address it saw. They count only when
        the direct ``peer`` is a trusted proxy. Then the chain is read from the right and the
        first hop that is not a trusted proxy is the caller; if every hop is a trusted proxy, the
        left-most one is. A hop that is not a plain address, met before the caller is found
        (at or right of it), makes the whole chain untrustworthy: None. Hops left of the caller
        are never read, since only the caller could have written them.
        """
        try:
            address = self._peers[peer]
        except KeyError:
            address = parse_address(peer)
            if len(self._peers) >= self._cache_size:
                del self._peers[next(iter(self._peers))]  # the oldest: dicts keep insertion order
            self._peers[peer] = address
        if address is None or not forwarded_for or not self._within(address, self._proxies):
            return address
        hops = [hop.strip() for value in forwarded_for for hop in value.split(",")]
        # Empty list elements ("a, , b", a trailing comma) carry no address; HTTP list syntax
        # allows them, so they are skipped rather than refused.
        hops = [hop for hop in hops if hop]
        if not hops:
            return address
        hop_address: Address | None = None
        for hop in reversed(hops):
            hop_address = parse_address(hop)
            if hop_address is None:
                return None
            if not self._within(hop_address, self._proxies):
                return hop_address
        return hop_address  # every hop is a trusted proxy: the left-most one

    def allowed(self, address: Address) -> bool:
        """Whether ``address`` is inside the allowlist (answers cached, at most ``cache_size``)."""
        cached = self._allowed_cache.get(address)
        if cached is None:
            cached = self._within(address, self._allow)
            if len(self._allowed_cache) >= self._cache_size:
                # Forget the oldest answer: dicts keep insertion order.
                del self._allowed_cache[next(iter(self._allowed_cache))]
            self._allowed_cache[address] = cached
        return cached

    @property
    def cached_addresses(self) -> int:
        """How many addresses' answers are cached (bounded by ``cache_size``)."""
        return len(self._allowed_cache)

    @property
    def cached_peers(self) -> int:
        """How many parsed peer addresses are cached (bounded by ``cache_size``)."""
        return len(self._peers)
