"""Verify the journal's hash chains: ``python -m ledger.chain verify [--partition P] [--dsn DSN]``.

Each partition's chained entries are walked in ``chain_seq`` order through a server-side cursor
(bounded memory, however large the journal), inside one repeatable-read, read-only transaction
(one consistent snapshot, while the ledger keeps writing). For every entry the hash is recomputed
from the stored entry and postings (``ledger_core.chain``) and compared with the stored one, and
the links are checked: ``chain_seq`` follows without a gap, ``prev_hash`` is the previous entry's
hash. Then the partition's head (``ledger_partitions.chain_seq``, ``chain_hash``) must be the last
entry (else entries were removed from, or added past, the end), and no unchained entry may follow
the chain's first entry (only entries written before migration 0010 are unchained).

The first break of each partition is reported: partition, ``chain_seq``, entry id and what
differs. When an entry's content no longer matches its hash, its fact in the outbox (written in
the same transaction) says which field was altered. Exit 0 when every chain is intact, 1 on a
break. The method and its limits: ``docs/tamper-evidence.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import asyncpg
import orjson

from ledger_core.chain import (
    GENESIS,
    ChainEntry,
    ChainPosting,
    chain_entry_of_fact,
    entry_hash,
    micros,
)
from ledger_core.state import stable_id

# Rows (postings) per round trip of the server-side cursor.
PREFETCH = 5000

# One row per posting, in chain order; an entry's postings are adjacent (ordered by chain_seq).
_WALK = """
    SELECT e.chain_seq, e.entry_id, e.kind, e.customer_id, e.balance_id, e.request_id, e.currency,
           e.amount::text, e.comment, e.order_id, e.created_at, e.prev_hash, e.entry_hash,
           p.account_id, p.seq, p.amount::text, p.balance_after::text, a.currency
      FROM journal_entries e
      LEFT JOIN postings p ON p.entry_id = e.entry_id
      LEFT JOIN accounts a ON a.account_id = p.account_id
     WHERE e.partition = $1 AND e.chain_seq IS NOT NULL
     ORDER BY e.chain_seq"""

# Unchained entries after the chain's first one: inserted around the chain, never by the writer.
_UNCHAINED_AFTER_START = """
    SELECT entry_id, command_offset FROM journal_entries
     WHERE partition = $1 AND chain_seq IS NULL
       AND command_offset >= (SELECT min(command_offset) FROM journal_entries
                               WHERE partition = $1 AND chain_seq IS NOT NULL)
     ORDER BY command_offset LIMIT 1"""


@dataclass(frozen=True, slots=True)
class ChainBreak:
    """The first place a partition's chain does not hold."""

    partition: int
    chain_seq: int | None
    entry_id: str | None
    reason: str
    stored: str | None = None  # the stored hash (hex), when a hash differs
    recomputed: str | None = None

    def describe(self) -> str:
        at = f"chain_seq {self.chain_seq}" if self.chain_seq is not None else "its head"
        entry = f" (entry {self.entry_id})" if self.entry_id else ""
        text = f"partition {self.partition} BROKEN at {at}{entry}: {self.reason}"
        if self.stored is not None:
            text += f"; stored {self.stored}, recomputed {self.recomputed}"
        return text


@dataclass(slots=True)
class PartitionChain:
    """What the walk of one partition found."""

    partition: int
    entries: int = 0
    head_seq: int = 0
    head_hash: bytes = GENESIS
    unchained: int = 0  # entries written before the chain existed
    broken: ChainBreak | None = None


@dataclass(slots=True)
class ChainReport:
    """The walk of every partition asked for."""

    partitions: list[PartitionChain] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def intact(self) -> bool:
        return all(p.broken is None for p in self.partitions)

    @property
    def entries(self) -> int:
        return sum(p.entries for p in self.partitions)

    @property
    def first_break(self) -> ChainBreak | None:
        return next((p.broken for p in self.partitions if p.broken is not None), None)


