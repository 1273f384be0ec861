"""``OperatorClient``: signed requests to the operator API.

Each request carries ``x-api-public-key``, ``x-api-timestamp`` (Unix milliseconds, now) and
``x-api-signature`` = base64(HMAC-SHA256(secret key text, timestamp + raw body + public key)),
computed by :func:`swapgate.signing.signed_headers` over exactly the bytes sent. A GET signs
the empty body. Two requests with the same body in the same millisecond would carry the same
signature, which the server refuses as a replay; the client therefore never reuses a
timestamp (it moves on to the next millisecond).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp
import orjson

from swapgate.signing import EMPTY_BODY, signed_headers


@dataclass(frozen=True, slots=True)
class Credentials:
    """Where the operator API is and the key to sign with."""

    base_url: str
    public_key: str
    secret_key: str


def load_credentials(path: str | Path) -> Credentials:
    """Credentials from a JSON file ``{baseUrl, publicKey, secretKey}`` (what
    ``python -m operator_api keys create --credentials PATH`` writes)."""
    data = orjson.loads(Path(path).read_bytes())
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    try:
        return Credentials(str(data["baseUrl"]), str(data["publicKey"]), str(data["secretKey"]))
    except KeyError as exc:
        raise ValueError(f"{path}: {exc.args[0]} is missing") from None


class OperatorClient:
    """Signed requests to the operator API; each returns ``(status, parsed JSON or None)``."""

    def __init__(
        self,
        base_url: str,
        public_key: str,
        secret_key: str,
        *,
        session: aiohttp.ClientSession | None = None,
        timeout_s: float = 30.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._public_key = public_key
        self._secret_key = secret_key
        self._session = session
        self._owns_session = session is None
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._last_ms = 0

    @classmethod
    def from_credentials(cls, credentials: Credentials, **kwargs: Any) -> OperatorClient:
        """A client for ``credentials`` (see :func:`load_credentials`)."""
        return cls(credentials.base_url, credentials.public_key, credentials.secret_key, **kwargs)

    async def __aenter__(self) -> OperatorClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the session this client made (never one it was given)."""
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    def _timestamp(self) -> int:
        now = time.time_ns() // 1_000_000
        # Strictly increasing: the same body twice in one millisecond must not sign alike.
        self._last_ms = max(now, self._last_ms + 1)
        return self._last_ms

    def sign(self, body: bytes) -> dict[str, str]:
        """The three authentication headers for a request with this raw body."""
        return signed_headers(self._secret_key, self._public_key, self._timestamp(), body)

    async def request(
        self, method: str, path: str, body: Any = None, *, raw: bytes | None = None
    ) -> tuple[int, Any]:
        """Send ``method path``; ``body`` is serialised to JSON (``raw``: these exact bytes).
        Returns the status and the parsed JSON answer (None for an empty or non-JSON one)."""
        if raw is not None:
            data = raw
        elif body is not None:
            data = orjson.dumps(body)
        else:
            data = EMPTY_BODY
        headers = self.sign(data)
        if data:
            headers["content-type"] = "application/json"
        if self._session is None:
            self._session = aiohttp.ClientSession()
        async with self._session.request(
            method.upper(),
            self.base_url + path,
            data=data or None,
            headers=headers,
            timeout=self._timeout,
        ) as response:
            content = await response.read()
            try:
                parsed = orjson.loads(content) if content else None
            except orjson.JSONDecodeError:
                parsed = None
            return response.status, parsed

    async def get(self, path: str) -> tuple[int, Any]:
        """A signed GET."""
        return await self.request("GET", path)

    async def post(self, path: str, body: Any) -> tuple[int, Any]:
        """A signed POST of ``body`` as JSON."""
        return await self.request("POST", path, body)

    async def patch(self, path: str, body: Any) -> tuple[int, Any]:
        """A signed PATCH of ``body`` as JSON."""
        return await self.request("PATCH", path, body)
