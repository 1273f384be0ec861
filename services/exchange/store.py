"""The ``exchanges`` table: the orchestrator's progress per exchange (never a ledger table).

Every change of state is a compare-and-set on the state it expects, so two runners of the same
exchange (an operator API instance and the CLI, or two instances) can never both take a step
that is not idempotent: only one of them moves ``reserved`` to ``ordering`` and creates the order.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from exchange.requests import ExchangeRequest

# Where an exchange can be; the last four are final.
RESERVING = "reserving"  # the reserve command is sent (or about to be), its answer not yet known
RESERVED = "reserved"  # the ledger holds the amount; no order yet
ORDERING = "ordering"  # the order is being created at Swapgate
ATTENTION = "attention"  # a person must look (e.g. the order may or may not exist); held
ORDERED = "ordered"  # the order exists; polled until it ends
SETTLING = "settling"  # it completed: the settle command, with its amounts, is being sent
VOIDING = "voiding"  # it did not: the void command is being sent
SETTLED = "settled"
VOIDED = "voided"
REFUSED = "refused"  # the ledger refused the reservation: nothing was held
FAILED = "failed"  # stopped on something unexpected (see detail)

FINAL = frozenset({SETTLED, VOIDED, REFUSED, FAILED})
# What a runner picks up again after a restart (attention waits for a person).
RESUMABLE = (RESERVING, RESERVED, ORDERING, ORDERED, SETTLING, VOIDING)


@dataclass(frozen=True, slots=True)
class ExchangeRow:
    request: ExchangeRequest
    fingerprint: bytes
    state: str
    order_id: str | None
    quote: dict[str, Any] | None
    settlement: dict[str, Any] | None
    ledger_status: int | None
    ledger_body: dict[str, Any] | None
    detail: str | None
    created_at: datetime
    updated_at: datetime

    def view(self) -> dict[str, Any]:
        """The exchange as the operator API and the CLI show it."""
        r = self.request
        return {
            "customer_id": r.customer_id,
            "exchange_id": r.exchange_id,
            "state": self.state,
            "source_balance_id": r.source_balance_id,
            "target_balance_id": r.target_balance_id,
            "amount": r.amount,
            "currency_code": r.currency,
            "target_currency_code": r.target_currency,
            "order_id": self.order_id,
            "quote": self.quote,
            "settlement": self.settlement,
            "ledger": None
            if self.ledger_status is None
            else {"status": self.ledger_status, "body": self.ledger_body},
            "detail": self.detail,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
        }


def _json(value: object) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def _loads(value: str | None) -> Any:
    return None if value is None else orjson.loads(value)


def _row(r: asyncpg.Record) -> ExchangeRow:
    return ExchangeRow(
        request=ExchangeRequest.from_json(orjson.loads(r["request"])),
        fingerprint=bytes(r["fingerprint"]),
        state=r["state"],
        order_id=r["order_id"],
        quote=_loads(r["quote"]),
        settlement=_loads(r["settlement"]),
        ledger_status=r["ledger_status"],
        ledger_body=_loads(r["ledger_body"]),
        detail=r["detail"],
        created_at=r["created_at"],
        updated_at=r["updated_at"],
    )


async def get(
    conn: asyncpg.Connection | asyncpg.Pool, customer_id: str, exchange_id: str
) -> ExchangeRow | None:
    row = await conn.fetchrow(
        "SELECT * FROM exchanges WHERE customer_id = $1 AND exchange_id = $2",
        customer_id,
        exchange_id,
    )
    return None if row is None else _row(row)


async def insert(
    conn: asyncpg.Connection | asyncpg.Pool,
    request: ExchangeRequest,
    state: str,
    quote: dict[str, Any],
) -> bool:
    """Record a new exchange; False if the id is taken (the caller reads what is there)."""
    done = await conn.fetchval(
        """INSERT INTO exchanges (customer_id, exchange_id, request, fingerprint, state, quote)
           VALUES ($1, $2, $3::jsonb, $4, $5, $6::jsonb)
           ON CONFLICT DO NOTHING RETURNING true""",
        request.customer_id,
        request.exchange_id,
        _json(request.to_json()),
        request.fingerprint(),
        state,
        _json(quote),
    )
    return bool(done)


_COLUMNS = frozenset({"order_id", "settlement", "ledger_status", "ledger_body", "detail"})
_JSON = frozenset({"settlement", "ledger_body"})


async def transition(
    conn: asyncpg.Connection | asyncpg.Pool,
    customer_id: str,
    exchange_id: str,
    expected: Collection[str],
    state: str,
    **changes: object,
) -> ExchangeRow | None:
    """Move the exchange to ``state`` if it is in one of ``expected`` states (with ``changes``
    to other columns); the new row, or None if it was not in an expected state."""
    assert set(changes) <= _COLUMNS, changes
    names = sorted(changes)
    sets = "".join(
        f", {name} = ${i}{'::jsonb' if name in _JSON else ''}"
        for i, name in enumerate(names, start=5)
    )
    row = await conn.fetchrow(
        f"""UPDATE exchanges SET state = $4, updated_at = now(){sets}
             WHERE customer_id = $1 AND exchange_id = $2 AND state = ANY($3::text[])
            RETURNING *""",
        customer_id,
        exchange_id,
        list(expected),
        state,
        *(_json(changes[n]) if n in _JSON else changes[n] for n in names),
    )
    return None if row is None else _row(row)


async def unfinished(
    conn: asyncpg.Connection | asyncpg.Pool,
) -> list[tuple[str, str]]:
    """Exchanges a runner should pick up again, oldest change first."""
    rows = await conn.fetch(
        """SELECT customer_id, exchange_id FROM exchanges
            WHERE state = ANY($1::text[]) ORDER BY updated_at""",
        list(RESUMABLE),
    )
    return [(r["customer_id"], r["exchange_id"]) for r in rows]


async def expire_ordering(
    conn: asyncpg.Connection | asyncpg.Pool,
    customer_id: str,
    exchange_id: str,
    after_seconds: float,
    detail: str,
) -> ExchangeRow | None:
    """Move an exchange that has been ``ordering`` for ``after_seconds`` (by the database's
    clock) to ``attention``; None while it is younger (its runner may still be at work)."""
    row = await conn.fetchrow(
        f"""UPDATE exchanges SET state = '{ATTENTION}', updated_at = now(), detail = $4
             WHERE customer_id = $1 AND exchange_id = $2 AND state = '{ORDERING}'
               AND updated_at < now() - make_interval(secs => $3)
            RETURNING *""",
        customer_id,
        exchange_id,
        after_seconds,
        detail,
    )
    return None if row is None else _row(row)
