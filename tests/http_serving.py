"""Test support: an aiohttp app served in this process by ``serve_until_signalled`` (public and
operational ports, with the settings' HTTP limits), and a raw HTTP/1.1 client that controls every
byte and notices when the server closes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiohttp import web

from bench.stack import free_port
from wallet_platform.config import CommonSettings
from wallet_platform.service import serve_until_signalled


@dataclass(frozen=True)
class Ports:
    public: int
    operations: int


@contextlib.asynccontextmanager
async def serving(app: web.Application, **settings: object) -> AsyncIterator[Ports]:
    """Serve ``app`` (built with ``add_operational_app``) until the block ends; ``settings`` are
    :class:`CommonSettings` fields such as ``http_head_timeout_ms``."""
    ports = Ports(free_port(), free_port())
    stop = asyncio.Event()
    task = asyncio.create_task(
        serve_until_signalled(
            app, CommonSettings(**settings), ports.public, ops_port=ports.operations, stop=stop
        )
    )
    try:
        for port in (ports.operations, ports.public):
            await until_listening(port, task)
        yield ports
    finally:
        stop.set()
        await task


async def until_listening(port: int, task: asyncio.Task[None]) -> None:
    for _ in range(200):
        if task.done():
            task.result()  # raises what stopped it
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.02)
            continue
        writer.close()
        return
    raise TimeoutError(f"nothing listens on {port}")


def get(path: str, *headers: str) -> bytes:
    """A GET request head, kept alive."""
    lines = [f"GET {path} HTTP/1.1", "Host: test", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class RawConnection:
    """One TCP connection speaking HTTP/1.1 by hand."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int) -> RawConnection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def response(self, timeout: float = 5.0) -> tuple[int, bytes]:
        """The next response's status and body (Content-Length framed)."""
        async with asyncio.timeout(timeout):
            head = await self.reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            return status, await self.reader.readexactly(length)

    async def closed_by_server(self, within: float) -> bool:
        """Whether the server closes the connection (EOF or reset) within ``within`` seconds;
        anything it sends meanwhile is read and dropped."""
        try:
            async with asyncio.timeout(within):
                while await self.reader.read(65536):
                    pass
        except TimeoutError:
            return False
        except ConnectionError:
            return True
        return True

    async def read_all(self, within: float) -> bytes:
        """Everything the server sends until it closes (raises TimeoutError if it does not)."""
        async with asyncio.timeout(within):
            return await self.reader.read()

    def close(self) -> None:
        self.writer.close()
