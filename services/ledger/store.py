"""The ledger's Postgres side: load a partition, look up stored outcomes, apply a batch.

Moves bytes and holds transactions; decides nothing (that is ``ledger_core.decide``).
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Sequence

import asyncpg

from ledger_core.batch_rows import BatchRows, PartitionCursor
from ledger_core.currencies import EXPONENTS
from ledger_core.decide import StoredOutcome
from ledger_core.state import (
    SYSTEM_KINDS,
    Account,
    Customer,
    PartitionState,
    Reservation,
    system_account_id,
)

FENCED = "LF001"


class Fenced(RuntimeError):
    """Another writer took a partition over: this writer's batch did not land."""


class Fault(enum.Enum):
    """What a failed database call means for the batch it carried, and what the writer does."""

    FENCED = "fenced"  # the offset check failed: another writer, or an earlier batch failed
    DUPLICATE = "duplicate"  # a key was stored before: decide again, looking keys up
    REFUSED = "refused"  # the same rows will always be refused: find the command, answer it
    TRANSIENT = "transient"  # rolled back, may pass later: retry with backoff
    CONNECTION = "connection"  # the connection broke: the commit may or may not have happened


# What a database call can fail with: the server's errors, the client's (a broken connection
# can surface as an InternalClientError, "another operation is in progress"), and the network's.
DB_ERRORS = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    OSError,
    TimeoutError,
)

# Server errors that say the connection is going away (shutdown, crash recovery, starting up).
_CONNECTION_STATES = frozenset({"57P01", "57P02", "57P03"})


def classify(exc: BaseException) -> Fault:
    """Tell a deterministic refusal from a transient fault.

    Refused: data exceptions (class 22: text Postgres can not hold, a number beyond its column),
    integrity violations other than a duplicate key (class 23), and the batch function's own
    invariants (``LI...``). They fail the same way on every retry. Everything else the server
    says (serialization failures, deadlocks, lack of resources, a cancelled statement, even an
    unexpected error such as a missing function) is retried with backoff: refusing commands
    because of a fault of our own would turn an outage into wrong answers.
    """
    if isinstance(exc, Fenced):
        return Fault.FENCED
    if isinstance(
        exc,
        asyncpg.PostgresConnectionError
        | asyncpg.InterfaceError
        | asyncpg.InternalClientError
        | OSError,
    ):
        return Fault.CONNECTION
    if isinstance(exc, TimeoutError):
        return Fault.CONNECTION
    state = str(getattr(exc, "sqlstate", "") or "")
    if state in _CONNECTION_STATES:
        return Fault.CONNECTION
    if state == "23505":
        return Fault.DUPLICATE
    if state[:2] in ("22", "23") or state.startswith("LI"):
        return Fault.REFUSED
    return Fault.TRANSIENT


async def ensure_currencies(conn: asyncpg.Connection) -> None:
    """Load the currency table from ``ledger_core``; refuse if a stored exponent differs."""
    codes = sorted(EXPONENTS)
    await conn.execute(
        """INSERT INTO currencies (code, exponent) SELECT * FROM unnest($1::text[], $2::int[])
           ON CONFLICT (code) DO NOTHING""",
        codes,
        [EXPONENTS[c] for c in codes],
    )
    rows = await conn.fetch("SELECT code, exponent FROM currencies")
    wrong = [r["code"] for r in rows if EXPONENTS.get(r["code"], r["exponent"]) != r["exponent"]]
    if wrong:
        raise RuntimeError(f"stored currency exponents differ from the code for {wrong}")


async def take_over(conn: asyncpg.Connection, partition: int) -> PartitionCursor:
    """Become the writer of ``partition``: bump its epoch (fencing any previous writer) and
    make sure its system-account shards exist."""
    async with conn.transaction():
        await conn.execute(
            "INSERT INTO ledger_partitions (partition) VALUES ($1) ON CONFLICT DO NOTHING",
            partition,
        )
        row = await conn.fetchrow(
            """UPDATE ledger_partitions SET epoch = epoch + 1 WHERE partition = $1
               RETURNING epoch, next_offset, outbox_seq, published_seq, chain_seq, chain_hash""",
            partition,
        )
        codes = sorted(EXPONENTS)
        ids, kinds, currencies = [], [], []
        for kind in SYSTEM_KINDS:
            for code in codes:
                ids.append(system_account_id(kind, code, partition))
                kinds.append(kind)
                currencies.append(code)
        await conn.execute(
            """INSERT INTO accounts (account_id, partition, kind, currency)
               SELECT x.id, $1, x.kind, x.cur FROM unnest($2::uuid[], $3::text[], $4::text[])
                   AS x(id, kind, cur)
               ON CONFLICT DO NOTHING""",
            partition,
            ids,
            kinds,
            currencies,
        )
    assert row is not None
    return PartitionCursor(
        partition,
        row["epoch"],
        row["next_offset"],
        row["outbox_seq"],
        row["published_seq"],
        row["chain_seq"],
        bytes(row["chain_hash"]),
    )


