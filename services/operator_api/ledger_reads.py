"""Read-only queries of the ledger's tables for the operator API (the ledger writer is their only
writer; these never lock or change a row).

Every query is bounded by an index, so its cost does not grow with a balance's history:

* a balance's total is its last posting (``postings`` primary key ``(account_id, seq)``, read
  backwards); what it holds is the sum of its open reservations
  (``exchange_reservations_open``);
* a statement page is a keyset range on that primary key (``seq > afterSeq ... LIMIT n``), never
  an ``OFFSET``;
* the balance at a time is the last entry of that balance at or before it
  (``journal_entries_balance_time``, migration 0007) or the last exchange settled into it
  (``exchange_reservations_settled_target``), whichever is later; a statement's ``from`` and
  ``to`` become sequence bounds the same way;
* entries by request id are primary-key probes of the idempotency table, one per scope the
  request could have had; by order id, ``journal_entries_order``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import asyncpg

from ledger_core.commands import (
    MONEY_KINDS,
    REVERSAL_OF,
    REVERSAL_SCOPE_PREFIX,
    ExchangeSettle,
)
from ledger_core.money import format_amount
from operator_api.ledger_requests import MAX_SEQ
from operator_api.ledger_views import BalanceRow, StatementLine, rfc3339

_BALANCES = """
SELECT a.balance_id, a.currency, a.created_at,
       coalesce(last.balance_after, 0) AS total, coalesce(last.seq, 0) AS seq,
       coalesce((SELECT sum(r.amount) FROM exchange_reservations r
                  WHERE r.partition = a.partition AND r.source_account = a.account_id
                    AND r.status = 'open'), 0) AS held
  FROM accounts a
  LEFT JOIN LATERAL (SELECT p.balance_after, p.seq FROM postings p
                      WHERE p.account_id = a.account_id ORDER BY p.seq DESC LIMIT 1) last ON true
 WHERE a.kind = 'customer' AND a.customer_id = $1 AND ($2::text IS NULL OR a.balance_id = $2)
 ORDER BY a.balance_id
"""


def _balance(row: asyncpg.Record) -> BalanceRow:
    return BalanceRow(
        balance_id=row["balance_id"],
        currency=row["currency"],
        total=int(row["total"]),
        held=int(row["held"]),
        seq=int(row["seq"]),
        created_at=row["created_at"],
    )


async def balances(
    conn: asyncpg.Connection, customer_id: str, balance_id: str | None = None
) -> list[BalanceRow]:
    """The customer's balances (or the one named), totals and holds from one snapshot."""
    return [_balance(r) for r in await conn.fetch(_BALANCES, customer_id, balance_id)]


@dataclass(frozen=True, slots=True)
class CustomerRow:
    customer_id: str
    blocked: bool
    created_at: datetime
    updated_at: datetime


async def customer(conn: asyncpg.Connection, customer_id: str) -> CustomerRow | None:
    row = await conn.fetchrow(
        "SELECT customer_id, blocked, created_at, updated_at FROM customers WHERE customer_id = $1",
        customer_id,
    )
    return None if row is None else CustomerRow(**dict(row))


@dataclass(frozen=True, slots=True)
class Account:
    """A customer balance's account: what statements and deposits need to know of it."""

    account_id: uuid.UUID
    currency: str


async def account(conn: asyncpg.Connection, customer_id: str, balance_id: str) -> Account | None:
    row = await conn.fetchrow(
        """SELECT account_id, currency FROM accounts
            WHERE kind = 'customer' AND customer_id = $1 AND balance_id = $2""",
        customer_id,
        balance_id,
    )
    return None if row is None else Account(row["account_id"], row["currency"])


