"""The ledger writer's in-memory picture of one partition: customers, balances, system accounts.

It is loaded from Postgres when a writer is assigned a partition and changed only by
:func:`ledger_core.decide.apply`, after :func:`ledger_core.decide.decide` has said what to do.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

SystemKind = Literal[
    "trading", "settlement", "exchange_clearing", "markup_revenue", "affiliate_margin", "rounding"
]
# trading: the other side of Quadcode's debits and credits; settlement: deposits, withdrawals;
# exchange_clearing: the other side of both legs of an exchange (Swapgate's position);
# markup_revenue, affiliate_margin: what an exchange earns; rounding: remainders of rounding.
SYSTEM_KINDS: tuple[SystemKind, ...] = (
    "trading",
    "settlement",
    "exchange_clearing",
    "markup_revenue",
    "affiliate_margin",
    "rounding",
)

# Namespace for the ledger's deterministic ids (uuid5): replaying the same commands yields the
# same account, entry and event ids, which is what makes a republish harmless downstream.
LEDGER_NAMESPACE = uuid.UUID("6f1d6c43-3b0e-4c55-9a55-0d5c1c1e6a01")


_NAMESPACE_BYTES = LEDGER_NAMESPACE.bytes
# uuid5's version (5) and variant (RFC 4122) bits, set on the SHA-1 digest's first 128 bits.
_VERSION_MASK = ~((0xF000 << 64) | (0xC000 << 48))
_VERSION_BITS = (5 << 76) | (0x8000 << 48)
_new_object = object.__new__
_set_attribute = object.__setattr__


def stable_id(*parts: object) -> uuid.UUID:
    """A deterministic UUID for a tuple of parts (JSON-encoded, so no separator can collide).

    Exactly ``uuid.uuid5(LEDGER_NAMESPACE, orjson.dumps(parts).decode())`` (a unit test holds
    them equal), built without ``uuid.UUID.__init__``'s checks: the writer makes several per
    command (entry, fact and account ids)."""
    digest = hashlib.sha1(_NAMESPACE_BYTES + orjson.dumps(parts)).digest()
    value = int.from_bytes(digest[:16]) & _VERSION_MASK | _VERSION_BITS
    made: uuid.UUID = _new_object(uuid.UUID)
    _set_attribute(made, "int", value)
    _set_attribute(made, "is_safe", uuid.SafeUUID.unknown)
    return made


_ID_TEXTS: dict[uuid.UUID, str] = {}
_ID_TEXTS_KEPT = 20_000


def id_text(value: uuid.UUID) -> str:
    """``str(value)``, remembered: the writer writes the same account ids into every fact and
    every chained entry of their balances (the memory is cleared whole past a bound)."""
    text = _ID_TEXTS.get(value)
    if text is None:
        if len(_ID_TEXTS) >= _ID_TEXTS_KEPT:
            _ID_TEXTS.clear()
        text = _ID_TEXTS[value] = str(value)
    return text


def balance_account_id(customer_id: str, balance_id: str) -> uuid.UUID:
    return stable_id("balance", customer_id, balance_id)


def system_account_id(kind: str, currency: str, partition: int) -> uuid.UUID:
    """System accounts are sharded: one per (kind, currency, partition), so writers never share a
    row. A currency's trading position is the sum of its shards."""
    return stable_id("system", kind, currency, partition)


@dataclass(slots=True)
class Account:
    """An account's current state: the last posting's sequence number and balance-after.

    ``reserved`` is the sum of the open exchange reservations on it; ``available`` (what a debit
    may spend) is ``balance - reserved``. ``holds`` counts the reservations made and released
    on it, as ``seq`` counts postings: the facts carry both, so a consumer can order them.
    """

    account_id: uuid.UUID
    currency: str
    balance: int = 0
    seq: int = 0
    reserved: int = 0
    holds: int = 0

    @property
    def available(self) -> int:
        return self.balance - self.reserved


@dataclass(frozen=True, slots=True)
class Reservation:
    """An open exchange reservation: ``amount`` of the source balance held for the exchange."""

    exchange_id: str
    source_balance_id: str
    target_balance_id: str
    currency: str
    amount: int


@dataclass(slots=True)
class Customer:
    blocked: bool = False
    balances: dict[str, Account] = field(default_factory=dict)
    # Open reservations by exchange id; settled and voided ones are kept only in Postgres.
    reservations: dict[str, Reservation] = field(default_factory=dict)


@dataclass(slots=True)
class PartitionState:
    """Everything the writer of ``partition`` needs to decide a command without I/O."""

    partition: int
    customers: dict[str, Customer] = field(default_factory=dict)
    system: dict[tuple[str, str], Account] = field(default_factory=dict)

    def system_account(self, kind: str, currency: str, undo: UndoLog | None = None) -> Account:
        """The partition's shard of a system account (created on first use, balance zero)."""
        key = (kind, currency)
        account = self.system.get(key)
        if account is None:
            account = Account(system_account_id(kind, currency, self.partition), currency)
            if undo is None:
                self.system[key] = account
            else:
                undo.put(self.system, key, account)
        return account


_MISSING = object()


class UndoLog:
    """The changes made to in-memory state, newest last, so they can be taken back exactly.

    The writer applies a batch's decisions to memory before Postgres has the batch (so the next
    batch can be decided meanwhile). When Postgres refuses the batch, the server rolled it back:
    rolling the log back returns memory to what Postgres holds, without reloading the partition.
    """

    __slots__ = ("_entries",)

    def __init__(self) -> None:
        self._entries: list[tuple[Any, Any, Any, bool]] = []

    def __len__(self) -> int:
        return len(self._entries)

    def set(self, obj: object, name: str, value: object) -> None:
        """``obj.name = value``, remembering the old value."""
        self._entries.append((obj, name, getattr(obj, name), False))
        setattr(obj, name, value)

    def put(self, mapping: MutableMapping[Any, Any], key: object, value: object) -> None:
        """``mapping[key] = value``, remembering the old value (or its absence)."""
        self._entries.append((mapping, key, mapping.get(key, _MISSING), True))
        mapping[key] = value

    def pop(self, mapping: MutableMapping[Any, Any], key: object) -> Any:
        """``mapping.pop(key)``, remembering the value."""
        value = mapping.pop(key)
        self._entries.append((mapping, key, value, True))
        return value

    def rollback(self) -> None:
        """Take every change back, newest first; the log is empty afterwards."""
        for target, key, old, is_mapping in reversed(self._entries):
            if not is_mapping:
                setattr(target, key, old)
            elif old is _MISSING:
                target.pop(key, None)
            else:
                target[key] = old
        self._entries.clear()
