"""Definitions (``wallet_platform/definitions``) on a real database: re-applied by ``migrate``
when their checksum changed and only then, refused by the schema check when stale, and matched
by the Python row types; a connection that cached the old types recovers."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator

import asyncpg
import pytest

from ledger import store
from ledger_core.batch_rows import BatchRows
from ledger_core.rows import SQL_TYPES
from wallet_platform.schema import (
    SchemaError,
    applied_definitions,
    available_definitions,
    check_schema,
    migrate_all,
)
from wallet_stack import create_database, drop_database, dsn_for

pytestmark = pytest.mark.integration

# A stand-in for ledger_apply_batch with the same signature, to tell whether migrate replaced it.
SABOTAGE = """
CREATE OR REPLACE FUNCTION ledger_apply_batch(
    in_cursors ledger_cursor_row[], in_customers ledger_customer_row[],
    in_blocks ledger_block_row[], in_accounts ledger_account_row[],
    in_entries ledger_entry_row[], in_postings ledger_posting_row[],
    in_outcomes ledger_outcome_row[], in_facts ledger_fact_row[],
    in_reservations ledger_reservation_row[], in_releases ledger_release_row[]
) RETURNS void LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'sabotaged'; END $$"""


@pytest.fixture
async def scratch() -> AsyncIterator[str]:
    """An empty database (not from the template): migrate runs on it from the start."""
    name = await create_database("template0")
    yield dsn_for(name)
    await drop_database(name)


async def batch_function(conn: asyncpg.Connection) -> list[tuple[int, str]]:
    """Every ledger_apply_batch in the database: its oid and its source."""
    rows = await conn.fetch("SELECT oid, prosrc FROM pg_proc WHERE proname = 'ledger_apply_batch'")
    return [(r["oid"], r["prosrc"]) for r in rows]


async def test_a_definition_is_applied_once_and_again_only_when_its_checksum_changes(
    scratch: str,
) -> None:
    conn = await asyncpg.connect(scratch)
    try:
        versions, first = await migrate_all(conn)
        assert versions and first == ["ledger_apply_batch"]
        (applied_once,) = await batch_function(conn)  # the 71-array function of 0005 is gone
        assert await applied_definitions(conn) == {
            d.name: d.checksum for d in available_definitions()
        }

        await conn.execute(SABOTAGE)
        assert await migrate_all(conn) == ([], [])  # unchanged checksum: left alone
        ((_, source),) = await batch_function(conn)
        assert "sabotaged" in source

        # The recorded checksum is not this build's (as after a release that changed the file).
        await conn.execute("UPDATE schema_definitions SET checksum = 'an older build'")
        assert await migrate_all(conn) == ([], ["ledger_apply_batch"])
        ((oid, source),) = await batch_function(conn)
        assert source == applied_once[1] and oid != applied_once[0]
        await check_schema(conn)
    finally:
        await conn.close()


async def test_the_schema_check_refuses_a_stale_definition(database: str) -> None:
    conn = await asyncpg.connect(database)
    try:
        await check_schema(conn)
        await conn.execute("UPDATE schema_definitions SET checksum = 'an older build'")
        with pytest.raises(SchemaError, match="ledger_apply_batch"):
            await check_schema(conn)
        await conn.execute("DELETE FROM schema_definitions")
        with pytest.raises(SchemaError, match="ledger_apply_batch"):
            await check_schema(conn)
    finally:
        await conn.close()


async def test_the_ledger_refuses_to_start_on_a_stale_definition(pg_template: str) -> None:
    name = await create_database(pg_template)
    try:
        conn = await asyncpg.connect(dsn_for(name))
        try:
            await conn.execute("UPDATE schema_definitions SET checksum = 'an older build'")
        finally:
            await conn.close()
        result = subprocess.run(
            [sys.executable, "-m", "ledger"],
            env={
                "PATH": "/usr/bin:/bin",
                "WALLET_PG_DSN": dsn_for(name),
                "WALLET_QUADCODE_PUBLIC_KEYS": "unused-by-this-check",
            },
            capture_output=True,
            timeout=60,
        )
    finally:
        await drop_database(name)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert b"ledger_apply_batch" in result.stdout + result.stderr


async def test_the_row_tuples_match_the_composite_types_in_the_database(database: str) -> None:
    conn = await asyncpg.connect(database)
    try:
        for name, row in SQL_TYPES:
            attributes = await conn.fetch(
                """SELECT a.attname FROM pg_attribute a JOIN pg_type t ON t.typrelid = a.attrelid
                    WHERE t.typname = $1 AND a.attnum > 0 AND NOT a.attisdropped
                    ORDER BY a.attnum""",
                name,
            )
            assert [a["attname"] for a in attributes] == list(row._fields), name  # type: ignore[attr-defined]
    finally:
        await conn.close()


async def test_a_connection_writes_again_after_the_definitions_were_reapplied(
    database: str,
) -> None:
    writer = await asyncpg.connect(database)
    migrator = await asyncpg.connect(database)
    try:
        await store.ensure_currencies(writer)
        cursor = await store.take_over(writer, 0)
        rows = BatchRows()
        rows.add_cursor(cursor, 1)
        await store.apply_batch(writer, rows)  # prepared: the row types' oids are cached

        # A deploy re-applies the definitions while this connection lives: new types, new oids.
        await migrator.execute("UPDATE schema_definitions SET checksum = 'an older build'")
        assert (await migrate_all(migrator))[1] == ["ledger_apply_batch"]

        cursor.next_offset = 1
        rows = BatchRows()
        rows.add_cursor(cursor, 2)
        # The first attempt meets the stale cache (the writer retries a transient fault) ...
        with pytest.raises(asyncpg.PostgresError) as failed:
            await store.apply_batch(writer, rows)
        assert store.classify(failed.value) is store.Fault.TRANSIENT
        # ... and the retry, on the same connection, prepares against the new types.
        await store.apply_batch(writer, rows)
        assert (
            await writer.fetchval("SELECT next_offset FROM ledger_partitions WHERE partition = 0")
            == 2
        )
    finally:
        await writer.close()
        await migrator.close()
