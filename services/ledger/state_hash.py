"""The ledger's canonical state hash: one SHA-256 that two ledgers fed the same commands share.

``python -m ledger.state_hash [--dsn DSN] [--expect HEX]`` prints the hash and the counts it
covers; with ``--expect`` it exits 1 when the hash differs. The replay into a fresh ledger
(``python -m ledger.replay``) prints it for both ledgers. The encoding is documented in
``docs/replay.md`` and pinned by ``tests/unit/test_state_hash.py``; in short::

    hash    = SHA-256( "wallet-ledger-state/v1\\n" || section... )
    section = "#" name "\\n" || record...         (sections in the order of SECTIONS)
    record  = compact JSON array of the row's values, then "\\n"

Values: text as JSON strings, integers (partitions, offsets, sequences, statuses) as JSON
numbers, ``NUMERIC`` amounts as decimal strings (they pass 64 bits), booleans, ``null``, uuids
as their lowercase text, bytes as lowercase hex. A JSON string can not hold a raw newline, so the
newline after each record makes the encoding unambiguous. Rows are ordered by their natural key
with ``COLLATE "C"`` (byte order), never by the database's collation, which two databases need
not share.

Left out, because it legitimately differs between two ledgers fed the same commands: every
timestamp (written from the Kafka record's time or ``now()``), the partitions' writer epochs and
publishing progress (``ledger_partitions``), the facts' payloads (they carry the command's time),
and empty system-account shards (a writer creates all of a partition's shards when it takes the
partition over, before any command). Every id the hash does include is derived from the command
(``ledger_core.state.stable_id``: entries, accounts, facts), never random; accounts are named by
their natural key (customer and balance, or kind, currency and partition) rather than by id.

Rows are streamed through server-side cursors inside one repeatable-read, read-only transaction
(one consistent snapshot), so memory stays bounded however large the ledger is.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field

import asyncpg
import orjson

HEADER = b"wallet-ledger-state/v1\n"

# How many rows each server-side cursor fetches per round trip.
PREFETCH = 5000

_LAST_POSTING = """
    LEFT JOIN LATERAL (SELECT seq, balance_after FROM postings p
                        WHERE p.account_id = a.account_id
                        ORDER BY seq DESC LIMIT 1) l ON true"""

# An account by its natural key: (kind, customer, balance, currency, partition).
_ACCOUNT_KEY = "a.kind, a.customer_id, a.balance_id, a.currency, a.partition"
_ACCOUNT_ORDER = (
    'a.kind COLLATE "C", a.customer_id COLLATE "C", a.balance_id COLLATE "C", '
    'a.currency COLLATE "C", a.partition'
)

SECTIONS: tuple[tuple[str, str], ...] = (
    (
        "customers",
        'SELECT customer_id, partition, blocked FROM customers ORDER BY customer_id COLLATE "C"',
    ),
    # Every customer account, and every system shard that was ever posted to, with its final
    # sequence number and balance (the last posting's).
    (
        "accounts",
        f"""SELECT {_ACCOUNT_KEY}, coalesce(l.seq, 0) AS seq,
                   coalesce(l.balance_after, 0)::text AS balance
              FROM accounts a {_LAST_POSTING}
             WHERE a.kind = 'customer' OR l.seq IS NOT NULL
             ORDER BY {_ACCOUNT_ORDER}""",
    ),
    # Entries in command order, each followed by its postings in account-id order: the table
    # keeps no position for a posting, and account ids are uuid5 of the account's natural key,
    # so that order is the same in every ledger. One row per posting (see _entry_records).
    (
        "entries",
        f"""SELECT e.partition, e.command_offset, e.entry_id, e.kind, e.customer_id,
                   e.balance_id, e.request_id, e.currency, e.amount::text, e.comment, e.order_id,
                   {_ACCOUNT_KEY}, p.seq, p.amount::text, p.balance_after::text
              FROM journal_entries e
              LEFT JOIN postings p ON p.entry_id = e.entry_id
              LEFT JOIN accounts a ON a.account_id = p.account_id
             ORDER BY e.partition, e.command_offset, e.entry_id, p.account_id""",
    ),
    (
        "reservations",
        """SELECT customer_id, exchange_id, partition, source_balance_id, target_balance_id,
                  currency, amount::text, comment, reserved_offset, status, order_id, reason,
                  entry_id, released_offset
             FROM exchange_reservations
            ORDER BY customer_id COLLATE "C", exchange_id COLLATE "C" """,
    ),
    (
        "outcomes",
        """SELECT customer_id, scope, request_id, fingerprint, status, body, entry_id, partition
             FROM idempotency
            ORDER BY customer_id COLLATE "C", scope COLLATE "C", request_id COLLATE "C" """,
    ),
    # The facts' identity and order (their payloads carry the command's time: left out).
    ("facts", "SELECT partition, seq, event_id, key FROM outbox ORDER BY partition, seq"),
)

# Columns of an "entries" row that belong to the entry; the rest are its posting's.
ENTRY_COLUMNS = 11


def canonical(value: object) -> object:
    """A value as the encoding writes it (see the module docstring)."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if isinstance(value, uuid.UUID):
        return str(value)
    if value is None or isinstance(value, str | int | bool):
        return value
    raise TypeError(f"no canonical form for {type(value).__name__}")


