"""``python -m simulators.quadcode [serve] ...`` runs the simulator;
``python -m simulators.quadcode trade ...`` asks a running one to play trades."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence
from typing import Any

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
    parser.add_argument(
        "--format",
        choices=("json", "text"),
        default="json",
        help="json: the whole report; text: one line per option (for demos)",
    )
    return parser


def _call_text(call: dict[str, Any]) -> str:
    # Every attempt is shown: a retry after a lost answer reads "connection_error -> 201".
    attempts = " -> ".join(str(attempt) for attempt in call.get("attempts", []))
    head = f"{call['operation']} {call['amount']}: {attempts}"
    body = call.get("body")
    if not isinstance(body, dict):
        return head
    if call.get("status") == 201:
        return f"{head}, balance {body.get('balance_current_amount')}"
    return f"{head} ({body.get('error')})"


def render_text(report: dict[str, Any]) -> str:
    """The trade report as a few human-readable lines: balances, and per option its calls."""
    currency = report.get("currency_code", "")
    lines = [f"balance before (GET): {report.get('balance_before')} {currency}"]
    for trade in report.get("trades", []):
        calls = [_call_text(trade["debit"])]
        if trade.get("credit"):
            calls.append(_call_text(trade["credit"]))
        lines.append(f"option {trade['number']} {trade['outcome']:<4}  " + "; ".join(calls))
    lines.append(f"balance after (GET):  {report.get('balance_after')} {currency}")
    return "\n".join(lines)


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
        trade_args = trade_parser().parse_args(args[1:])
        status, body = asyncio.run(request_trades(trade_args))
        try:
            report = orjson.loads(body)
        except orjson.JSONDecodeError:
            print(body.decode("utf-8", "replace"))
            return 1
        if trade_args.format == "text" and status == 200 and isinstance(report, dict):
            print(render_text(report))
        else:
            print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
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