# The last posting on a balance at (or strictly before) a time: the latest time among the
# balance's own entries (an exchange's entry is filed under its source balance) and the exchanges
# settled into it; then the highest seq at that time (a batch's entries share their time). Each
# max() is one descent of an index; the entries at that time (MATERIALIZED: found first, never
# by walking the balance's postings backwards) reach their postings through postings_entry.
# Times are the commands' Kafka timestamps: within a balance they follow seq unless two
# producers' clocks disagree, and then the cut is made where the later time says.
_LAST_POSTING = """
WITH cut AS (
    SELECT greatest(
        (SELECT max(created_at) FROM journal_entries
          WHERE customer_id = $1 AND balance_id = $2 AND created_at {op} $4),
        (SELECT max(released_at) FROM exchange_reservations
          WHERE target_account = $3 AND status = 'settled' AND released_at {op} $4)) AS at
), at_cut AS MATERIALIZED (
    SELECT entry_id FROM journal_entries, cut
     WHERE customer_id = $1 AND balance_id = $2 AND created_at = cut.at
    UNION ALL
    SELECT entry_id FROM exchange_reservations, cut
     WHERE target_account = $3 AND status = 'settled' AND released_at = cut.at
)
SELECT p.seq, p.balance_after, cut.at
  FROM cut, at_cut JOIN postings p ON p.entry_id = at_cut.entry_id
 WHERE p.account_id = $3
 ORDER BY p.seq DESC
 LIMIT 1
"""
_AT_OR_BEFORE: Final = _LAST_POSTING.format(op="<=")
_BEFORE: Final = _LAST_POSTING.format(op="<")


@dataclass(frozen=True, slots=True)
class PointInTime:
    """The balance after the last posting at or before a time (seq 0, amount 0: none yet)."""

    seq: int
    balance: int
    posted_at: datetime | None


async def last_posting(
    conn: asyncpg.Connection,
    customer_id: str,
    balance_id: str,
    account: Account,
    at: datetime,
    *,
    inclusive: bool = True,
) -> PointInTime:
    """The balance's last posting at (``inclusive``) or strictly before ``at``."""
    row = await conn.fetchrow(
        _AT_OR_BEFORE if inclusive else _BEFORE, customer_id, balance_id, account.account_id, at
    )
    if row is None:
        return PointInTime(0, 0, None)
    return PointInTime(int(row["seq"]), int(row["balance_after"]), row["at"])


# The page is cut from the primary key first (a range scan of at most $4 rows), and only its
# rows are joined to their entries, one primary-key probe each (the LIMIT keeps the planner from
# turning the lateral join into a hash join over the whole journal).
_STATEMENT = """
SELECT p.seq, p.amount, p.balance_after, e.entry_id, e.kind, e.request_id, e.comment,
       e.created_at, e.order_id
  FROM (SELECT seq, amount, balance_after, entry_id FROM postings
         WHERE account_id = $1 AND seq > $2 AND seq <= $3
         ORDER BY seq
         LIMIT $4) p
  CROSS JOIN LATERAL (SELECT * FROM journal_entries j WHERE j.entry_id = p.entry_id LIMIT 1) e
 ORDER BY p.seq
"""


@dataclass(frozen=True, slots=True)
class SeqWindow:
    """The postings ``after < seq <= through`` of one balance."""

    after: int = 0
    through: int = MAX_SEQ


async def statement_window(
    conn: asyncpg.Connection,
    customer_id: str,
    balance_id: str,
    account: Account,
    start: datetime | None,
    end: datetime | None,
) -> SeqWindow:
    """``from`` (inclusive) and ``to`` (exclusive) as sequence bounds: the postings after the
    last one before ``from``, through the last one before ``to``. So a statement's lines lead
    from the balance at ``from`` to the balance at ``to`` exactly, and each page stays a keyset
    range of the primary key, whatever the window."""
    after = 0
    through = MAX_SEQ
    if start is not None:
        after = (
            await last_posting(conn, customer_id, balance_id, account, start, inclusive=False)
        ).seq
    if end is not None:
        through = (
            await last_posting(conn, customer_id, balance_id, account, end, inclusive=False)
        ).seq
    return SeqWindow(after, through)


