"""Swapgate API v2 request signing, byte for byte what the reference (Node.js) code does.

``x-api-signature = base64(HMAC-SHA256(key = secret key text as UTF-8,
message = str(timestamp_ms) + body + public key))``, where ``body`` is ``JSON.stringify`` of the
request object. The signature covers *bytes*: a client must send exactly the bytes it signed and
a server must verify the raw bytes it received, never a re-serialisation of parsed JSON.

A request without a body (a GET) signs the empty string in the body's place. Swapgate does not
document this case; the reference code would produce ``"undefined"`` if called with no argument,
but an empty body is the natural reading and is what the simulator verifies.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from typing import TypeAlias

import orjson

from swapgate.errors import NotJsonSafe

HEADER_PUBLIC_KEY = "x-api-public-key"
HEADER_TIMESTAMP = "x-api-timestamp"
HEADER_SIGNATURE = "x-api-signature"

EMPTY_BODY = b""

# JavaScript integers are IEEE doubles: beyond this an integer would not survive JSON.stringify.
MAX_SAFE_INTEGER = 2**53 - 1
# An "array index" key: canonical decimal of an integer in [0, 2**32 - 2].
_MAX_ARRAY_INDEX = 2**32 - 2

# What a signed body may contain (floats and Decimals deliberately absent).
JsonValue: TypeAlias = "str | int | bool | Sequence[JsonValue] | Mapping[str, JsonValue] | None"


def signing_message(timestamp_ms: int, body: bytes, public_key: str) -> bytes:
    """The exact bytes that are MACed: ``timestamp`` digits, then the body, then the public key."""
    if isinstance(timestamp_ms, bool) or not isinstance(timestamp_ms, int) or timestamp_ms < 0:
        raise ValueError(f"timestamp_ms must be a non-negative int, got {timestamp_ms!r}")
    return str(timestamp_ms).encode("ascii") + body + public_key.encode("utf-8")


def sign(secret_key: str, timestamp_ms: int, body: bytes, public_key: str) -> str:
    """The ``x-api-signature`` value for a request (base64 of the HMAC-SHA256 digest).

    ``body`` is the exact request body as sent (:data:`EMPTY_BODY` for a GET).
    """
    mac = hmac.new(
        secret_key.encode("utf-8"), signing_message(timestamp_ms, body, public_key), hashlib.sha256
    )
    return base64.b64encode(mac.digest()).decode("ascii")


def verify(
    secret_key: str, timestamp_ms: int, body: bytes, public_key: str, signature: str
) -> bool:
    """Whether ``signature`` is valid for these raw body bytes (constant-time comparison)."""
    expected = sign(secret_key, timestamp_ms, body, public_key).encode("ascii")
    # compare_digest on bytes: a non-ASCII signature must compare unequal, not raise.
    return hmac.compare_digest(expected, signature.encode("utf-8", "surrogateescape"))


def signed_headers(
    secret_key: str, public_key: str, timestamp_ms: int, body: bytes
) -> dict[str, str]:
    """The three authentication headers of an API v2 request."""
    return {
        HEADER_PUBLIC_KEY: public_key,
        HEADER_TIMESTAMP: str(timestamp_ms),
        HEADER_SIGNATURE: sign(secret_key, timestamp_ms, body, public_key),
    }


def _array_index(key: str) -> int | None:
    if key.isdigit() and key.isascii() and (key == "0" or not key.startswith("0")):
        number = int(key)
        if number <= _MAX_ARRAY_INDEX:
            return number
    return None


def _js_ordered(value: object, path: str) -> object:
    """A copy of ``value`` checked for JSON safety, with object keys in JavaScript's order.

    JavaScript enumerates integer-like keys ("array indices") first, ascending, then the other
    keys in insertion order; ``JSON.stringify`` follows that order, so we do too.
    """
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        if abs(value) > MAX_SAFE_INTEGER:
            raise NotJsonSafe(f"{path}: integer {value} is not exact in JavaScript; send a string")
        return value
    if isinstance(value, float):
        raise NotJsonSafe(f"{path}: floats are never sent; format amounts as decimal strings")
    if isinstance(value, Mapping):
        indexed: list[tuple[int, str]] = []
        named: list[str] = []
        for key in value:
            if not isinstance(key, str):
                raise NotJsonSafe(f"{path}: object keys must be str, got {key!r}")
            index = _array_index(key)
            if index is None:
                named.append(key)
            else:
                indexed.append((index, key))
        order = [key for _, key in sorted(indexed)] + named
        return {key: _js_ordered(value[key], f"{path}.{key}") for key in order}
    if isinstance(value, list | tuple):
        return [_js_ordered(item, f"{path}[{i}]") for i, item in enumerate(value)]
    # Decimal, datetime, dataclasses...: no implicit conversion; the caller decides the text.
    raise NotJsonSafe(f"{path}: {type(value).__name__} has no JSON form here; convert it first")


def compact_json(obj: JsonValue) -> bytes:
    """``obj`` serialised exactly as JavaScript's ``JSON.stringify`` would, as UTF-8 bytes.

    No whitespace, key order kept (integer-like keys first, as in JavaScript), non-ASCII text as
    raw UTF-8 (what ``TextEncoder`` produces), control characters escaped as JavaScript does.
    Only str, int (within 2**53), bool, None, lists/tuples and str-keyed mappings are accepted:
    floats and Decimals raise :class:`NotJsonSafe`, because amounts travel as decimal strings.
    """
    checked = _js_ordered(obj, "$")
    try:
        return orjson.dumps(checked)
    except orjson.JSONEncodeError as exc:  # e.g. a lone surrogate in a str
        raise NotJsonSafe(f"not serialisable: {exc}") from exc
