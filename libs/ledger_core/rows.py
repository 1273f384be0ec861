"""The rows one batch of the ledger writes, one type per input of ``ledger_apply_batch``.

Each tuple's fields are, in order, the attributes of the SQL composite type of the same input
(``libs/wallet_platform/definitions/ledger_apply_batch.sql``; :data:`SQL_TYPES` names it), so a
column is added by one edit on each side, and a test checks that the two sides agree. Pure data:
no I/O, so a planner in ``ledger_core`` can build them and the store only sends them.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import NamedTuple


class CursorRow(NamedTuple):
    """The conditional move of a partition's offsets and chain head: applied only if the
    partition is still at ``epoch``, ``expected_offset`` and ``expected_chain_seq`` (else the
    writer is fenced, LF001)."""

    partition: int
    expected_offset: int
    next_offset: int
    epoch: int
    outbox_seq: int
    published_seq: int
    expected_chain_seq: int
    chain_seq: int
    chain_hash: bytes


class CustomerRow(NamedTuple):
    """A new customer (not blocked)."""

    customer_id: str
    partition: int
    created_at: datetime


class BlockRow(NamedTuple):
    """A customer blocked or unblocked."""

    customer_id: str
    blocked: bool
    updated_at: datetime


class AccountRow(NamedTuple):
    """A new account (a customer's balance)."""

    account_id: uuid.UUID
    partition: int
    kind: str
    customer_id: str | None
    balance_id: str | None
    currency: str


class EntryRow(NamedTuple):
    """A journal entry, with its place in its partition's hash chain (``ledger_core.chain``;
    None for an unchained entry)."""

    entry_id: uuid.UUID
    partition: int
    command_offset: int
    kind: str
    customer_id: str
    balance_id: str
    request_id: str
    currency: str
    amount: int
    comment: str
    created_at: datetime
    order_id: str | None
    chain_seq: int | None
    prev_hash: bytes | None
    entry_hash: bytes | None


class PostingRow(NamedTuple):
    """A posting of an entry. ``customer``: the account is a customer's (its balance may not go
    negative); ``currency``: stated by multi-currency entries, None for single-currency ones."""

    entry_id: uuid.UUID
    account_id: uuid.UUID
    seq: int
    amount: int
    balance_after: int
    customer: bool
    currency: str | None


class OutcomeRow(NamedTuple):
    """A stored outcome under its idempotency key."""

    customer_id: str
    scope: str
    request_id: str
    fingerprint: bytes
    status: int
    body: bytes
    entry_id: uuid.UUID | None
    partition: int
    created_at: datetime


class FactRow(NamedTuple):
    """A fact in the outbox, to be published on ``ledger.events``."""

    partition: int
    seq: int
    event_id: str  # a UUID in its text form, as ``ledger_core.facts`` makes it
    key: str
    payload: bytes


class ReservationRow(NamedTuple):
    """An exchange's hold on a customer's balance."""

    customer_id: str
    exchange_id: str
    partition: int
    source_balance_id: str
    source_account: uuid.UUID
    target_balance_id: str
    target_account: uuid.UUID
    currency: str
    amount: int
    comment: str
    reserved_offset: int
    reserved_at: datetime


class ReleaseRow(NamedTuple):
    """An open reservation settled or voided (the entry of a settlement, if any)."""

    customer_id: str
    exchange_id: str
    status: str
    order_id: str
    reason: str
    entry_id: uuid.UUID | None
    released_offset: int
    released_at: datetime


# ``ledger_apply_batch``'s parameters in order: the SQL composite type of each and its tuple.
SQL_TYPES: tuple[tuple[str, type[tuple[object, ...]]], ...] = (
    ("ledger_cursor_row", CursorRow),
    ("ledger_customer_row", CustomerRow),
    ("ledger_block_row", BlockRow),
    ("ledger_account_row", AccountRow),
    ("ledger_entry_row", EntryRow),
    ("ledger_posting_row", PostingRow),
    ("ledger_outcome_row", OutcomeRow),
    ("ledger_fact_row", FactRow),
    ("ledger_reservation_row", ReservationRow),
    ("ledger_release_row", ReleaseRow),
)
