"""Exchanges on a real database: reservations and two-currency entries written by the batch
function, reloaded on takeover, guarded by the database's own checks, and clean in the audit."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import asyncpg
import pytest
from test_ledger_store import batch_for

from ledger import store
from ledger.audit import audit
from ledger_core.batch_rows import BatchRows, PartitionCursor
from ledger_core.commands import (
    CreateCustomer,
    ExchangeReserve,
    ExchangeSettle,
    ExchangeVoid,
    MoneyCommand,
    OpenBalance,
)
from ledger_core.state import PartitionState

pytestmark = pytest.mark.integration


@pytest.fixture
async def conn(database: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(database)
    await store.ensure_currencies(connection)
    yield connection
    await connection.close()


def funded(customer: str) -> list[object]:
    return [
        CreateCustomer(customer, "c"),
        OpenBalance(customer, "usdt", "USDT", "o1"),
        OpenBalance(customer, "btc", "BTC", "o2"),
        MoneyCommand("deposit", customer, "usdt", "d", "100", "USDT", "funding"),
    ]


def reserve(customer: str, exchange_id: str, amount: str) -> ExchangeReserve:
    return ExchangeReserve(customer, exchange_id, "usdt", "btc", amount, "USDT", "BTC", "test")


def settle(customer: str, exchange_id: str) -> ExchangeSettle:
    return ExchangeSettle(
        customer, exchange_id, "order-7", "BTC", "0.00119", "0.00000007", "0.00000024", "0.00000002"
    )


async def write(
    conn: asyncpg.Connection, partition: int, commands: list[object]
) -> tuple[PartitionState, PartitionCursor]:
    cursor = await store.take_over(conn, partition)
    state = await store.load_partition(conn, partition)
    rows, decisions = batch_for(state, cursor, commands, cursor.next_offset)
    assert all(d.outcome.status < 400 for d in decisions), [d.outcome for d in decisions]
    await store.apply_batch(conn, rows)
    return state, cursor


async def test_reservations_and_settlements_reload_exactly_as_written(
    conn: asyncpg.Connection,
) -> None:
    state, _ = await write(
        conn, 0, [*funded("ann"), reserve("ann", "x1", "60"), reserve("ann", "x2", "30")]
    )
    reloaded = await store.load_partition(conn, 0)
    assert reloaded == state
    usdt = reloaded.customers["ann"].balances["usdt"]
    assert (usdt.balance, usdt.reserved, usdt.holds) == (100_000000, 90_000000, 2)

    state, _ = await write(
        conn, 0, [settle("ann", "x1"), ExchangeVoid("ann", "x2", "order-8", "refunded")]
    )
    reloaded = await store.load_partition(conn, 0)
    assert reloaded == state
    assert reloaded.customers["ann"].reservations == {}
    usdt, btc = (reloaded.customers["ann"].balances[b] for b in ("usdt", "btc"))
    assert (usdt.balance, usdt.reserved, usdt.holds) == (40_000000, 0, 4)
    assert btc.balance == 119000
    assert reloaded.system[("rounding", "BTC")].balance == 2

    entry = await conn.fetchrow(
        "SELECT kind, order_id, currency, amount FROM journal_entries WHERE request_id = 'x1'"
    )
    assert dict(entry) == {
        "kind": "exchange",
        "order_id": "order-7",
        "currency": "USDT",
        "amount": 60_000000,
    }
    statuses = dict(await conn.fetch("SELECT exchange_id, status FROM exchange_reservations"))
    assert statuses == {"x1": "settled", "x2": "voided"}
    result = await audit(conn, include_projection=False)
    assert result.ok, result.failures


async def test_the_database_refuses_a_hold_beyond_the_available_amount(
    conn: asyncpg.Connection,
) -> None:
    await write(conn, 1, funded("bob"))
    cursor = await store.take_over(conn, 1)
    state = await store.load_partition(conn, 1)
    rows, _ = batch_for(state, cursor, [reserve("bob", "x1", "60")], cursor.next_offset)
    # Forged: more than the balance holds.
    rows.reservations[0] = rows.reservations[0]._replace(amount=100_000001)
    with pytest.raises(asyncpg.PostgresError, match="available amount"):
        await store.apply_batch(conn, rows)
    assert await conn.fetchval("SELECT count(*) FROM exchange_reservations") == 0


async def test_the_database_refuses_a_debit_of_held_funds(conn: asyncpg.Connection) -> None:
    await write(conn, 2, [*funded("cat"), reserve("cat", "x1", "60")])
    cursor = await store.take_over(conn, 2)
    # A writer that forgot the hold (a stale memory) would allow this debit; Postgres does not.
    forgetful = await store.load_partition(conn, 2)
    forgetful.customers["cat"].balances["usdt"].reserved = 0
    debit = MoneyCommand("withdrawal", "cat", "usdt", "w", "50", "USDT", "out")
    rows, decisions = batch_for(forgetful, cursor, [debit], cursor.next_offset)
    assert decisions[0].outcome.status == 201
    with pytest.raises(asyncpg.PostgresError, match="available amount"):
        await store.apply_batch(conn, rows)


async def test_the_database_refuses_a_second_release(conn: asyncpg.Connection) -> None:
    stale, _ = await write(conn, 3, [*funded("dan"), reserve("dan", "x1", "60")])
    await write(conn, 3, [ExchangeVoid("dan", "x1", "", "no order")])
    # A writer whose memory still has the reservation open settles it: Postgres refuses.
    cursor = await store.take_over(conn, 3)
    rows, decisions = batch_for(stale, cursor, [settle("dan", "x1")], cursor.next_offset)
    assert decisions[0].outcome.status == 201
    with pytest.raises(asyncpg.PostgresError, match="not open"):
        await store.apply_batch(conn, rows)
    assert await conn.fetchval("SELECT count(*) FROM journal_entries WHERE kind = 'exchange'") == 0


def _off_by_one(rows: BatchRows) -> None:
    # The rounding posting: the target leg no longer sums to zero.
    rows.postings[-1] = rows.postings[-1]._replace(amount=rows.postings[-1].amount - 1)


def _wrong_currency(rows: BatchRows) -> None:
    # The source leg claimed to be ETH: it still sums to zero "in ETH", so only the check of
    # the stated currency against the account's can catch it.
    for i in (0, 1):
        rows.postings[i] = rows.postings[i]._replace(currency="ETH")


@pytest.mark.parametrize(
    ("forge", "error"),
    [
        (_off_by_one, "sum to zero"),
        (_wrong_currency, "currency is not its account"),
    ],
    ids=["unbalanced-target-leg", "wrong-currency"],
)
async def test_the_database_checks_exchange_entries_per_currency(
    conn: asyncpg.Connection, forge: Callable[[BatchRows], None], error: str
) -> None:
    await write(conn, 4, [*funded("eve"), reserve("eve", "x1", "60")])
    cursor = await store.take_over(conn, 4)
    rows, _ = batch_for(
        await store.load_partition(conn, 4), cursor, [settle("eve", "x1")], cursor.next_offset
    )
    forge(rows)
    with pytest.raises(asyncpg.PostgresError, match=error):
        await store.apply_batch(conn, rows)


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE exchange_reservations SET amount = 1",
        "UPDATE exchange_reservations SET status = 'open', released_at = NULL, entry_id = NULL",
        "DELETE FROM exchange_reservations",
        "TRUNCATE exchange_reservations CASCADE",
    ],
)
async def test_a_reservation_can_only_be_released_once(
    conn: asyncpg.Connection, statement: str
) -> None:
    await write(conn, 5, [*funded("fay"), reserve("fay", "x1", "60"), settle("fay", "x1")])
    with pytest.raises(asyncpg.PostgresError, match=r"reservation|append-only|released"):
        await conn.execute(statement)