async def statement_page(
    conn: asyncpg.Connection, account: Account, window: SeqWindow, after_seq: int, limit: int
) -> tuple[list[StatementLine], bool]:
    """Up to ``limit`` lines after ``after_seq`` inside ``window``, and whether more follow
    (one extra row is asked for, so the last page is known to be the last)."""
    rows = await conn.fetch(
        _STATEMENT, account.account_id, max(after_seq, window.after), window.through, limit + 1
    )
    lines = [
        StatementLine(
            seq=int(r["seq"]),
            time=r["created_at"],
            kind=r["kind"],
            amount=int(r["amount"]),
            balance_after=int(r["balance_after"]),
            entry_id=r["entry_id"],
            request_id=r["request_id"],
            comment=r["comment"],
            order_id=r["order_id"],
        )
        for r in rows[:limit]
    ]
    return lines, len(rows) > limit


_ENTRY = """
SELECT entry_id, kind, customer_id, balance_id, request_id, currency, amount, comment,
       order_id, created_at, partition, command_offset
  FROM journal_entries WHERE entry_id = ANY($1::uuid[])
 ORDER BY created_at, entry_id
"""
_POSTINGS = """
SELECT p.entry_id, p.account_id, p.seq, p.amount, p.balance_after, a.kind, a.customer_id,
       a.balance_id, a.currency, a.partition
  FROM postings p JOIN accounts a ON a.account_id = p.account_id
 WHERE p.entry_id = ANY($1::uuid[])
 ORDER BY p.entry_id, a.kind <> 'customer', a.currency, a.kind, p.seq
"""


async def entries(conn: asyncpg.Connection, entry_ids: list[uuid.UUID]) -> list[dict[str, Any]]:
    """The entries with their postings (each posting with its account's kind, customer, balance
    and currency; a system account's ``shard`` is its partition), amounts as decimal strings."""
    if not entry_ids:
        return []
    rows = await conn.fetch(_ENTRY, entry_ids)
    reversed_by = await reversals_of(conn, rows)
    postings: dict[uuid.UUID, list[dict[str, Any]]] = {}
    for p in await conn.fetch(_POSTINGS, entry_ids):
        postings.setdefault(p["entry_id"], []).append(
            {
                "accountId": str(p["account_id"]),
                "kind": p["kind"],
                "customerId": p["customer_id"],
                "balanceId": p["balance_id"],
                "shard": None if p["kind"] == "customer" else p["partition"],
                "currency": p["currency"],
                "seq": int(p["seq"]),
                "amount": format_amount(int(p["amount"]), p["currency"]),
                "balanceAfter": format_amount(int(p["balance_after"]), p["currency"]),
            }
        )
    return [
        {
            "entryId": str(e["entry_id"]),
            "kind": e["kind"],
            "customerId": e["customer_id"],
            "balanceId": e["balance_id"],
            "requestId": e["request_id"],
            "currency": e["currency"],
            "amount": format_amount(int(e["amount"]), e["currency"]),
            "comment": e["comment"],
            "orderId": e["order_id"],
            "time": rfc3339(e["created_at"]),
            "commandPartition": e["partition"],
            "commandOffset": e["command_offset"],
            # The link both ways: a reversal's request id is the entry it reverses.
            "reverses": e["request_id"] if e["kind"] in REVERSED_KIND else None,
            "reversedBy": reversed_by.get(e["entry_id"]),
            "postings": postings.get(e["entry_id"], []),
        }
        for e in rows
    ]


# The kind of a reversing entry -> the kind it reverses.
REVERSED_KIND: Final = {v: k for k, v in REVERSAL_OF.items()}


