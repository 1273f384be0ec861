"""The operator API's ledger routes: customers, balances, deposits and withdrawals, statements,
the balance at a time, journal entries and the trial balance.

Writes are commands on ``ledger.commands``, exactly as the callbacks' and the CLI's: idempotent
by the caller's ``requestId`` through the ledger, which answers with its stored outcome (status
and body, byte for byte on a retry). This process reads the answers on its own partition of
``ledger.replies`` (``WALLET_OPERATOR_API_REPLY_PARTITION``). Reads query the ledger's tables
read-only (:mod:`operator_api.ledger_reads`); parsing and answers are pure
(:mod:`operator_api.ledger_requests`, :mod:`operator_api.ledger_views`). The whole surface:
``docs/operator-api.md`` and ``docs/api/operator-api.yaml``.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import structlog
from aiohttp import web
from aiokafka.errors import KafkaError

from ledger_core.commands import Command, MoneyCommand
from ledger_core.money import format_amount
from ledger_core.requests import RequestError, check_id
from operator_api import ledger_reads as reads
from operator_api import ledger_requests as parse
from operator_api.ledger_settings import OperatorLedgerSettings
from operator_api.ledger_views import (
    balance_view,
    line_json,
    next_after_seq,
    rfc3339,
    statement_csv,
    trial_balance,
    trial_balance_view,
)
from wallet_platform.command_bus import (
    CommandBus,
    CommandNotQueued,
    OutcomeTimeout,
    open_command_bus,
)
from wallet_platform.health import command_bus_check, postgres_check
from wallet_platform.http import json_error
from wallet_platform.postgres import UNAVAILABLE as DATABASE_AWAY
from wallet_platform.schema import check_schema
from wallet_platform.service import READINESS

log = structlog.get_logger(__name__)

LEDGER_SETTINGS = web.AppKey("ledger_settings", OperatorLedgerSettings)
LEDGER_POOL = web.AppKey("ledger_pool", asyncpg.Pool)
LEDGER_BUS = web.AppKey("ledger_bus", CommandBus)


@dataclass(frozen=True, slots=True)
class MoneyGate:
    """What may hold a deposit or withdrawal back instead of sending it: four eyes
    (:mod:`operator_api.adjustment_routes`). ``hold`` answers for it, or None to send it."""

    hold: Callable[[web.Request, MoneyCommand], Awaitable[web.Response | None]]


MONEY_GATE = web.AppKey("money_gate", MoneyGate)

NO_DATABASE = "The ledger's database is unavailable; retry the request."
NOT_QUEUED = "Kafka did not take the command; it was not sent. Retry the same request."

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _answers_errors(handler: Handler) -> Handler:
    """A refused request is its 400 code; a database that is away a 503 ``unavailable`` (the
    reads change nothing, so a retry is always safe)."""

    async def answered(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except RequestError as exc:
            return json_error(exc.code, exc.message)
        except DATABASE_AWAY as exc:
            log.warning("ledger_database_unavailable", path=request.path, error=repr(exc))
            return json_error("unavailable", NO_DATABASE)

    answered.__name__ = handler.__name__
    answered.__doc__ = handler.__doc__
    return answered


def _json(body: dict[str, Any], status: int = 200) -> web.Response:
    # Operators' answers name customers and amounts: never kept by a cache on the way.
    return web.json_response(body, status=status, headers={"Cache-Control": "no-store"})


async def _submit(request: web.Request, cmd: Command) -> web.Response:
    """Send ``cmd`` and answer the ledger's outcome as it stored it (status and JSON body)."""
    bus = request.app[LEDGER_BUS]
    try:
        status, body = await bus.submit(
            cmd, request.app[LEDGER_SETTINGS].operator_api_ledger_timeout
        )
    except CommandNotQueued:
        return json_error("unavailable", NOT_QUEUED)
    except OutcomeTimeout:
        # Queued: it will be applied once, and the same requestId then gets the stored outcome.
        return json_error("ledger_timeout")
    except KafkaError as exc:
        log.warning("ledger_command_not_delivered", error=repr(exc))
        return json_error("unavailable", NOT_QUEUED)
    return web.Response(
        status=status,
        body=body,
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


def _path_id(request: web.Request, key: str, name: str) -> str:
    return check_id(request.match_info[key], name)


@_answers_errors
async def create_customer(request: web.Request) -> web.Response:
    """``POST /v1/customers`` ``{customerId, requestId?}``."""
    return await _submit(request, parse.create_customer(await request.read()))


@_answers_errors
async def get_customer(request: web.Request) -> web.Response:
    """``GET /v1/customers/{customerId}``: blocked, created, and every balance."""
    customer_id = _path_id(request, "customer_id", "customerId")
    async with request.app[LEDGER_POOL].acquire() as conn, _snapshot(conn):
        found = await reads.customer(conn, customer_id)
        rows = await reads.balances(conn, customer_id) if found else []
    if found is None:
        return json_error("customer_not_found")
    return _json(
        {
            "customerId": found.customer_id,
            "blocked": found.blocked,
            "createdAt": rfc3339(found.created_at),
            "updatedAt": rfc3339(found.updated_at),
            "balances": [balance_view(customer_id, r) for r in rows],
        }
    )


def _set_blocked(blocked: bool) -> Handler:
    @_answers_errors
    async def set_blocked(request: web.Request) -> web.Response:
        """``POST /v1/customers/{customerId}/block`` (or ``/unblock``) ``{requestId}``."""
        customer_id = request.match_info["customer_id"]
        return await _submit(
            request, parse.set_blocked(customer_id, await request.read(), blocked=blocked)
        )

    return set_blocked


@_answers_errors
async def open_balance(request: web.Request) -> web.Response:
    """``POST /v1/customers/{customerId}/balances`` ``{balanceId, currency, requestId}``."""
    return await _submit(
        request, parse.open_balance(request.match_info["customer_id"], await request.read())
    )


@_answers_errors
async def list_balances(request: web.Request) -> web.Response:
    """``GET /v1/customers/{customerId}/balances``."""
    customer_id = _path_id(request, "customer_id", "customerId")
    async with request.app[LEDGER_POOL].acquire() as conn, _snapshot(conn):
        found = await reads.customer(conn, customer_id)
        rows = await reads.balances(conn, customer_id) if found else []
    if found is None:
        return json_error("customer_not_found")
    return _json(
        {"customerId": customer_id, "balances": [balance_view(customer_id, r) for r in rows]}
    )


@_answers_errors
async def get_balance(request: web.Request) -> web.Response:
    """``GET /v1/customers/{customerId}/balances/{balanceId}``: total, held, available."""
    customer_id = _path_id(request, "customer_id", "customerId")
    balance_id = _path_id(request, "balance_id", "balanceId")
    async with request.app[LEDGER_POOL].acquire() as conn:
        rows = await reads.balances(conn, customer_id, balance_id)
        if not rows:
            return await _not_found(conn, customer_id)
    return _json(balance_view(customer_id, rows[0]))


async def _not_found(conn: asyncpg.Connection, customer_id: str) -> web.Response:
    """404 naming what is missing: the customer, or only its balance."""
    if await reads.customer(conn, customer_id) is None:
        return json_error("customer_not_found")
    return json_error("balance_not_found")


def _move_money(kind: parse.DepositOrWithdrawal) -> Handler:
    @_answers_errors
    async def move_money(request: web.Request) -> web.Response:
        """``POST .../balances/{balanceId}/deposits`` (or ``/withdrawals``)
        ``{requestId, amount, comment?}``, in the balance's currency."""
        asked = parse.money_request(
            kind,
            request.match_info["customer_id"],
            request.match_info["balance_id"],
            await request.read(),
        )
        async with request.app[LEDGER_POOL].acquire() as conn:
            account = await reads.account(conn, asked.customer_id, asked.balance_id)
            if account is None:
                # Not sent, so not stored: the ledger needs the balance's currency to judge
                # the amount. Once the balance is open, the same request deposits.
                return await _not_found(conn, asked.customer_id)
        cmd = asked.command(account.currency)
        gate = request.app.get(MONEY_GATE)
        held = None if gate is None else await gate.hold(request, cmd)
        return held if held is not None else await _submit(request, cmd)

    return move_money


async def _account(
    conn: asyncpg.Connection, customer_id: str, balance_id: str
) -> reads.Account | web.Response:
    account = await reads.account(conn, customer_id, balance_id)
    return await _not_found(conn, customer_id) if account is None else account


@_answers_errors
async def statement(request: web.Request) -> web.Response:
    """``GET .../balances/{balanceId}/statement?afterSeq=&limit=&from=&to=&format=``."""
    customer_id = _path_id(request, "customer_id", "customerId")
    balance_id = _path_id(request, "balance_id", "balanceId")
    query = parse.statement_query(_multi(request))
    async with request.app[LEDGER_POOL].acquire() as conn:
        account = await _account(conn, customer_id, balance_id)
        if isinstance(account, web.Response):
            return account
        window = await reads.statement_window(
            conn, customer_id, balance_id, account, query.start, query.end
        )
        lines, more = await reads.statement_page(
            conn, account, window, query.after_seq, query.limit
        )
    cursor = next_after_seq(lines, query.limit, more)
    if query.format == "csv":
        headers = {"Cache-Control": "no-store"}
        if cursor is not None:
            headers["Next-After-Seq"] = str(cursor)
        return web.Response(
            body=statement_csv(lines, account.currency),
            content_type="text/csv",
            charset="utf-8",
            headers=headers,
        )
    return _json(
        {
            "customerId": customer_id,
            "balanceId": balance_id,
            "currency": account.currency,
            "lines": [line_json(line, account.currency) for line in lines],
            "nextAfterSeq": cursor,
        }
    )


@_answers_errors
async def balance_at(request: web.Request) -> web.Response:
    """``GET .../balances/{balanceId}/at?time=``: the balance after its last posting at or
    before ``time``."""
    customer_id = _path_id(request, "customer_id", "customerId")
    balance_id = _path_id(request, "balance_id", "balanceId")
    at = parse.time_query(_multi(request))
    async with request.app[LEDGER_POOL].acquire() as conn:
        account = await _account(conn, customer_id, balance_id)
        if isinstance(account, web.Response):
            return account
        point = await reads.last_posting(conn, customer_id, balance_id, account, at)
    return _json(
        {
            "customerId": customer_id,
            "balanceId": balance_id,
            "currency": account.currency,
            "time": rfc3339(at),
            "balance": format_amount(point.balance, account.currency),
            "seq": point.seq,
            "postedAt": None if point.posted_at is None else rfc3339(point.posted_at),
        }
    )


@_answers_errors
async def get_entry(request: web.Request) -> web.Response:
    """``GET /v1/entries/{entryId}``: the entry and its postings."""
    try:
        entry_id = uuid.UUID(request.match_info["entry_id"])
    except ValueError:
        raise RequestError("invalid_id", "entryId must be a UUID") from None
    async with request.app[LEDGER_POOL].acquire() as conn:
        found = await reads.entries(conn, [entry_id])
    if not found:
        return json_error("entry_not_found")
    return _json(found[0])


@_answers_errors
async def find_entries(request: web.Request) -> web.Response:
    """``GET /v1/entries?customerId=&requestId=`` or ``?orderId=``: ``{entries: [...]}``, empty
    when none matches."""
    query = parse.entries_query(_multi(request))
    async with request.app[LEDGER_POOL].acquire() as conn:
        if isinstance(query, parse.ByOrder):
            ids = await reads.entry_ids_by_order(conn, query.order_id)
        else:
            ids = await reads.entry_ids_by_request(conn, query.customer_id, query.request_id)
        found = await reads.entries(conn, ids)
    return _json({"entries": found})


@_answers_errors
async def get_trial_balance(request: web.Request) -> web.Response:
    """``GET /v1/trial-balance``: per currency, customers and each system kind; zero total."""
    async with request.app[LEDGER_POOL].acquire() as conn, _snapshot(conn):
        rows, as_of = await reads.trial_rows(conn)
    trials = trial_balance(rows)
    if any(t.total != 0 for t in trials):
        log.error("trial_balance_off", currencies=[t.currency for t in trials if t.total != 0])
    return _json(trial_balance_view(trials, as_of))


def _snapshot(conn: asyncpg.Connection) -> Any:
    """One read-only, repeatable-read transaction: every read inside sees the same committed
    batches (a trial balance across a batch in flight would not sum to zero)."""
    return conn.transaction(isolation="repeatable_read", readonly=True)


def _multi(request: web.Request) -> dict[str, list[str]]:
    """The query string with every value of a repeated parameter (so a repeat is refused)."""
    query: dict[str, list[str]] = {}
    for name, value in request.query.items():
        query.setdefault(name, []).append(value)
    return query


async def ledger_context(app: web.Application) -> AsyncIterator[None]:
    """A small Postgres pool (reads only) and a command bus on this process's reply partition,
    both checked by /ready; refuses to start on a schema that is not current."""
    settings = app[LEDGER_SETTINGS]
    pool = await asyncpg.create_pool(settings.pg_dsn, min_size=1, max_size=4)
    try:
        async with pool.acquire() as conn:
            await check_schema(conn)
        async with open_command_bus(
            settings.kafka_bootstrap,
            f"operator-api-{settings.operator_api_reply_partition}",
            topic_prefix=settings.topic_prefix,
            reply_partition=settings.operator_api_reply_partition,
            fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
        ) as bus:
            app[LEDGER_POOL] = pool
            app[LEDGER_BUS] = bus
            checks = app.get(READINESS)
            if checks is not None:
                checks.extend([postgres_check(pool), command_bus_check(bus)])
            yield
    finally:
        await pool.close()


def add_ledger_routes(app: web.Application, settings: OperatorLedgerSettings) -> None:
    """Register the ledger routes on ``app`` and open their pool and bus with it."""
    app[LEDGER_SETTINGS] = settings
    customer = "/v1/customers/{customer_id}"
    balance = customer + "/balances/{balance_id}"
    app.router.add_post("/v1/customers", create_customer)
    app.router.add_get(customer, get_customer)
    app.router.add_post(customer + "/block", _set_blocked(True))
    app.router.add_post(customer + "/unblock", _set_blocked(False))
    app.router.add_post(customer + "/balances", open_balance)
    app.router.add_get(customer + "/balances", list_balances)
    app.router.add_get(balance, get_balance)
    app.router.add_post(balance + "/deposits", _move_money("deposit"))
    app.router.add_post(balance + "/withdrawals", _move_money("withdrawal"))
    app.router.add_get(balance + "/statement", statement)
    app.router.add_get(balance + "/at", balance_at)
    app.router.add_get("/v1/entries/{entry_id}", get_entry)
    app.router.add_get("/v1/entries", find_entries)
    app.router.add_get("/v1/trial-balance", get_trial_balance)
    app.cleanup_ctx.append(ledger_context)