def _stored_entry(partition: int, row: Sequence[object]) -> ChainEntry:
    """The entry part of a walked row (postings are added as they come)."""
    created_at = row[10]
    assert hasattr(created_at, "tzinfo")
    return ChainEntry(
        partition,
        row[1],  # type: ignore[arg-type]
        str(row[2]),
        str(row[3]),
        str(row[4]),
        str(row[5]),
        str(row[6]),
        int(str(row[7])),
        str(row[8]),
        None if row[9] is None else str(row[9]),
        micros(created_at),  # type: ignore[arg-type]
        [],
    )


async def _entries(
    conn: asyncpg.Connection, partition: int
) -> AsyncIterator[tuple[int, ChainEntry, bytes, bytes]]:
    """Each chained entry of ``partition`` in chain order, as stored: (chain_seq, entry,
    prev_hash, entry_hash)."""
    current: tuple[int, ChainEntry, bytes, bytes] | None = None
    async for row in conn.cursor(_WALK, partition, prefetch=PREFETCH):
        seq = row[0]
        if current is None or current[0] != seq:
            if current is not None:
                yield current
            current = (seq, _stored_entry(partition, row), bytes(row[11]), bytes(row[12]))
        if row[13] is not None:  # an entry whose postings were all removed has none
            postings = current[1].postings
            assert isinstance(postings, list)
            postings.append(ChainPosting(row[13], row[14], int(row[15]), int(row[16]), row[17]))
    if current is not None:
        yield current


async def verify_partition(conn: asyncpg.Connection, partition: int) -> PartitionChain:
    """Walk one partition's chain (call inside a repeatable-read transaction)."""
    found = PartitionChain(partition)
    expected_prev = GENESIS
    async for seq, entry, prev_hash, stored_hash in _entries(conn, partition):
        found.entries += 1
        expected_seq = found.head_seq + 1
        if seq != expected_seq:
            found.broken = ChainBreak(
                partition,
                seq,
                str(entry.entry_id),
                f"chain_seq {expected_seq} is missing (an entry was removed, or its chain_seq "
                "changed)",
            )
            return found
        if prev_hash != expected_prev:
            found.broken = ChainBreak(
                partition,
                seq,
                str(entry.entry_id),
                "broken link: prev_hash is not the previous entry's hash",
                prev_hash.hex(),
                expected_prev.hex(),
            )
            return found
        recomputed = entry_hash(entry, seq, prev_hash)
        if recomputed != stored_hash:
            altered = await _altered_fields(conn, entry)
            found.broken = ChainBreak(
                partition,
                seq,
                str(entry.entry_id),
                "the entry or its postings differ from what was hashed" + altered,
                stored_hash.hex(),
                recomputed.hex(),
            )
            return found
        found.head_seq, found.head_hash = seq, stored_hash
        expected_prev = stored_hash
    head = await conn.fetchrow(
        "SELECT chain_seq, chain_hash FROM ledger_partitions WHERE partition = $1", partition
    )
    head_seq, head_hash = (0, GENESIS) if head is None else (head[0], bytes(head[1]))
    if (head_seq, head_hash) != (found.head_seq, found.head_hash):
        found.broken = ChainBreak(
            partition,
            None,
            None,
            f"the partition's head is chain_seq {head_seq} ({head_hash.hex()[:16]}…) but the "
            f"last chained entry is {found.head_seq} ({found.head_hash.hex()[:16]}…): entries "
            "were removed from, or added past, the chain's end",
        )
        return found
    stray = await conn.fetchrow(_UNCHAINED_AFTER_START, partition)
    if stray is not None:
        found.broken = ChainBreak(
            partition,
            None,
            str(stray["entry_id"]),
            f"an unchained entry at command offset {stray['command_offset']} follows the "
            "chain's start (inserted around the chain)",
        )
        return found
    found.unchained = await conn.fetchval(
        "SELECT count(*) FROM journal_entries WHERE partition = $1 AND chain_seq IS NULL",
        partition,
    )
    return found


