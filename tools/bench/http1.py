"""A minimal HTTP/1.1 keep-alive client for the load generator.

The load generator must not be the bottleneck on a 2-core machine that also runs Kafka, Postgres
and the services, so it skips a general-purpose client: requests are pre-encoded bytes, and a
response is parsed just far enough to get its status and body (the wallet always sends
Content-Length). Each answer is handed to a plain callback, not to an awaiting task: the load
generator's own CPU per request is part of what the machine spends, so it is kept small.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import cast

OnAnswer = Callable[[int, bytes], None]


class Connection(asyncio.Protocol):
    """One keep-alive connection; one request in flight at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._on_answer: OnAnswer | None = None
        self._closed = asyncio.get_running_loop().create_future()

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_connection(cls, host, port)
        return protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def connection_lost(self, exc: Exception | None) -> None:
        on_answer, self._on_answer = self._on_answer, None
        if on_answer is not None:
            on_answer(0, b"connection lost")
        if not self._closed.done():
            self._closed.set_result(None)
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        self._try_complete()

    def _try_complete(self) -> None:
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0 or self._on_answer is None:
            return
        head = bytes(self._buffer[:end])
        length = 0
        lower = head.lower()
        pos = lower.find(b"content-length:")
        if pos >= 0:
            line_end = lower.find(b"\r\n", pos)
            length = int(lower[pos + 15 : line_end if line_end >= 0 else None])
        total = end + 4 + length
        if len(self._buffer) < total:
            return
        status = int(head[9:12])
        body = bytes(self._buffer[end + 4 : total])
        del self._buffer[:total]
        on_answer, self._on_answer = self._on_answer, None
        on_answer(status, body)

    def send(self, raw: bytes, on_answer: OnAnswer) -> None:
        """Send one request; ``on_answer(status, body)`` is called with its answer, or with
        status 0 if the connection is lost first."""
        if self.transport is None:
            on_answer(0, b"connection closed")
            return
        self._on_answer = on_answer
        self.transport.write(raw)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def encode_request(method: str, path: str, host: str, token: str, body: bytes = b"") -> bytes:
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body
