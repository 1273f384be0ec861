"""The reference accounting consumer: ``python -m accounting`` follows ledger.events into its
books; the subcommands print or export them (``python -m accounting --help``)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import Iterator
from datetime import date
from typing import TextIO

import asyncpg
from aiohttp import web

from accounting import exports, store
from accounting.bookkeeper import Bookkeeper
from accounting.settings import AccountingSettings
from wallet_platform import topics
from wallet_platform.backoff import Backoff
from wallet_platform.config import load_settings
from wallet_platform.health import kafka_check
from wallet_platform.kafka import make_consumer, wait_for_kafka
from wallet_platform.logging import setup_logging
from wallet_platform.postgres import connect_with_backoff
from wallet_platform.schema import migrate
from wallet_platform.service import (
    READINESS,
    add_operational_routes,
    install_uvloop,
    serve_until_signalled,
)


async def run(settings: AccountingSettings) -> None:
    """Follow ledger.events into the books until SIGTERM/SIGINT."""
    log = setup_logging("accounting", settings.log_level)
    dsn = settings.books_dsn
    conn = await connect_with_backoff(dsn)
    # The books' schema is the consumer's own: it brings it up to date itself (an advisory lock
    # serialises concurrent starts), so a new consumer starts from nothing.
    applied = await migrate(conn, store.BOOKS)
    if applied:
        log.info("books_schema_migrated", versions=applied)
    topic = topics.topic_name(topics.EVENTS, settings.topic_prefix)
    consumer = make_consumer(
        settings.kafka_bootstrap,
        "accounting",
        group_id=settings.topic_prefix + settings.accounting_group,
        max_poll_records=settings.accounting_max_batch,
        fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
    )
    bookkeeper = Bookkeeper(
        consumer,
        topic,
        lambda: asyncpg.connect(dsn, timeout=5),
        max_batch=settings.accounting_max_batch,
        backoff=Backoff(cap=5.0),
        conn=conn,
    )
    consumer.subscribe([topic], listener=bookkeeper)
    await wait_for_kafka(settings.kafka_bootstrap)
    await consumer.start()

    stop = asyncio.Event()
    stop_serving = asyncio.Event()
    task = asyncio.create_task(bookkeeper.run(stop), name="bookkeeper")

    def died(t: asyncio.Task[None]) -> None:
        if not t.cancelled() and t.exception() is not None:
            log.error("bookkeeper_crashed", error=repr(t.exception()))
            stop_serving.set()

    task.add_done_callback(died)

    async def shutdown() -> None:
        stop.set()
        try:
            await task
        except Exception:
            log.exception("bookkeeper_failed")
        await consumer.stop()
        await bookkeeper.close()

    app = web.Application()
    add_operational_routes(app)
    app[READINESS].extend([bookkeeper.readiness, kafka_check(consumer)])
    await serve_until_signalled(
        app, settings, settings.accounting_port, on_stop=shutdown, stop=stop_serving
    )
    if task.done() and not task.cancelled() and task.exception() is not None:
        raise SystemExit(1)


@contextlib.contextmanager
def _output(path: str | None) -> Iterator[TextIO]:
    if path is None:
        yield sys.stdout
        return
    # newline="": the CSV writer writes RFC 4180's CRLF itself.
    with open(path, "w", encoding="utf-8", newline="") as fh:
        yield fh


async def _report(settings: AccountingSettings, args: argparse.Namespace) -> None:
    conn = await asyncpg.connect(settings.books_dsn)
    try:
        if args.command == "migrate":
            done = await migrate(conn, store.BOOKS)
            print(f"applied {done}" if done else "books schema up to date")
        elif args.command == "trial-balance":
            rows = exports.trial_balance_rows(await store.trial_balance(conn, args.as_of))
            with _output(args.out) as out:
                if args.csv or args.out:
                    exports.write_trial_balance_csv(out, rows)
                else:
                    as_of = args.as_of.isoformat() if args.as_of else "now"
                    out.write(f"trial balance as of {as_of}\n")
                    out.write(exports.format_trial_balance(rows))
        elif args.command == "export":
            lines = await store.lines_between(conn, args.first, args.last)
            with _output(args.out) as out:
                count = exports.write_lines(out, lines)
            print(f"{count} general-ledger lines", file=sys.stderr)
        else:
            days = await store.daily_balances_between(conn, args.first, args.last)
            with _output(args.out) as out:
                count = exports.write_daily_balances(out, days)
            print(f"{count} account-days", file=sys.stderr)
    finally:
        await conn.close()


def parser() -> argparse.ArgumentParser:
    """The command line: no subcommand runs the consumer."""
    p = argparse.ArgumentParser(
        prog="python -m accounting",
        description="The reference accounting consumer of ledger.events. Without a command it "
        "follows the topic into its books (schema `accounting`, settings WALLET_ACCOUNTING_*); "
        "the commands read the books. Dates are UTC days, YYYY-MM-DD, inclusive.",
    )
    sub = p.add_subparsers(dest="command")
    sub.add_parser("run", help="follow ledger.events into the books (the default)")
    sub.add_parser("migrate", help="create or update the books' schema")
    tb = sub.add_parser("trial-balance", help="debits, credits and balances per account")
    tb.add_argument("--as-of", type=date.fromisoformat, help="up to and including this day")
    tb.add_argument("--csv", action="store_true", help="CSV instead of a table")
    tb.add_argument("--out", help="write CSV to this file")
    for name, what in (
        ("export", "general-ledger lines of a period as CSV"),
        ("daily-balances", "opening, debits, credits, closing per account and day as CSV"),
    ):
        e = sub.add_parser(name, help=what)
        e.add_argument("--from", dest="first", type=date.fromisoformat, required=True)
        e.add_argument("--to", dest="last", type=date.fromisoformat, required=True)
        e.add_argument("--out", help="file to write (default: standard output)")
    return p


def main() -> None:
    args = parser().parse_args()
    settings = load_settings(AccountingSettings)
    if args.command in (None, "run"):
        install_uvloop()
        asyncio.run(run(settings))
        return
    asyncio.run(_report(settings, args))


if __name__ == "__main__":
    main()