async def reversals_of(conn: asyncpg.Connection, rows: list[asyncpg.Record]) -> dict[Any, str]:
    """The reversing entry of each reversible entry among ``rows`` that has one: a primary-key
    probe of the idempotency table each, ``(customer, reversal:<balance>, entry id)``."""
    wanted = [r for r in rows if r["kind"] in REVERSAL_OF]
    if not wanted:
        return {}
    found = await conn.fetch(
        """SELECT k.entry_id, i.entry_id AS reversal
             FROM unnest($1::text[], $2::text[], $3::uuid[]) AS k(customer_id, scope, entry_id)
             JOIN idempotency i ON i.customer_id = k.customer_id AND i.scope = k.scope
                               AND i.request_id = k.entry_id::text
            WHERE i.entry_id IS NOT NULL""",
        [r["customer_id"] for r in wanted],
        [REVERSAL_SCOPE_PREFIX + r["balance_id"] for r in wanted],
        [r["entry_id"] for r in wanted],
    )
    return {r["entry_id"]: str(r["reversal"]) for r in found}


async def reversal_of(
    conn: asyncpg.Connection, customer_id: str, balance_id: str, entry_id: str
) -> str | None:
    """The id of the entry that reversed ``entry_id``, if one did (one primary-key probe)."""
    found = await conn.fetchval(
        """SELECT entry_id FROM idempotency
            WHERE customer_id = $1 AND scope = $2 AND request_id = $3 AND entry_id IS NOT NULL""",
        customer_id,
        REVERSAL_SCOPE_PREFIX + balance_id,
        entry_id,
    )
    return None if found is None else str(found)


def request_scopes(balance_ids: list[str]) -> list[str]:
    """Every idempotency scope under which one of the customer's requests may have made an
    entry: a money command on one of its balances, or an exchange's settlement (its request id
    is the exchange id), or a reversal (its request id is the reversed entry's id). A new kind
    of entry adds its scope here."""
    return [
        f"{kind}:{b}"
        for kind in [*sorted(MONEY_KINDS), REVERSAL_SCOPE_PREFIX.rstrip(":")]
        for b in balance_ids
    ] + [ExchangeSettle.scope]


async def entry_ids_by_request(
    conn: asyncpg.Connection, customer_id: str, request_id: str
) -> list[uuid.UUID]:
    """The entries the customer's ``request_id`` made (one per operation that used it: Quadcode
    may reuse an id for a debit and its closing credit)."""
    balance_ids = [
        r["balance_id"]
        for r in await conn.fetch(
            "SELECT balance_id FROM accounts WHERE kind = 'customer' AND customer_id = $1",
            customer_id,
        )
    ]
    rows = await conn.fetch(
        """SELECT entry_id FROM idempotency
            WHERE customer_id = $1 AND scope = ANY($2::text[]) AND request_id = $3
              AND entry_id IS NOT NULL""",
        customer_id,
        request_scopes(balance_ids),
        request_id,
    )
    return [r["entry_id"] for r in rows]


async def entry_ids_by_order(conn: asyncpg.Connection, order_id: str) -> list[uuid.UUID]:
    rows = await conn.fetch("SELECT entry_id FROM journal_entries WHERE order_id = $1", order_id)
    return [r["entry_id"] for r in rows]


# Each account's balance is its last posting; accounts without one hold zero and are left out.
_TRIAL = """
SELECT a.currency, a.kind, sum(last.balance_after) AS amount
  FROM accounts a
  CROSS JOIN LATERAL (SELECT p.balance_after FROM postings p WHERE p.account_id = a.account_id
                       ORDER BY p.seq DESC LIMIT 1) last
 GROUP BY a.currency, a.kind
"""


async def trial_rows(conn: asyncpg.Connection) -> tuple[list[tuple[str, str, int]], datetime]:
    """``(currency, kind, balance)`` per currency and account kind, and the snapshot's time.

    Run inside a repeatable-read transaction (the caller's): every batch of the writer is one
    transaction, so one snapshot holds whole batches and their entries balance."""
    rows = await conn.fetch(_TRIAL)
    as_of: datetime = await conn.fetchval("SELECT now()")
    return [(r["currency"], r["kind"], int(r["amount"])) for r in rows], as_of