def encode_record(values: Sequence[object]) -> bytes:
    """One record: the compact JSON array of its canonical values, and a newline."""
    return orjson.dumps([canonical(v) for v in values]) + b"\n"


@dataclass(slots=True)
class StateHasher:
    """Feeds sections and records into the hash, counting records per section."""

    counts: dict[str, int] = field(default_factory=dict)
    _sha: hashlib._Hash = field(default_factory=lambda: hashlib.sha256(HEADER))
    _section: str | None = None

    def section(self, name: str) -> None:
        """Start a section; sections must come in the same order in every ledger."""
        self._sha.update(b"#" + name.encode() + b"\n")
        self._section = name
        self.counts.setdefault(name, 0)

    def record(self, values: Sequence[object], counted_as: str | None = None) -> None:
        """Add a record to the current section; ``counted_as`` counts it under another name
        (the entries section counts its entries and postings apart)."""
        assert self._section is not None, "a record outside any section"
        self._sha.update(encode_record(values))
        name = counted_as or self._section
        self.counts[name] = self.counts.get(name, 0) + 1

    def hexdigest(self) -> str:
        return self._sha.hexdigest()


def entry_row_records(row: Sequence[object], previous_entry: object) -> list[tuple[object, ...]]:
    """The records one joined entry/posting row adds (the query gives one row per posting):
    an ``entry`` record when its entry is not ``previous_entry`` (the previous row's), then a
    ``posting`` record. The tags keep an entry and a posting apart even where their values
    could coincide."""
    records: list[tuple[object, ...]] = []
    if row[2] != previous_entry:
        records.append(("entry", *row[:ENTRY_COLUMNS]))
    posting = row[ENTRY_COLUMNS:]
    if any(v is not None for v in posting):  # an entry without postings (none should exist)
        records.append(("posting", *posting))
    return records


@dataclass(frozen=True, slots=True)
class StateHash:
    """The hash of one ledger and how many records of each section it covers."""

    digest: str
    counts: dict[str, int]
    offsets: dict[int, int]  # next command offset per partition, in the same snapshot

    def describe(self) -> str:
        counts = ", ".join(f"{name} {n}" for name, n in self.counts.items())
        return f"{self.digest} ({counts})"


async def _rows(conn: asyncpg.Connection, sql: str) -> AsyncIterator[asyncpg.Record]:
    async for row in conn.cursor(sql, prefetch=PREFETCH):
        yield row


async def _hash_entries(conn: asyncpg.Connection, sql: str, hasher: StateHasher) -> None:
    previous: object = None
    async for row in _rows(conn, sql):
        values = tuple(row)
        for record in entry_row_records(values, previous):
            hasher.record(record, counted_as="entries" if record[0] == "entry" else "postings")
        previous = values[2]


async def partition_offsets(conn: asyncpg.Connection) -> dict[int, int]:
    """The next command offset the ledger would apply, per partition it has taken."""
    rows = await conn.fetch("SELECT partition, next_offset FROM ledger_partitions")
    return {r["partition"]: r["next_offset"] for r in rows}


async def hash_in_transaction(
    conn: asyncpg.Connection, progress: Callable[[str, int], None] | None = None
) -> StateHash:
    """The state hash as the current transaction sees it (call inside a repeatable-read one)."""
    hasher = StateHasher()
    offsets = await partition_offsets(conn)
    for name, sql in SECTIONS:
        hasher.section(name)
        if name == "entries":
            hasher.counts.setdefault("postings", 0)
            await _hash_entries(conn, sql, hasher)
        else:
            async for row in _rows(conn, sql):
                hasher.record(tuple(row))
        if progress is not None:
            progress(name, hasher.counts[name])
    return StateHash(hasher.hexdigest(), dict(hasher.counts), offsets)


async def state_hash(
    conn: asyncpg.Connection, progress: Callable[[str, int], None] | None = None
) -> StateHash:
    """The state hash of the ledger behind ``conn``, over one consistent snapshot."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        return await hash_in_transaction(conn, progress)


async def _main(dsn: str, expect: str | None) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        result = await state_hash(conn)
    finally:
        await conn.close()
    print(f"state hash {result.describe()}")
    if expect is not None and expect.lower() != result.digest:
        print(f"MISMATCH: expected {expect.lower()}")
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m ledger.state_hash``: print the ledger's state hash (exit 1 if not expected)."""
    from wallet_platform.config import CommonSettings, load_settings

    parser = argparse.ArgumentParser(prog="python -m ledger.state_hash", description=__doc__)
    parser.add_argument("--dsn", help="the ledger database (default: WALLET_PG_DSN)")
    parser.add_argument("--expect", help="exit 1 unless the hash is this one")
    args = parser.parse_args(argv)
    dsn = args.dsn or load_settings(CommonSettings).pg_dsn
    return asyncio.run(_main(dsn, args.expect))


if __name__ == "__main__":
    sys.exit(main())
