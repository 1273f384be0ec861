"""ES256 JWTs for server-to-server calls between us and Quadcode, and the keys that sign them.

Quadcode's rules (contracts/quadcode/README.md): ``Authorization: Bearer <JWT>``, algorithm
ES256, claims ``iss`` (the issuer Quadcode assigned us; ``qc`` for tokens Quadcode issues),
``aud`` (the environment), ``iat`` and ``exp`` with ``exp - iat`` at most 10 minutes.

A token is signed once and reused until it is about to expire, so a busy website does not sign
on every request; the clock is injected so tests can move time.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Final

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

ALGORITHM: Final = "ES256"
MAX_LIFETIME_SECONDS: Final = 600
"""Quadcode rejects a token whose lifetime (``exp - iat``) exceeds 10 minutes."""

DEFAULT_LIFETIME_SECONDS: Final = 300
"""Half the maximum: signing is cheap, and a verifier that measures ``exp`` against its own clock
then still accepts our token when the two clocks disagree by minutes."""

DEFAULT_RENEW_MARGIN_SECONDS: Final = 30
QUADCODE_ISSUER: Final = "qc"
"""The ``iss`` of every token Quadcode itself signs (its calls to our wallet)."""

Clock = Callable[[], float]
"""Seconds since the epoch, like :func:`time.time`."""


class Environment(StrEnum):
    """Quadcode's environments; each is also the ``aud`` claim its tokens must carry."""

    PRODUCTION = "production"
    INTEGRATION = "integration"
    SANDBOX = "sandbox"


class KeyFileError(ValueError):
    """A key file is missing, unreadable, or not an EC P-256 key."""


def load_private_key(path: str | os.PathLike[str]) -> ec.EllipticCurvePrivateKey:
    """Load a PEM EC P-256 private key (SEC1 as ``openssl ecparam`` writes it, or PKCS#8)."""
    try:
        data = Path(path).read_bytes()
        key = serialization.load_pem_private_key(data, password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise KeyFileError(f"cannot load private key from {os.fspath(path)!r}: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise KeyFileError(f"{os.fspath(path)!r} is not an EC P-256 (prime256v1) private key")
    return key


def load_public_key(path: str | os.PathLike[str]) -> ec.EllipticCurvePublicKey:
    """Load a PEM EC P-256 public key (SubjectPublicKeyInfo, as ``openssl ec -pubout`` writes)."""
    try:
        key = serialization.load_pem_public_key(Path(path).read_bytes())
    except (OSError, ValueError, TypeError) as exc:
        raise KeyFileError(f"cannot load public key from {os.fspath(path)!r}: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise KeyFileError(f"{os.fspath(path)!r} is not an EC P-256 (prime256v1) public key")
    return key


def generate_keypair(
    private_path: str | os.PathLike[str],
    public_path: str | os.PathLike[str],
    *,
    overwrite: bool = False,
) -> None:
    """Write a new P-256 key pair as the README's two ``openssl`` commands would.

    ``private_path`` gets ``-----BEGIN EC PRIVATE KEY-----`` (SEC1, unencrypted, like
    ``openssl ecparam -name prime256v1 -genkey -noout``), readable by the owner only;
    ``public_path`` gets ``-----BEGIN PUBLIC KEY-----`` (like ``openssl ec -pubout``), which is
    the file to hand to Quadcode. Existing files are kept unless ``overwrite`` is true, because
    replacing a registered key silently breaks every call until Quadcode has the new one.
    """
    private_target, public_target = Path(private_path), Path(public_path)
    if not overwrite:
        for target in (private_target, public_target):
            if target.exists():
                raise FileExistsError(f"{target} exists; refusing to replace a key")
    key = ec.generate_private_key(ec.SECP256R1())
    private_pem = key.private_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PrivateFormat.TraditionalOpenSSL,
        encryption_algorithm=serialization.NoEncryption(),
    )
    public_pem = key.public_key().public_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PublicFormat.SubjectPublicKeyInfo,
    )
    # Create the private file with 0600 from the start: a chmod afterwards leaves a window.
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    fd = os.open(private_target, flags, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(private_pem)
    os.chmod(private_target, 0o600)
    public_target.write_bytes(public_pem)


class TokenSigner:
    """Signs and caches the ES256 bearer token for one issuer and audience.

    The cached token is returned while more than ``renew_margin`` seconds of its lifetime are
    left; after that a fresh one is signed, so a token never expires in flight.
    """

    def __init__(
        self,
        private_key: ec.EllipticCurvePrivateKey,
        *,
        issuer: str,
        audience: Environment | str,
        lifetime: float = DEFAULT_LIFETIME_SECONDS,
        renew_margin: float = DEFAULT_RENEW_MARGIN_SECONDS,
        clock: Clock = time.time,
    ) -> None:
        if not issuer:
            raise ValueError("issuer must be the non-empty value Quadcode assigned")
        if not 0 < lifetime <= MAX_LIFETIME_SECONDS:
            raise ValueError(f"lifetime must be in (0, {MAX_LIFETIME_SECONDS}] seconds")
        if not 0 <= renew_margin < lifetime:
            raise ValueError("renew_margin must be at least 0 and shorter than the lifetime")
        self._key = private_key
        self.issuer = issuer
        self.audience = Environment(audience).value
        self._lifetime = int(lifetime)
        self._renew_margin = renew_margin
        self._clock = clock
        self._token: str | None = None
        self._expires_at = 0

    @classmethod
    def from_pem_file(
        cls,
        path: str | os.PathLike[str],
        *,
        issuer: str,
        audience: Environment | str,
        lifetime: float = DEFAULT_LIFETIME_SECONDS,
        renew_margin: float = DEFAULT_RENEW_MARGIN_SECONDS,
        clock: Clock = time.time,
    ) -> TokenSigner:
        """A signer whose key is read from a PEM file (see :func:`load_private_key`)."""
        return cls(
            load_private_key(path),
            issuer=issuer,
            audience=audience,
            lifetime=lifetime,
            renew_margin=renew_margin,
            clock=clock,
        )

    def token(self) -> str:
        """The current bearer token, signing a new one if the cached one is close to expiry."""
        now = self._clock()
        if self._token is None or now >= self._expires_at - self._renew_margin:
            # Whole seconds: JWT NumericDate, and exp - iat is then exactly the lifetime.
            issued_at = int(now)
            expires_at = issued_at + self._lifetime
            claims = {"iss": self.issuer, "aud": self.audience, "iat": issued_at, "exp": expires_at}
            self._token = jwt.encode(claims, self._key, algorithm=ALGORITHM)
            self._expires_at = expires_at
        return self._token

    def authorization(self) -> str:
        """The ``Authorization`` header value: ``Bearer <token>``."""
        return f"Bearer {self.token()}"

    def invalidate(self) -> None:
        """Forget the cached token (after a 401), so the next call signs a fresh one."""
        self._token = None
        self._expires_at = 0