async def _altered_fields(conn: asyncpg.Connection, stored: ChainEntry) -> str:
    """Which fields of an entry differ from its fact in the outbox (the fact was written with
    the entry, from the same values): a hint for the report, empty when there is no fact."""
    # The fact's id is derived from the entry (``ledger_core.facts``): found without an index.
    if stored.kind == "exchange":
        event_id = stable_id("fact", "exchange.settled", stored.customer_id, stored.request_id)
    else:
        event_id = stable_id("fact", "entry.posted", str(stored.entry_id))
    rows = await conn.fetch(
        "SELECT payload FROM outbox WHERE partition = $1 AND event_id = $2",
        stored.partition,
        event_id,
    )
    for row in rows:
        try:
            fact = chain_entry_of_fact(orjson.loads(bytes(row["payload"])))
        except (KeyError, ValueError, TypeError):
            continue
        if fact is None or fact.entry_id != stored.entry_id:
            continue
        return describe_difference(fact, stored)
    return ""


def describe_difference(original: ChainEntry, stored: ChainEntry) -> str:
    """What differs between an entry as its fact has it and as it is stored, in words."""
    differences: list[str] = []
    for name in ChainEntry._fields:
        if name == "postings":
            continue
        if getattr(original, name) != getattr(stored, name):
            differences.append(f"{name} {getattr(original, name)!r} -> {getattr(stored, name)!r}")
    before = {(p.account_id, p.seq): p for p in original.postings}
    after = {(p.account_id, p.seq): p for p in stored.postings}
    for key in sorted(before.keys() | after.keys(), key=str):
        was, now = before.get(key), after.get(key)
        if was == now:
            continue
        where = f"posting of account {key[0]} seq {key[1]}"
        if now is None:
            differences.append(f"{where} removed")
        elif was is None:
            differences.append(f"{where} added")
        else:
            changed = [
                f"{f} {getattr(was, f)} -> {getattr(now, f)}"
                for f in ChainPosting._fields
                if getattr(was, f) != getattr(now, f)
            ]
            differences.append(f"{where}: {', '.join(changed)}")
    return f" (against its fact: {'; '.join(differences)})" if differences else ""


async def verify_chains(
    conn: asyncpg.Connection, partitions: Sequence[int] | None = None
) -> ChainReport:
    """Walk the chains of ``partitions`` (default: every partition the ledger has taken, and any
    that has entries) in one consistent snapshot."""
    report = ChainReport()
    started = time.perf_counter()
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        if partitions is None:
            rows = await conn.fetch(
                """SELECT partition FROM ledger_partitions
                   UNION SELECT DISTINCT partition FROM journal_entries ORDER BY 1"""
            )
            partitions = [r[0] for r in rows]
        for partition in partitions:
            report.partitions.append(await verify_partition(conn, partition))
    report.seconds = time.perf_counter() - started
    return report


def print_report(report: ChainReport) -> None:
    """The report as ``python -m ledger.chain verify`` prints it."""
    for p in report.partitions:
        if p.broken is not None:
            print(p.broken.describe())
            continue
        legacy = f", {p.unchained} unchained from before the chain" if p.unchained else ""
        head = p.head_hash.hex()[:16]
        print(
            f"partition {p.partition}: {p.entries} entries chained, head {p.head_seq} {head}…"
            + legacy
        )
    rate = report.entries / report.seconds if report.seconds > 0 else 0.0
    verdict = "intact" if report.intact else "BROKEN"
    print(
        f"chain {verdict}: {report.entries} entries in {len(report.partitions)} partitions, "
        f"{report.seconds:.2f} s ({rate:,.0f} entries/s)"
    )


async def _main(dsn: str, partitions: list[int] | None) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        report = await verify_chains(conn, partitions)
    finally:
        await conn.close()
    print_report(report)
    return 0 if report.intact else 1


def main(argv: list[str] | None = None) -> int:
    """``python -m ledger.chain verify``: exit 0 if every chain is intact, 1 on a break."""
    from wallet_platform.config import CommonSettings, load_settings

    parser = argparse.ArgumentParser(prog="python -m ledger.chain", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    verify = sub.add_parser("verify", help="walk the chains and report the first break")
    verify.add_argument("--partition", type=int, action="append", help="only this partition")
    verify.add_argument("--dsn", help="the ledger database (default: WALLET_PG_DSN)")
    args = parser.parse_args(argv)
    dsn = args.dsn or load_settings(CommonSettings).pg_dsn
    return asyncio.run(_main(dsn, args.partition))


if __name__ == "__main__":
    sys.exit(main())
