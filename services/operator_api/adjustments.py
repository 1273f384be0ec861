"""Pending adjustments in Postgres (``pending_adjustments``, migration 0008), and the ledger rows
the reversal and approval routes read.

Every change of an adjustment's status is one conditional ``UPDATE ... WHERE status = ...``:
of two approvals racing, exactly one gets the row back and sends the command; the other finds
the adjustment no longer pending. The ledger's own tables are only read here.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import asyncpg

from ledger_core.commands import Command, fingerprint, idempotency_key
from operator_api.four_eyes import Adjustment, ListQuery

_COLUMNS = """adjustment_id, kind, customer_id, balance_id, request_id, amount, currency, comment,
    reverses, maker, status, checker, reason, outcome_status, outcome_body, created_at,
    decided_at, completed_at"""


def _adjustment(row: asyncpg.Record | None) -> Adjustment | None:
    return None if row is None else Adjustment(**dict(row))


async def find(
    conn: asyncpg.Connection, customer_id: str, kind: str, balance_id: str, request_id: str
) -> Adjustment | None:
    """The adjustment made under this key, if any (the unique key of the table)."""
    return _adjustment(
        await conn.fetchrow(
            f"""SELECT {_COLUMNS} FROM pending_adjustments
                 WHERE customer_id = $1 AND kind = $2 AND balance_id = $3 AND request_id = $4""",
            customer_id,
            kind,
            balance_id,
            request_id,
        )
    )


@dataclass(frozen=True, slots=True)
class NewAdjustment:
    """What a maker asked for, to be kept until a second key decides."""

    kind: str
    customer_id: str
    balance_id: str
    request_id: str
    amount: str
    currency: str
    comment: str
    reverses: uuid.UUID | None
    maker: uuid.UUID


async def insert(conn: asyncpg.Connection, new: NewAdjustment) -> Adjustment:
    """Keep ``new`` as pending; when a concurrent request made one under the same key first,
    that one (the caller compares what it asks)."""
    row = await conn.fetchrow(
        f"""INSERT INTO pending_adjustments (adjustment_id, kind, customer_id, balance_id,
                request_id, amount, currency, comment, reverses, maker)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
            ON CONFLICT (customer_id, kind, balance_id, request_id) DO NOTHING
            RETURNING {_COLUMNS}""",
        uuid.uuid4(),
        new.kind,
        new.customer_id,
        new.balance_id,
        new.request_id,
        new.amount,
        new.currency,
        new.comment,
        new.reverses,
        new.maker,
    )
    made = _adjustment(row)
    if made is None:
        made = await find(conn, new.customer_id, new.kind, new.balance_id, new.request_id)
    assert made is not None  # adjustments are never deleted
    return made


async def get(conn: asyncpg.Connection, adjustment_id: uuid.UUID) -> Adjustment | None:
    return _adjustment(
        await conn.fetchrow(
            f"SELECT {_COLUMNS} FROM pending_adjustments WHERE adjustment_id = $1", adjustment_id
        )
    )


async def listed(conn: asyncpg.Connection, query: ListQuery) -> tuple[list[Adjustment], bool]:
    """A page, oldest first (keyset on ``(created_at, adjustment_id)``), and whether more
    follow."""
    rows = await conn.fetch(
        f"""SELECT {_COLUMNS} FROM pending_adjustments
             WHERE ($1::text IS NULL OR status = $1)
               AND ($2::uuid IS NULL OR (created_at, adjustment_id) >
                    (SELECT created_at, adjustment_id FROM pending_adjustments
                      WHERE adjustment_id = $2))
             ORDER BY created_at, adjustment_id
             LIMIT $3""",
        query.status,
        query.after,
        query.limit + 1,
    )
    found = [Adjustment(**dict(r)) for r in rows]
    return found[: query.limit], len(found) > query.limit


async def claim_for_approval(
    conn: asyncpg.Connection, adjustment_id: uuid.UUID, checker: uuid.UUID
) -> Adjustment | None:
    """Mark a pending adjustment approved by ``checker`` (never its maker); None when it is not
    pending, not there, or ``checker`` made it. Only the caller that gets it back sends."""
    return _adjustment(
        await conn.fetchrow(
            f"""UPDATE pending_adjustments
                   SET status = 'approved', checker = $2, decided_at = now()
                 WHERE adjustment_id = $1 AND status = 'pending' AND maker <> $2
             RETURNING {_COLUMNS}""",
            adjustment_id,
            checker,
        )
    )


async def release(conn: asyncpg.Connection, adjustment_id: uuid.UUID) -> None:
    """Back to pending: the approved command was not taken by Kafka, so nothing was sent."""
    await conn.execute(
        """UPDATE pending_adjustments SET status = 'pending', checker = NULL, decided_at = NULL
            WHERE adjustment_id = $1 AND status = 'approved' AND outcome_status IS NULL""",
        adjustment_id,
    )


async def reject(
    conn: asyncpg.Connection, adjustment_id: uuid.UUID, checker: uuid.UUID, reason: str
) -> Adjustment | None:
    """Reject a pending adjustment (nothing is ever sent for it); None when not pending."""
    return _adjustment(
        await conn.fetchrow(
            f"""UPDATE pending_adjustments
                   SET status = 'rejected', checker = $2, reason = $3, decided_at = now(),
                       completed_at = now()
                 WHERE adjustment_id = $1 AND status = 'pending'
             RETURNING {_COLUMNS}""",
            adjustment_id,
            checker,
            reason,
        )
    )


async def record_outcome(
    conn: asyncpg.Connection, adjustment_id: uuid.UUID, status: int, body: bytes
) -> Adjustment | None:
    """Keep the ledger's answer to an approved adjustment (once): a success stays
    ``approved``, a refusal makes it ``failed``."""
    return _adjustment(
        await conn.fetchrow(
            f"""UPDATE pending_adjustments
                   SET status = CASE WHEN $2 < 400 THEN 'approved' ELSE 'failed' END,
                       outcome_status = $2, outcome_body = $3, completed_at = now()
                 WHERE adjustment_id = $1 AND status = 'approved' AND outcome_status IS NULL
             RETURNING {_COLUMNS}""",
            adjustment_id,
            status,
            body,
        )
    )


async def stored_outcome(conn: asyncpg.Connection, cmd: Command) -> tuple[int, bytes] | None:
    """The ledger's stored answer to exactly ``cmd`` (same key and fingerprint), if it has one:
    an approval whose answer did not arrive in time completes from here."""
    row = await conn.fetchrow(
        """SELECT fingerprint, status, body FROM idempotency
            WHERE customer_id = $1 AND scope = $2 AND request_id = $3""",
        *idempotency_key(cmd),
    )
    if row is None or bytes(row["fingerprint"]) != fingerprint(cmd):
        return None
    return int(row["status"]), bytes(row["body"])


@dataclass(frozen=True, slots=True)
class OriginalEntry:
    """What a reversal needs of the entry it reverses."""

    entry_id: uuid.UUID
    kind: str
    customer_id: str
    balance_id: str
    currency: str
    amount: int  # minor units


async def original_entry(conn: asyncpg.Connection, entry_id: uuid.UUID) -> OriginalEntry | None:
    """The journal entry by id (a primary-key probe)."""
    row = await conn.fetchrow(
        """SELECT entry_id, kind, customer_id, balance_id, currency, amount
             FROM journal_entries WHERE entry_id = $1""",
        entry_id,
    )
    if row is None:
        return None
    return OriginalEntry(
        row["entry_id"],
        row["kind"],
        row["customer_id"],
        row["balance_id"],
        row["currency"],
        int(row["amount"]),
    )