async def load_partition(conn: asyncpg.Connection, partition: int) -> PartitionState:
    """Read a partition's customers and accounts, each account at its last posting, with the
    exchange reservations still open (and each balance's count of holds made and released)."""
    state = PartitionState(partition)
    for row in await conn.fetch(
        "SELECT customer_id, blocked FROM customers WHERE partition = $1", partition
    ):
        state.customers[row["customer_id"]] = Customer(blocked=row["blocked"])
    rows = await conn.fetch(
        """SELECT a.account_id, a.kind, a.customer_id, a.balance_id, a.currency,
                  coalesce(p.seq, 0) AS seq, coalesce(p.balance_after, 0) AS balance
             FROM accounts a
             LEFT JOIN LATERAL (SELECT seq, balance_after FROM postings
                                 WHERE account_id = a.account_id
                                 ORDER BY seq DESC LIMIT 1) p ON true
            WHERE a.partition = $1""",
        partition,
    )
    by_id: dict[uuid.UUID, Account] = {}
    for row in rows:
        account = Account(row["account_id"], row["currency"], int(row["balance"]), row["seq"])
        by_id[account.account_id] = account
        if row["kind"] == "customer":
            state.customers[row["customer_id"]].balances[row["balance_id"]] = account
        else:
            state.system[(row["kind"], row["currency"])] = account
    for row in await conn.fetch(
        """SELECT source_account, count(*) + count(released_at) AS holds
             FROM exchange_reservations WHERE partition = $1 GROUP BY source_account""",
        partition,
    ):
        by_id[row["source_account"]].holds = row["holds"]
    for row in await conn.fetch(
        """SELECT customer_id, exchange_id, source_balance_id, source_account,
                  target_balance_id, currency, amount
             FROM exchange_reservations WHERE partition = $1 AND status = 'open'""",
        partition,
    ):
        amount = int(row["amount"])
        by_id[row["source_account"]].reserved += amount
        state.customers[row["customer_id"]].reservations[row["exchange_id"]] = Reservation(
            row["exchange_id"],
            row["source_balance_id"],
            row["target_balance_id"],
            row["currency"],
            amount,
        )
    return state


async def unpublished_facts(
    conn: asyncpg.Connection, partition: int, after_seq: int
) -> list[asyncpg.Record]:
    """Outbox rows committed but not known to be on ledger.events (after a crash)."""
    rows: list[asyncpg.Record] = await conn.fetch(
        "SELECT seq, key, payload FROM outbox WHERE partition = $1 AND seq > $2 ORDER BY seq",
        partition,
        after_seq,
    )
    return rows


async def stored_outcomes(
    conn: asyncpg.Connection, keys: Sequence[tuple[str, str, str]]
) -> dict[tuple[str, str, str], StoredOutcome]:
    """Stored outcomes for the given idempotency keys (absent keys are simply missing)."""
    if not keys:
        return {}
    rows = await conn.fetch(
        """SELECT i.customer_id, i.scope, i.request_id, i.fingerprint, i.status, i.body
             FROM idempotency i
             JOIN unnest($1::text[], $2::text[], $3::text[]) AS k(c, s, r)
               ON i.customer_id = k.c AND i.scope = k.s AND i.request_id = k.r""",
        [k[0] for k in keys],
        [k[1] for k in keys],
        [k[2] for k in keys],
    )
    return {
        (r["customer_id"], r["scope"], r["request_id"]): StoredOutcome(
            bytes(r["fingerprint"]), r["status"], bytes(r["body"])
        )
        for r in rows
    }


# One array of row tuples per input; asyncpg encodes each as an array of the composite type
# (it looks the type up once per connection, when the statement is first prepared).
_APPLY = "SELECT ledger_apply_batch(" + ", ".join(f"${i}" for i in range(1, 11)) + ")"

# Server errors after which this connection's cached statement or type layout may be stale:
# ``schema migrate`` redefined the function or its row types while this process ran.
_STALE_DEFINITION = frozenset({"42883", "42804", "XX000", "0A000"})


async def apply_batch(conn: asyncpg.Connection, rows: BatchRows) -> None:
    """Write one batch in one statement (one transaction); raise :class:`Fenced` if fenced."""
    try:
        await conn.execute(
            _APPLY,
            rows.cursors,
            rows.customers,
            list(rows.blocks.values()),
            rows.accounts,
            rows.entries,
            rows.postings,
            rows.outcomes,
            rows.facts,
            rows.reservations,
            rows.releases,
        )
    except asyncpg.PostgresError as exc:
        state = getattr(exc, "sqlstate", None)
        if state == FENCED:
            raise Fenced(str(exc)) from exc
        if state in _STALE_DEFINITION:
            # The retry (transient fault) then prepares the statement and reads the types anew.
            await conn.reload_schema_state()
        raise


async def save_published(conn: asyncpg.Connection, cursor: PartitionCursor) -> None:
    """Record how far facts are known published (only while this writer owns the partition)."""
    await conn.execute(
        """UPDATE ledger_partitions SET published_seq = greatest(published_seq, $2)
            WHERE partition = $1 AND epoch = $3""",
        cursor.partition,
        cursor.published_seq,
        cursor.epoch,
    )


async def stored_epoch(conn: asyncpg.Connection, partition: int) -> int | None:
    """The epoch of the writer that owns ``partition`` now, as Postgres knows it."""
    epoch: int | None = await conn.fetchval(
        "SELECT epoch FROM ledger_partitions WHERE partition = $1", partition
    )
    return epoch
