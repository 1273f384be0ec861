"""The projection rides out losing Postgres, without touching the shared Postgres itself: the
test ends the projection's checkpoint connection (``pg_terminate_backend``) and refuses new
connections to the stack's own database for a while (``ALLOW_CONNECTIONS false``), as a Postgres
restart does. The projection stays up, says it is not ready, keeps answering reads from memory
(including writes made meanwhile), then reconnects and stores its checkpoint again.

Restarts and kills of Postgres and Kafka themselves are in ``test_dependency_restarts.py``, on a
private pair."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import aiohttp
import asyncpg
import pytest

from projection.checkpoint import APPLICATION_NAME
from wallet_clients import Operator, Wallet
from wallet_stack import Service, Stack

pytestmark = pytest.mark.e2e

WAIT_LIMIT = 30.0


async def ready(http: aiohttp.ClientSession, service: Service) -> bool:
    async with http.get(service.ops_url + "/ready") as resp:
        return resp.status == 200


async def until_ready_is(http: aiohttp.ClientSession, service: Service, wanted: bool) -> None:
    deadline = time.monotonic() + WAIT_LIMIT
    while await ready(http, service) != wanted:
        assert time.monotonic() < deadline, f"projection ready is not {wanted}"
        await asyncio.sleep(0.1)


async def stored_amount(conn: asyncpg.Connection, customer: str, balance: str) -> object:
    return await conn.fetchval(
        "SELECT amount FROM balance_view WHERE customer_id = $1 AND balance_id = $2",
        customer,
        balance,
    )


@pytest.fixture
async def admin(stack: Stack) -> AsyncIterator[asyncpg.Connection]:
    """A connection to the administration database (a database can not refuse connections to
    itself from its own session); connections are allowed again afterwards, whatever happened."""
    conn = await asyncpg.connect(stack.admin_dsn)
    try:
        yield conn
    finally:
        await conn.execute(f'ALTER DATABASE "{stack.database}" ALLOW_CONNECTIONS true')
        await conn.close()


@pytest.fixture
async def db(stack: Stack) -> AsyncIterator[asyncpg.Connection]:
    """A connection to the stack's database, opened before it refuses new ones."""
    conn = await asyncpg.connect(stack.dsn)
    try:
        yield conn
    finally:
        await conn.close()


async def test_projection_keeps_reading_while_its_postgres_connection_is_gone(
    stack: Stack,
    operator: Operator,
    wallet: Wallet,
    http: aiohttp.ClientSession,
    admin: asyncpg.Connection,
    db: asyncpg.Connection,
) -> None:
    customer, balance = await operator.customer_with_balance("USD", "100.00")
    await until_ready_is(http, stack.projection, True)

    await admin.execute(f'ALTER DATABASE "{stack.database}" ALLOW_CONNECTIONS false')
    ended = await admin.fetchval(
        """SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity
            WHERE datname = $1 AND application_name = $2""",
        stack.database,
        APPLICATION_NAME,
    )
    assert ended == 1
    await until_ready_is(http, stack.projection, False)
    # The ledger keeps its own connections: writes go on, and reads show them from memory.
    debit = await wallet.debit(customer, balance, "30.00")
    read = await wallet.get(customer, balance)
    await asyncio.sleep(1.0)  # several failed reconnection attempts
    still_down = not await ready(http, stack.projection)

    await admin.execute(f'ALTER DATABASE "{stack.database}" ALLOW_CONNECTIONS true')
    await until_ready_is(http, stack.projection, True)
    deadline = time.monotonic() + WAIT_LIMIT
    while await stored_amount(db, customer, balance) != 7000:
        assert time.monotonic() < deadline, "the checkpoint did not resume"
        await asyncio.sleep(0.1)

    assert (debit.status, read.status, read.json["amount"]) == (201, 200, "70.00")
    assert still_down
    assert stack.projection.proc is not None and stack.projection.proc.poll() is None
    reconnected = await admin.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND application_name = $2",
        stack.database,
        APPLICATION_NAME,
    )
    assert reconnected == 1
