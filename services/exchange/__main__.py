"""Exchanges from the command line: ``python -m exchange --help``.

``start`` quotes, reserves and (unless ``--no-wait``) runs the exchange to its end, printing the
exchange as JSON at every change of state. An exchange id is its idempotency key: starting the
same exchange again (same id, same request) continues it wherever it stands. ``resume`` takes
every unfinished exchange as far as it goes; ``resolve`` is for one that needs a person.

Exit status: 0 settled or voided (or shown), 1 refused or bad input (nothing held), 2
configuration, 3 not finished yet (it continues on the next ``start``/``resume`` or in the
operator API).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid
from typing import Any

import orjson

from exchange.orchestrator import Refusal
from exchange.requests import build_request
from exchange.runtime import open_runtime
from exchange.settings import ExchangeSettings
from exchange.store import FINAL, SETTLED, VOIDED, ExchangeRow
from ledger_core.errors import error_body
from ledger_core.requests import RequestError
from wallet_platform.config import ConfigError, load_settings
from wallet_platform.logging import setup_logging
from wallet_platform.schema import SchemaError

CLI_REPLY_PARTITION = 7  # the last partition of ledger.replies is reserved for operator tools


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m exchange",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--reply-partition", type=int, default=CLI_REPLY_PARTITION)
    parser.add_argument("--log-level", default="WARNING")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("start", help="exchange an amount of one balance into another")
    for name in ("customer_id", "source_balance_id", "target_balance_id", "amount"):
        p.add_argument(name)
    p.add_argument("currency", help="the source balance's currency")
    p.add_argument("target_currency", help="the target balance's currency")
    p.add_argument("--exchange-id", default=None, help="idempotency key (default: random)")
    p.add_argument("--no-wait", action="store_true", help="stop once the amount is reserved")
    p = sub.add_parser("show", help="an exchange as it stands")
    p.add_argument("customer_id")
    p.add_argument("exchange_id")
    sub.add_parser("resume", help="take every unfinished exchange as far as it goes")
    p = sub.add_parser("resolve", help="an exchange in 'attention': the order found, or none")
    p.add_argument("customer_id")
    p.add_argument("exchange_id")
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--order-id", help="the order found at Swapgate: poll it from here on")
    how.add_argument("--void", metavar="REASON", help="there is no order: release the hold")
    return parser


def emit(data: Any) -> None:
    print(orjson.dumps(data).decode(), flush=True)


def exit_code(row: ExchangeRow) -> int:
    if row.state in (SETTLED, VOIDED):
        return 0
    return 1 if row.state in FINAL else 3


async def run(args: argparse.Namespace, settings: ExchangeSettings) -> int:
    if not settings.exchanges_enabled:
        raise ConfigError("configuration error: WALLET_SWAPGATE_BASE_URL is not set")
    request = None
    if args.command == "start":
        try:
            request = build_request(
                args.customer_id,
                args.exchange_id or uuid.uuid4().hex,
                args.source_balance_id,
                args.target_balance_id,
                args.amount,
                args.currency.upper(),
                args.target_currency.upper(),
            )
        except RequestError as exc:  # refused before connecting to anything
            emit(orjson.loads(error_body(exc.code, exc.message)))
            return 1
    async with open_runtime(
        settings, reply_partition=args.reply_partition, client_id="exchange-cli"
    ) as runtime:
        orchestrator = runtime.orchestrator

        async def show(row: ExchangeRow) -> None:
            emit(row.view())

        if args.command == "show":
            row = await orchestrator.get(args.customer_id, args.exchange_id)
            if row is None:
                emit(orjson.loads(error_body("exchange_not_found")))
                return 1
            emit(row.view())
            return 0
        if args.command == "resume":
            from exchange import store

            worst = 0
            for customer_id, exchange_id in await store.unfinished(runtime.pool):
                row = await orchestrator.drive(customer_id, exchange_id, on_change=show)
                emit(row.view())
                worst = max(worst, exit_code(row))
            return worst
        if args.command == "resolve":
            row = await orchestrator.resolve(
                args.customer_id, args.exchange_id, order_id=args.order_id, void_reason=args.void
            )
            emit(row.view())
            row = await orchestrator.drive(
                args.customer_id, args.exchange_id, on_change=show, follow=True
            )
            return exit_code(row)
        assert request is not None
        try:
            answer = await orchestrator.start(request, background=False)
        except Refusal as exc:
            emit(exc.body())
            return 1
        emit(answer.body)
        if answer.status >= 400:
            return 1
        if args.no_wait:
            return 0
        row = await orchestrator.drive(
            request.customer_id, request.exchange_id, on_change=show, follow=True
        )
        return exit_code(row)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging("exchange-cli", args.log_level.upper(), sys.stderr)
    try:
        settings = load_settings(ExchangeSettings)
        return asyncio.run(run(args, settings))
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    except SchemaError as exc:
        print(f"schema: {exc}", file=sys.stderr)
        return 2
    except (LookupError, ValueError) as exc:
        emit({"error": "invalid_field", "message": str(exc)})
        return 1


if __name__ == "__main__":
    sys.exit(main())
