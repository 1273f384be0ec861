"""``python -m simulators.quadcode [serve] ...`` runs the simulator;
``python -m simulators.quadcode trade ...`` asks a running one to play trades."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence

import aiohttp
import orjson
from aiohttp import web

from quadcode_gateway.tokens import KeyFileError
from simulators.quadcode.app import build_app
from simulators.quadcode.config import SimulatorConfig, config_from_args
from simulators.quadcode.gateway import STATE
from wallet_platform.logging import setup_logging


async def serve(config: SimulatorConfig) -> None:
    """Serve until SIGINT or SIGTERM; logs ``simulator_ready`` with the bound port."""
    log = setup_logging("quadcode-simulator", config.log_level)
    app = build_app(config)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, config.host, config.port)
        await site.start()
        host, port = runner.addresses[0][:2]
        base_url = f"http://{config.host}:{port}"
        app[STATE].public_base_url = base_url
        log.info(
            "simulator_ready",
            host=host,
            port=port,
            url=base_url,
            audience=config.audience.value,
            issuer=config.issuer,
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
        log.info("simulator_stopping")
    finally:
        await runner.cleanup()


def trade_parser() -> argparse.ArgumentParser:
    """Arguments of ``python -m simulators.quadcode trade``."""
    parser = argparse.ArgumentParser(
        prog="python -m simulators.quadcode trade",
        description="Ask a running simulator to open and close options against the wallet.",
    )
    parser.add_argument("--simulator-url", required=True, help="e.g. http://127.0.0.1:8081")
    parser.add_argument("--customer-id", required=True)
    parser.add_argument("--balance-id", required=True)
    parser.add_argument("--currency", required=True, help="the balance's currency code")
    parser.add_argument("--trades", type=int, default=1)
    parser.add_argument("--stake", default="1.00", help="decimal string")
    parser.add_argument("--payout", help="payout ratio of a win, decimal string")
    parser.add_argument("--wallet-base-url", help="overrides the simulator's --wallet-base-url")
    parser.add_argument("--wallet-timeout", type=float)
    return parser


async def request_trades(args: argparse.Namespace) -> tuple[int, bytes]:
    """POST the plan to ``/_sim/trade``; returns the status and the report."""
    plan: dict[str, object] = {
        "customer_id": args.customer_id,
        "balance_id": args.balance_id,
        "currency_code": args.currency,
        "trades": args.trades,
        "stake": args.stake,
    }
    if args.payout:
        plan["payout"] = args.payout
    if args.wallet_base_url:
        plan["wallet_base_url"] = args.wallet_base_url
    if args.wallet_timeout:
        plan["wallet_timeout"] = args.wallet_timeout
    url = args.simulator_url.rstrip("/") + "/_sim/trade"
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            url,
            data=orjson.dumps(plan),
            headers={"Content-Type": "application/json"},
            timeout=aiohttp.ClientTimeout(total=600),
        ) as response,
    ):
        return response.status, await response.read()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["trade"]:
        status, body = asyncio.run(request_trades(trade_parser().parse_args(args[1:])))
        try:
            shown = orjson.dumps(orjson.loads(body), option=orjson.OPT_INDENT_2).decode()
        except orjson.JSONDecodeError:
            shown = body.decode("utf-8", "replace")
        print(shown)
        return 0 if status == 200 else 1
    if args[:1] == ["serve"]:
        args = args[1:]
    try:
        asyncio.run(serve(config_from_args(args)))
    except KeyFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
