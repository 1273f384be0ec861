"""Schema migrations: versioned SQL files applied in order, recorded in ``schema_migrations``.

Files live in ``wallet_platform/migrations`` and are named ``NNNN_name.sql``. ``migrate`` is
idempotent and safe to run concurrently (an advisory lock serialises runners); an applied file
whose content changed is refused. Services call :func:`check_schema` at start-up and refuse to run
on a database that is behind (or ahead of) the code.

Definitions (``wallet_platform/definitions/*.sql``: a function and the types it takes, defined in
one place rather than copied into each migration that changes it) are re-applied after the
migrations, all in one transaction, whenever a file's checksum differs from the one recorded in
``schema_definitions``; a definition file drops and recreates what it owns. ``check_schema``
refuses a database whose recorded definitions are not exactly this build's. See docs/schema.md.

Run: ``python -m wallet_platform.schema migrate`` (or ``status``).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import re
from dataclasses import dataclass
from importlib import resources

import asyncpg

_FILE = re.compile(r"(\d{4})_([a-z0-9_]+)\.sql")
_LOCK_ID = 0x57414C4C  # "WALL": advisory lock held while migrating


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


class SchemaError(RuntimeError):
    """The database schema does not match what this build expects."""


@dataclass(frozen=True, slots=True)
class MigrationSet:
    """A set of migration files (a package of ``NNNN_name.sql``) and the table that records
    which of them a database has applied. The wallet's is :data:`WALLET`; a service that keeps
    its own tables in a schema of its own (the accounting consumer) passes its own."""

    package: str = "wallet_platform.migrations"
    table: str = "schema_migrations"
    lock_id: int = _LOCK_ID
    schema: str | None = None  # created, if missing, before the record table (which it holds)
    # A package of ``name.sql`` definitions re-applied when changed, and the table recording them.
    definitions: str | None = None
    definitions_table: str = "schema_definitions"


WALLET = MigrationSet(definitions="wallet_platform.definitions")


@dataclass(frozen=True, slots=True)
class Definition:
    """One definitions file: what it owns is dropped and recreated whenever it changes."""

    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


_DEFINITION_FILE = re.compile(r"([a-z0-9_]+)\.sql")


def available_definitions(migrations: MigrationSet = WALLET) -> list[Definition]:
    """All definitions files shipped with this build, in name order."""
    if migrations.definitions is None:
        return []
    found = []
    for item in resources.files(migrations.definitions).iterdir():
        match = _DEFINITION_FILE.fullmatch(item.name)
        if match:
            found.append(Definition(match.group(1), item.read_text()))
    found.sort(key=lambda d: d.name)
    return found


async def applied_definitions(
    conn: asyncpg.Connection, migrations: MigrationSet = WALLET
) -> dict[str, str]:
    """Applied definitions and their checksums (empty if the table does not exist yet)."""
    if migrations.definitions is None:
        return {}
    exists = await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", migrations.definitions_table)
    if not exists:
        return {}
    rows = await conn.fetch(f"SELECT name, checksum FROM {migrations.definitions_table}")
    return {r["name"]: r["checksum"] for r in rows}


async def _apply_definitions(conn: asyncpg.Connection, migrations: MigrationSet) -> list[str]:
    """Re-apply every definition whose checksum differs from the recorded one, all in one
    transaction (so the database never holds half a definition); returns the names applied."""
    if migrations.definitions is None:
        return []
    await conn.execute(
        f"""CREATE TABLE IF NOT EXISTS {migrations.definitions_table} (
               name       text PRIMARY KEY,
               checksum   text NOT NULL,
               applied_at timestamptz NOT NULL DEFAULT now())"""
    )
    have = await applied_definitions(conn, migrations)
    changed = [d for d in available_definitions(migrations) if have.get(d.name) != d.checksum]
    if changed:
        async with conn.transaction():
            for d in changed:
                await conn.execute(d.sql)
                await conn.execute(
                    f"""INSERT INTO {migrations.definitions_table} (name, checksum) VALUES ($1, $2)
                        ON CONFLICT (name) DO UPDATE
                        SET checksum = excluded.checksum, applied_at = now()""",
                    d.name,
                    d.checksum,
                )
    return [d.name for d in changed]


def available(migrations: MigrationSet = WALLET) -> list[Migration]:
    """All migration files shipped with this build, in version order."""
    found = []
    for item in resources.files(migrations.package).iterdir():
        match = _FILE.fullmatch(item.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), item.read_text()))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise SchemaError(f"migration versions must be 1..n without gaps, got {versions}")
    return found


def latest_version(migrations: MigrationSet = WALLET) -> int:
    return available(migrations)[-1].version


async def _ensure_table(conn: asyncpg.Connection, migrations: MigrationSet) -> None:
    if migrations.schema is not None:
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {migrations.schema}")
    await conn.execute(
        f"""CREATE TABLE IF NOT EXISTS {migrations.table} (
               version    int PRIMARY KEY,
               name       text NOT NULL,
               checksum   text NOT NULL,
               applied_at timestamptz NOT NULL DEFAULT now())"""
    )


async def applied(conn: asyncpg.Connection, migrations: MigrationSet = WALLET) -> dict[int, str]:
    """Applied versions and their checksums (empty if the table does not exist yet)."""
    exists = await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", migrations.table)
    if not exists:
        return {}
    rows = await conn.fetch(f"SELECT version, checksum FROM {migrations.table}")
    return {r["version"]: r["checksum"] for r in rows}


async def migrate(conn: asyncpg.Connection, migrations: MigrationSet = WALLET) -> list[int]:
    """Apply pending migrations, each in its own transaction, then the changed definitions;
    returns the versions of the migrations applied."""
    versions, _ = await migrate_all(conn, migrations)
    return versions


async def migrate_all(
    conn: asyncpg.Connection, migrations: MigrationSet = WALLET
) -> tuple[list[int], list[str]]:
    """:func:`migrate`, returning the migrations' versions and the definitions' names applied."""
    done: list[int] = []
    redefined: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", migrations.lock_id)
    try:
        await _ensure_table(conn, migrations)
        have = await applied(conn, migrations)
        for m in available(migrations):
            if m.version in have:
                if have[m.version] != m.checksum:
                    raise SchemaError(
                        f"migration {m.version:04d}_{m.name} was changed after it was applied"
                    )
                continue
            async with conn.transaction():
                await conn.execute(m.sql)
                await conn.execute(
                    f"INSERT INTO {migrations.table} (version, name, checksum) VALUES ($1, $2, $3)",
                    m.version,
                    m.name,
                    m.checksum,
                )
            done.append(m.version)
        # After the migrations: a definition may use what they create.
        redefined = await _apply_definitions(conn, migrations)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", migrations.lock_id)
    return done, redefined


async def check_schema(conn: asyncpg.Connection, migrations: MigrationSet = WALLET) -> None:
    """Raise :class:`SchemaError` unless the database is exactly at this build's version."""
    have = await applied(conn, migrations)
    current = max(have, default=0)
    wanted = latest_version(migrations)
    if current < wanted:
        raise SchemaError(
            f"database schema is at version {current}, this build needs {wanted}: "
            "run `make migrate` (python -m wallet_platform.schema migrate)"
        )
    if current > wanted:
        raise SchemaError(
            f"database schema is at version {current}, newer than this build ({wanted})"
        )
    have_definitions = await applied_definitions(conn, migrations)
    wanted_definitions = {d.name: d.checksum for d in available_definitions(migrations)}
    stale = sorted(
        name
        for name in have_definitions.keys() | wanted_definitions.keys()
        if have_definitions.get(name) != wanted_definitions.get(name)
    )
    if stale:
        raise SchemaError(
            f"database definitions {stale} differ from the ones this build needs: "
            "run `make migrate` (python -m wallet_platform.schema migrate) with this build"
        )


async def _main(command: str, dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        if command == "migrate":
            done, redefined = await migrate_all(conn)
            print(
                f"applied {done}" if done else "schema up to date", f"(version {latest_version()})"
            )
            if redefined:
                print(f"redefined {redefined}")
        else:
            have = await applied(conn)
            print(f"database at version {max(have, default=0)}, build needs {latest_version()}")
            have_definitions = await applied_definitions(conn)
            for d in available_definitions():
                state = "current" if have_definitions.get(d.name) == d.checksum else "stale"
                print(f"definition {d.name}: {state}")
    finally:
        await conn.close()


def main() -> None:
    from wallet_platform.config import CommonSettings, load_settings

    parser = argparse.ArgumentParser(prog="python -m wallet_platform.schema")
    parser.add_argument("command", choices=["migrate", "status"])
    parser.add_argument("--dsn", help="defaults to WALLET_PG_DSN")
    args = parser.parse_args()
    dsn = args.dsn or load_settings(CommonSettings).pg_dsn
    asyncio.run(_main(args.command, dsn))


if __name__ == "__main__":
    main()
