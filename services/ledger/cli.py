"""The operators' command line until the operator API exists: ``python -m ledger.cli --help``.

Writes (customers, balances, deposits, withdrawals, blocks) go through ``ledger.commands`` like
every other write and wait for the ledger's outcome; reads (show, statement) query the ledger's
tables read-only.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from pathlib import Path

import asyncpg
import jwt
import orjson

from ledger_core.commands import Command, CreateCustomer, MoneyCommand, OpenBalance, SetBlocked
from ledger_core.money import AmountError, format_amount, parse_amount
from ledger_core.requests import RequestError, check_comment, check_id
from wallet_platform.command_bus import OutcomeTimeout, open_command_bus
from wallet_platform.config import CommonSettings, load_settings

CLI_REPLY_PARTITION = 7  # the last partition of ledger.replies is reserved for operator tools


async def submit(settings: CommonSettings, cmd: Command, reply_partition: int) -> int:
    try:
        async with open_command_bus(
            settings.kafka_bootstrap,
            "ledger-cli",
            topic_prefix=settings.topic_prefix,
            reply_partition=reply_partition,
        ) as bus:
            status, body = await bus.submit(cmd, 15.0)
    except OutcomeTimeout:
        print("the ledger did not answer within 15 s; the command is queued and will be applied")
        return 3
    print(status, body.decode())
    return 0 if status < 400 else 1


async def show(settings: CommonSettings, customer_id: str, balance_id: str, limit: int) -> int:
    conn = await asyncpg.connect(settings.pg_dsn)
    try:
        account = await conn.fetchrow(
            """SELECT a.account_id, a.currency, c.blocked FROM accounts a
                 JOIN customers c USING (customer_id)
                WHERE a.customer_id = $1 AND a.balance_id = $2 AND a.kind = 'customer'""",
            customer_id,
            balance_id,
        )
        if account is None:
            print(f"no balance {balance_id!r} for customer {customer_id!r}")
            return 1
        currency = account["currency"]
        rows = await conn.fetch(
            """SELECT p.seq, p.amount, p.balance_after, e.kind, e.request_id, e.comment,
                      e.created_at
                 FROM postings p JOIN journal_entries e USING (entry_id)
                WHERE p.account_id = $1 ORDER BY p.seq DESC LIMIT $2""",
            account["account_id"],
            limit,
        )
        reserved = int(
            await conn.fetchval(
                """SELECT coalesce(sum(amount), 0) FROM exchange_reservations
                    WHERE source_account = $1 AND status = 'open'""",
                account["account_id"],
            )
        )
    finally:
        await conn.close()
    balance = int(rows[0]["balance_after"]) if rows else 0
    blocked = " (customer blocked)" if account["blocked"] else ""
    held = ""
    if reserved:
        held = (
            f" ({format_amount(reserved, currency)} held by exchanges,"
            f" {format_amount(balance - reserved, currency)} available)"
        )
    print(
        f"{printable(customer_id)}/{printable(balance_id)}: "
        f"{format_amount(balance, currency)} {currency}{held}{blocked}"
    )
    for r in reversed(rows):
        print(
            f"  #{r['seq']:<6} {r['created_at']:%Y-%m-%d %H:%M:%S} {r['kind']:<10} "
            f"{format_amount(int(r['amount']), currency):>20} -> "
            f"{format_amount(int(r['balance_after']), currency):>20}  "
            f"{printable(r['request_id'])}  {printable(r['comment'])}"
        )
    return 0


def printable(text: str) -> str:
    """``text`` safe to print on a terminal: every character that is not printable text (controls
    such as ESC, which start ANSI escape sequences; line and paragraph separators; bidi and other
    format characters; lone surrogates) is shown as its Python escape (``\\x1b``, ``\\u202e``),
    and a backslash as two, so an escape shown can not be mistaken for one written.

    Rows written before the edge refused such text may hold it, so the statement must not trust
    what it reads.
    """
    if text.isprintable() and "\\" not in text:
        return text
    return "".join(
        c if c == " " or (c.isprintable() and c != "\\") else c.encode("unicode_escape").decode()
        for c in text
    )


def sign_token(private_key: Path, audience: str, issuer: str, lifetime: int) -> str:
    """A Quadcode-style ES256 token (for demos and tests against a local key pair)."""
    now = int(time.time())
    return jwt.encode(
        {"iss": issuer, "aud": audience, "iat": now, "exp": now + lifetime},
        private_key.read_bytes(),
        algorithm="ES256",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ledger.cli", description=__doc__)
    parser.add_argument("--reply-partition", type=int, default=CLI_REPLY_PARTITION)
    sub = parser.add_subparsers(dest="command", required=True)

    def with_request_id(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--request-id", default=None, help="idempotency key (default: random)")
        return p

    with_request_id(sub.add_parser("create-customer")).add_argument("customer_id")
    p = with_request_id(sub.add_parser("open-balance"))
    p.add_argument("customer_id")
    p.add_argument("balance_id")
    p.add_argument("currency")
    for name in ("deposit", "withdraw"):
        p = with_request_id(sub.add_parser(name))
        p.add_argument("customer_id")
        p.add_argument("balance_id")
        p.add_argument("amount")
        p.add_argument("currency")
        p.add_argument("--comment", default=f"operator {name}")
    for name in ("block", "unblock"):
        with_request_id(sub.add_parser(name)).add_argument("customer_id")
    for name in ("show", "statement"):
        p = sub.add_parser(name)
        p.add_argument("customer_id")
        p.add_argument("balance_id")
        p.add_argument("--limit", type=int, default=20 if name == "statement" else 0)
    p = sub.add_parser("sign-token", help="mint a Quadcode-style token from a private key")
    p.add_argument("--private-key", type=Path, required=True)
    p.add_argument("--audience", default="sandbox")
    p.add_argument("--issuer", default="qc")
    p.add_argument("--lifetime", type=int, default=600)
    return parser


def command_from(args: argparse.Namespace) -> Command:
    """The command the arguments ask for; ids and comments obey the edge's rules (raises
    :class:`RequestError`), so no operator creates a customer or balance Quadcode can not call."""
    request_id = check_id(args.request_id or uuid.uuid4().hex, "request_id")
    check_id(args.customer_id, "customer_id")
    if hasattr(args, "balance_id"):
        check_id(args.balance_id, "balance_id")
    if args.command == "create-customer":
        return CreateCustomer(args.customer_id, request_id)
    if args.command == "open-balance":
        return OpenBalance(args.customer_id, args.balance_id, args.currency.upper(), request_id)
    if args.command in ("deposit", "withdraw"):
        currency = args.currency.upper()
        parse_amount(args.amount, currency)  # refuse bad amounts before anything is sent
        return MoneyCommand(
            "deposit" if args.command == "deposit" else "withdrawal",
            args.customer_id,
            args.balance_id,
            request_id,
            args.amount,
            currency,
            check_comment(args.comment),
        )
    return SetBlocked(args.customer_id, args.command == "block", request_id)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "sign-token":
        print(sign_token(args.private_key, args.audience, args.issuer, args.lifetime))
        return 0
    settings = load_settings(CommonSettings)
    if args.command in ("show", "statement"):
        return asyncio.run(show(settings, args.customer_id, args.balance_id, args.limit or 1))
    try:
        cmd = command_from(args)
    except (AmountError, RequestError) as exc:
        print(orjson.dumps({"error": exc.code, "message": exc.message}).decode())
        return 1
    return asyncio.run(submit(settings, cmd, args.reply_partition))


if __name__ == "__main__":
    sys.exit(main())
