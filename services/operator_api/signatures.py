"""Signed operator API requests (Swapgate API v2's scheme), the pure part.

Every request under ``/v1/`` carries ``x-api-public-key``, ``x-api-timestamp`` (Unix
milliseconds) and ``x-api-signature`` = base64(HMAC-SHA256(key = the secret key's text,
message = timestamp digits + raw body + public key)). :mod:`swapgate.signing` computes and
checks it exactly as Swapgate's own code does; this module reads the headers, checks the
timestamp window and names what the replay store keeps.
"""

from __future__ import annotations

import hashlib
import string
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Protocol

from swapgate.signing import HEADER_PUBLIC_KEY, HEADER_SIGNATURE, HEADER_TIMESTAMP, verify

MAX_PUBLIC_KEY_LENGTH: Final = 128
MAX_SIGNATURE_LENGTH: Final = 128
# Unix milliseconds have 13 digits until the year 2286; 16 leaves room without inviting bignums.
MAX_TIMESTAMP_DIGITS: Final = 16
# What a public key or a signature may hold: base64 (with url-safe variants) and nothing else
# that could confuse a log line or a header parser.
_TOKEN_CHARACTERS: Final = frozenset(string.ascii_letters + string.digits + "+/=-_")


class Refused(Exception):
    """A request refused before it reaches a route; ``code`` is an error code (a 403)."""

    def __init__(self, code: str, message: str | None = None) -> None:
        super().__init__(message or code)
        self.code = code
        self.message = message


class HeaderSource(Protocol):
    """What the headers of a request offer (aiohttp's ``CIMultiDictProxy``)."""

    def getall(self, key: str, default: Sequence[str]) -> list[str] | Sequence[str]: ...


@dataclass(frozen=True, slots=True)
class SignedHeaders:
    """The three authentication headers of one request, checked for form."""

    public_key: str
    timestamp_ms: int
    signature: str


MALFORMED = "malformed_signature_headers"


def _one(headers: HeaderSource, name: str) -> str:
    values = headers.getall(name, ())
    # Exactly one: two values of one header could be read differently by a proxy and by us.
    if len(values) != 1:
        raise Refused(MALFORMED, f"exactly one {name} header is required")
    return values[0]


def _token(value: str, name: str, limit: int) -> str:
    if not value or len(value) > limit or not _TOKEN_CHARACTERS.issuperset(value):
        raise Refused(MALFORMED, f"{name} must be 1 to {limit} base64 characters")
    return value


def read_signed_headers(headers: HeaderSource) -> SignedHeaders:
    """The authentication headers, or :class:`Refused` (``malformed_signature_headers``) when
    one is missing, repeated or not of its form. Messages name the header, never its value."""
    public_key = _token(_one(headers, HEADER_PUBLIC_KEY), HEADER_PUBLIC_KEY, MAX_PUBLIC_KEY_LENGTH)
    timestamp = _one(headers, HEADER_TIMESTAMP)
    if not (0 < len(timestamp) <= MAX_TIMESTAMP_DIGITS and timestamp.isascii()):
        raise Refused(MALFORMED, f"{HEADER_TIMESTAMP} must be Unix time in milliseconds")
    if not timestamp.isdigit():
        raise Refused(MALFORMED, f"{HEADER_TIMESTAMP} must be Unix time in milliseconds")
    signature = _token(_one(headers, HEADER_SIGNATURE), HEADER_SIGNATURE, MAX_SIGNATURE_LENGTH)
    return SignedHeaders(public_key, int(timestamp), signature)


def within_window(timestamp_ms: int, now_ms: int, window_ms: int) -> bool:
    """Whether a request signed at ``timestamp_ms`` is still (or already) acceptable at
    ``now_ms``: at most ``window_ms`` either side (clocks drift both ways)."""
    return abs(now_ms - timestamp_ms) <= window_ms


def signature_matches(secret_key: str, signed: SignedHeaders, body: bytes) -> bool:
    """Whether the signature covers exactly these raw body bytes (constant-time comparison)."""
    return verify(secret_key, signed.timestamp_ms, body, signed.public_key, signed.signature)


def replay_digest(signed: SignedHeaders) -> bytes:
    """What the replay store keeps of an accepted request: a fixed-size digest of its key and
    signature (the signature already covers the timestamp and the body)."""
    return hashlib.sha256(
        signed.public_key.encode("ascii") + b"\x00" + signed.signature.encode("ascii")
    ).digest()


def expires_at_ms(signed: SignedHeaders, window_ms: int) -> int:
    """When a seen signature can be forgotten: its timestamp has then left the window, so the
    window check refuses a replay of it before the replay store is asked."""
    return signed.timestamp_ms + window_ms
