"""Schema migrations: versioned SQL files applied in order, recorded in ``schema_migrations``.

Files live in ``wallet_platform/migrations`` and are named ``NNNN_name.sql``. ``migrate`` is
idempotent and safe to run concurrently (an advisory lock serialises runners); an applied file
whose content changed is refused. Services call :func:`check_schema` at start-up and refuse to run
on a database that is behind (or ahead of) the code.

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


WALLET = MigrationSet()


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
    """Apply pending migrations, each in its own transaction; returns the versions applied."""
    done: list[int] = []
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
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", migrations.lock_id)
    return done


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


async def _main(command: str, dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        if command == "migrate":
            done = await migrate(conn)
            print(
                f"applied {done}" if done else "schema up to date", f"(version {latest_version()})"
            )
        else:
            have = await applied(conn)
            print(f"database at version {max(have, default=0)}, build needs {latest_version()}")
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
