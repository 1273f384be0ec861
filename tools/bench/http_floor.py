"""``python -m bench.http_floor``: what the HTTP layer alone costs per request, aiohttp's
low-level server (the edge's public port today) against a bare ``asyncio.Protocol`` on
httptools' C parser (what "an HTTP/1.1 protocol of our own" would be at best).

Issue 14 asks whether the edge should leave aiohttp for a protocol of its own. This answers the
ceiling of that before anyone builds it: both servers answer the same debit-shaped POST with the
same JSON body, after one turn of the event loop (as a reply from the command bus would come),
under uvloop, with nothing else (no authentication, no validation, no Kafka). wrk drives each in
turn (closed loop, ``--connections``), the rounds alternate, and the server's CPU (user + system,
from ``/proc``) per answered request is printed per round with the medians. Whatever the
protocol of our own saved in the edge could be no more than the difference, since it would
still need the edge's checks and limits (``wallet_platform.service``) on top.

Needs ``wrk`` (as ``make bench-compare``) and ``httptools`` (``pip install httptools``; not a
dependency of the services). A developer tool: the test suite never runs it.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from bench.procstat import cpu_seconds
from bench.side_by_side import parse_wrk_output

SERVERS = ("aiohttp", "httptools")
BODY = orjson.dumps({"balance": "1000.00", "currency_code": "USD", "request_id": "r" * 24})
REQUEST_BODY = (
    '{"request_id":"abcdefabcdefabcdef01","amount":"1.00","currency_code":"USD",'
    '"order_id":"o1","comment":"stake"}'
)
PATH = "/v1/customers/c1/balances/b1/debit"
WRK_SCRIPT = f"""
wrk.method = "POST"
wrk.body = '{REQUEST_BODY}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {"x" * 300}"
"""


async def _after_one_turn() -> bytes:
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[bytes] = loop.create_future()
    loop.call_soon(answer.set_result, BODY)
    return await answer


async def _serve_aiohttp(port: int) -> None:
    from aiohttp import web

    async def handle(request: web.BaseRequest) -> web.Response:
        await request.read()
        body = await _after_one_turn()
        return web.Response(status=201, body=body, content_type="application/json")

    await asyncio.get_running_loop().create_server(web.Server(handle), "127.0.0.1", port)


async def _serve_httptools(port: int) -> None:
    import httptools  # type: ignore[import-not-found, unused-ignore]

    head = b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"

    class Protocol(asyncio.Protocol):
        def connection_made(self, transport: Any) -> None:
            self.transport = transport
            self.parser = httptools.HttpRequestParser(self)
            self.body: list[bytes] = []
            self.headers: list[tuple[bytes, bytes]] = []
            self.url = b""

        def data_received(self, data: bytes) -> None:
            self.parser.feed_data(data)

        def on_url(self, url: bytes) -> None:
            self.url = url

        def on_header(self, name: bytes, value: bytes) -> None:
            self.headers.append((name, value))

        def on_body(self, chunk: bytes) -> None:
            self.body.append(chunk)

        def on_message_complete(self) -> None:
            self.request = (self.url, self.headers, b"".join(self.body))  # what a handler gets
            self.body, self.headers = [], []
            asyncio.get_running_loop().create_task(self.answer())

        async def answer(self) -> None:
            payload = await _after_one_turn()
            date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime()).encode()
            self.transport.write(
                head % len(payload) + b"Date: " + date + b"\r\nServer: wallet\r\n\r\n" + payload
            )

    await asyncio.get_running_loop().create_server(Protocol, "127.0.0.1", port)


async def _serve(kind: str, port: int) -> None:
    await (_serve_aiohttp if kind == "aiohttp" else _serve_httptools)(port)
    print("ready", flush=True)
    await asyncio.Event().wait()


def _measure(kind: str, port: int, seconds: int, connections: int, script: Path) -> float:
    """µs of the server's CPU per answered request over one wrk run."""
    server = subprocess.Popen(
        [sys.executable, "-m", "bench.http_floor", "--serve", kind, "--port", str(port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        if server.stdout.readline().strip() != "ready":
            raise SystemExit(f"the {kind} server did not start")
        before = cpu_seconds(server.pid)
        url = f"http://127.0.0.1:{port}{PATH}"
        wrk = subprocess.run(
            ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "-s", str(script), url],
            capture_output=True,
            text=True,
            check=True,
            timeout=seconds + 30,
        )
        spent = cpu_seconds(server.pid) - before
    finally:
        server.terminate()
        server.wait(timeout=10)
    run = parse_wrk_output(wrk.stdout)
    if run.errors:
        raise SystemExit(f"the {kind} server answered badly:\n{wrk.stdout}")
    return spent / run.requests * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.http_floor", description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--port", type=int, default=31090)
    parser.add_argument("--serve", choices=SERVERS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        import uvloop

        uvloop.install()
        asyncio.run(_serve(args.serve, args.port))
        return
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install wrk)")
    try:
        import httptools  # noqa: F401
    except ImportError:
        raise SystemExit("httptools is not installed (pip install httptools)") from None
    results: dict[str, list[float]] = {kind: [] for kind in SERVERS}
    with tempfile.TemporaryDirectory() as scratch:
        script = Path(scratch) / "post.lua"
        script.write_text(WRK_SCRIPT)
        for round_ in range(args.rounds):
            order = SERVERS if round_ % 2 == 0 else tuple(reversed(SERVERS))
            for kind in order:
                cost = _measure(kind, args.port, args.seconds, args.connections, script)
                results[kind].append(cost)
                print(f"round {round_ + 1}  {kind:<9}  {cost:7.1f} µs/request", flush=True)
    medians = {kind: statistics.median(costs) for kind, costs in results.items()}
    print(
        f"medians: aiohttp {medians['aiohttp']:.1f}, httptools {medians['httptools']:.1f} "
        f"µs/request (difference {medians['aiohttp'] - medians['httptools']:.1f})"
    )


if __name__ == "__main__":
    main()
