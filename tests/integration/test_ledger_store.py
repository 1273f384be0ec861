"""The ledger's Postgres side on a real database: zombie fencing, append-only journal, the
batch function's invariant guards, migrations and the schema check."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import pytest

from ledger import store
from ledger_core.batch_rows import BatchRows, PartitionCursor
from ledger_core.commands import (
    CreateCustomer,
    MoneyCommand,
    OpenBalance,
    fingerprint,
    idempotency_key,
)
from ledger_core.decide import Decision, StoredOutcome, apply, decide
from ledger_core.state import PartitionState
from wallet_platform.schema import SchemaError, applied, check_schema, latest_version, migrate

pytestmark = pytest.mark.integration

NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
async def conn(database: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(database)
    await store.ensure_currencies(connection)
    yield connection
    await connection.close()


def batch_for(
    state: PartitionState,
    cursor: PartitionCursor,
    commands: list[object],
    first_offset: int = 0,
) -> tuple[BatchRows, list[Decision]]:
    """Decide ``commands`` and build the batch the writer would write."""
    rows = BatchRows()
    decisions = []
    for i, cmd in enumerate(commands):
        decision = decide(state, cmd, None)  # type: ignore[arg-type]
        apply(state, decision)
        rows.add_effects(decision, cursor.partition, first_offset + i, NOW)
        if decision.record:
            outcome = StoredOutcome(
                fingerprint(cmd), decision.outcome.status, decision.outcome.body
            )  # type: ignore[arg-type]
            rows.add_outcome(
                idempotency_key(cmd), outcome, decision.entry_id, cursor.partition, NOW
            )  # type: ignore[arg-type]
        decisions.append(decision)
    rows.add_cursor(cursor, first_offset + len(commands))
    return rows, decisions


def setup_commands(customer: str) -> list[object]:
    return [
        CreateCustomer(customer, "c1"),
        OpenBalance(customer, "b", "USD", "o1"),
        MoneyCommand("deposit", customer, "b", "d1", "10.00", "USD", "funding"),
    ]


async def test_zombie_writers_batch_is_rejected_whole(
    conn: asyncpg.Connection, database: str
) -> None:
    other = await asyncpg.connect(database)
    try:
        zombie_cursor = await store.take_over(conn, 0)
        zombie_state = await store.load_partition(conn, 0)
        # A rebalance hands partition 0 to a second writer while the first still runs.
        new_cursor = await store.take_over(other, 0)
        new_state = await store.load_partition(other, 0)

        zombie_rows, _ = batch_for(zombie_state, zombie_cursor, setup_commands("zed"))
        with pytest.raises(store.Fenced):
            await store.apply_batch(conn, zombie_rows)

        rows, _ = batch_for(new_state, new_cursor, setup_commands("amy"))
        await store.apply_batch(other, rows)
    finally:
        await other.close()

    customers = {r["customer_id"] for r in await conn.fetch("SELECT customer_id FROM customers")}
    assert customers == {"amy"}
    assert await conn.fetchval("SELECT count(*) FROM journal_entries") == 1
    assert await conn.fetchval("SELECT next_offset FROM ledger_partitions WHERE partition = 0") == 3


async def test_a_batch_with_a_stale_offset_is_rejected(conn: asyncpg.Connection) -> None:
    cursor = await store.take_over(conn, 1)
    state = await store.load_partition(conn, 1)
    rows, _ = batch_for(state, cursor, setup_commands("bob"))
    await store.apply_batch(conn, rows)

    # The same batch again (as a writer that did not notice its own commit would send it).
    with pytest.raises(store.Fenced):
        await store.apply_batch(conn, rows)
    assert await conn.fetchval("SELECT count(*) FROM journal_entries") == 1


async def test_state_reloads_exactly_as_it_was_written(conn: asyncpg.Connection) -> None:
    cursor = await store.take_over(conn, 2)
    state = await store.load_partition(conn, 2)
    commands = [
        *setup_commands("cat"),
        MoneyCommand("debit", "cat", "b", "x1", "2.50", "USD", "opt"),
    ]
    rows, _ = batch_for(state, cursor, commands)
    await store.apply_batch(conn, rows)

    reloaded = await store.load_partition(conn, 2)

    assert reloaded.customers["cat"].balances["b"] == state.customers["cat"].balances["b"]
    assert reloaded.customers["cat"].balances["b"].balance == 750
    for key in (("settlement", "USD"), ("trading", "USD")):
        assert reloaded.system[key] == state.system[key]
    assert reloaded.system[("trading", "USD")].balance == 250


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE postings SET amount = amount * 2",
        "DELETE FROM postings",
        "TRUNCATE postings CASCADE",
        "UPDATE journal_entries SET comment = 'edited'",
        "DELETE FROM journal_entries",
        "TRUNCATE journal_entries CASCADE",
    ],
)
async def test_journal_is_append_only_in_the_database(
    conn: asyncpg.Connection, statement: str
) -> None:
    cursor = await store.take_over(conn, 3)
    rows, _ = batch_for(await store.load_partition(conn, 3), cursor, setup_commands("dan"))
    await store.apply_batch(conn, rows)

    with pytest.raises(asyncpg.PostgresError, match="append-only"):
        await conn.execute(statement)


async def test_batch_function_refuses_a_negative_customer_balance(conn: asyncpg.Connection) -> None:
    cursor = await store.take_over(conn, 4)
    state = await store.load_partition(conn, 4)
    rows, _ = batch_for(state, cursor, setup_commands("eve"))
    # Forge what a buggy decide could produce: the customer's balance-after below zero.
    rows.postings[0] = rows.postings[0]._replace(balance_after=-1)
    with pytest.raises(asyncpg.PostgresError, match="negative"):
        await store.apply_batch(conn, rows)
    assert await conn.fetchval("SELECT count(*) FROM customers") == 0


async def test_batch_function_refuses_unbalanced_postings(conn: asyncpg.Connection) -> None:
    cursor = await store.take_over(conn, 5)
    rows, _ = batch_for(await store.load_partition(conn, 5), cursor, setup_commands("fay"))
    # The counter-posting no longer mirrors the customer's.
    rows.postings[1] = rows.postings[1]._replace(amount=-999)
    with pytest.raises(asyncpg.PostgresError, match="sum to zero"):
        await store.apply_batch(conn, rows)


async def test_stored_outcomes_are_found_by_key(conn: asyncpg.Connection) -> None:
    cursor = await store.take_over(conn, 6)
    commands = setup_commands("gus")
    rows, decisions = batch_for(await store.load_partition(conn, 6), cursor, commands)
    await store.apply_batch(conn, rows)

    found = await store.stored_outcomes(
        conn, [idempotency_key(c) for c in commands] + [("gus", "debit:b", "nope")]
    )  # type: ignore[arg-type]

    assert len(found) == 3
    deposit = found[idempotency_key(commands[2])]  # type: ignore[arg-type]
    assert (deposit.status, deposit.body) == (201, decisions[2].outcome.body)


async def test_migrations_are_idempotent_and_recorded(pg_template: str) -> None:
    from wallet_stack import create_database, drop_database, dsn_for

    name = await create_database("template0")
    try:
        connection = await asyncpg.connect(dsn_for(name))
        try:
            with pytest.raises(SchemaError, match="version 0"):
                await check_schema(connection)
            first = await migrate(connection)
            second = await migrate(connection)
            await check_schema(connection)
            versions = await applied(connection)
        finally:
            await connection.close()
    finally:
        await drop_database(name)
    assert first == list(range(1, latest_version() + 1))
    assert second == []
    assert sorted(versions) == first


async def test_services_refuse_to_start_on_a_schema_that_is_behind(tmp_path: object) -> None:
    import subprocess
    import sys

    from wallet_stack import create_database, drop_database, dsn_for

    name = await create_database("template0")
    try:
        for service in ("ledger", "projection"):
            result = subprocess.run(
                [sys.executable, "-m", service],
                env={
                    "PATH": "/usr/bin:/bin",
                    "WALLET_PG_DSN": dsn_for(name),
                    "WALLET_QUADCODE_PUBLIC_KEYS": "unused-by-this-check",
                },
                capture_output=True,
                timeout=60,
            )
            assert result.returncode == 2, (service, result.stdout, result.stderr)
            assert b"needs" in result.stdout + result.stderr
    finally:
        await drop_database(name)
