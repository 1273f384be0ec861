"""What the ledger writes and answers for a fixed history, pinned byte for byte.

Every row of every batch (entries with their chain links, postings, outcomes, facts, exchange
reservations and releases, blocks, cursors) and every answer of a fixed history of commands is
hashed. The digest is the one of the code before the batch plan and the one entry model
(``7ff7523``): a refactoring of the write path must not change what is stored or published, or
a replay into a fresh database would no longer match a ledger written by an older writer.
Changing what is written on purpose (a new column, fewer rows) updates the pin in the same
change, and says so.
"""

from __future__ import annotations

import datetime
import hashlib
import uuid
from typing import Any

import orjson
import pytest

from ledger_core.batch_rows import PartitionCursor
from ledger_core.commands import (
    Command,
    CreateCustomer,
    ExchangeReserve,
    ExchangeSettle,
    ExchangeVoid,
    MoneyCommand,
    OpenBalance,
    SetBlocked,
    idempotency_key,
)
from ledger_core.plan import Incoming, plan_batch
from ledger_core.state import PartitionState, UndoLog

pytestmark = pytest.mark.unit

PINNED = "21ce29ef0db8f69a21cacfca80b695a83609f07ab5b3b6b85d4aadaa6571b4db"
PARTITION = 3
ROW_LISTS = (
    "cursors",
    "customers",
    "accounts",
    "entries",
    "postings",
    "outcomes",
    "facts",
    "reservations",
    "releases",
)

HISTORY: list[list[Command]] = [
    [
        CreateCustomer("ann", "c1"),
        OpenBalance("ann", "usdt", "USDT", "o1"),
        OpenBalance("ann", "btc", "BTC", "o2"),
        MoneyCommand("deposit", "ann", "usdt", "d1", "100", "USDT", "funding"),
    ],
    [
        MoneyCommand("debit", "ann", "usdt", "r1", "1.25", "USDT", "stake"),
        MoneyCommand("credit", "ann", "usdt", "r2", "2.50", "USDT", "payout"),
        MoneyCommand("debit", "ann", "usdt", "r1", "1.25", "USDT", "stake"),  # a retry
        MoneyCommand("debit", "ann", "usdt", "r3", "1000", "USDT", "too much"),
        ExchangeReserve("ann", "x1", "usdt", "btc", "60", "USDT", "BTC", "USDT -> BTC"),
        ExchangeReserve("ann", "x2", "usdt", "btc", "5", "USDT", "BTC", "USDT -> BTC"),
    ],
    [
        ExchangeSettle(
            "ann", "x1", "order-1", "BTC", "0.00119", "0.00000007", "0.00000024", "0.00000001"
        ),
        ExchangeVoid("ann", "x2", "order-2", "expired"),
        MoneyCommand("withdrawal", "ann", "usdt", "w1", "3", "USDT", "out"),
        SetBlocked("ann", True, "b1"),
    ],
]


class Memory:
    def __init__(self) -> None:
        self.state = PartitionState(PARTITION)
        self.cursor = PartitionCursor(PARTITION, 1, 0, 0, 0)


def _plain(value: Any) -> Any:
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, bytes | bytearray):
        return bytes(value).hex()
    if isinstance(value, datetime.datetime):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return [_plain(x) for x in value]
    return value


def _digest_of_history() -> str:
    memory, digest, offset = Memory(), hashlib.sha256(), 0
    for batch in HISTORY:
        commands = []
        for cmd in batch:
            at_ms = 1_767_225_600_000 + offset
            commands.append(Incoming(PARTITION, offset, at_ms, cmd, idempotency_key(cmd)))
            offset += 1
        plan = plan_batch(
            {PARTITION: memory},
            commands,
            {PARTITION: offset},
            lambda partition, key: None,
            UndoLog(),
            verified=True,
        )
        for name in ROW_LISTS:
            rows = [list(row) for row in getattr(plan.rows, name)]
            digest.update(orjson.dumps([name, _plain(rows)]))
        digest.update(orjson.dumps(_plain([list(row) for row in plan.rows.blocks.values()])))
        for decision in plan.decisions:
            digest.update(bytes([decision.record]))
            digest.update(str(decision.outcome.status).encode())
            digest.update(decision.outcome.body)
    return digest.hexdigest()


def test_the_rows_facts_and_answers_of_a_fixed_history_are_unchanged() -> None:
    assert _digest_of_history() == PINNED
