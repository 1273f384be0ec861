"""The journal's hash chain: each entry's hash covers the entry, its postings and the hash of the
entry before it in its partition, so an entry changed, removed or inserted afterwards is found.

Pure: the writer links entries as it builds a batch, ``ledger.chain verify`` recomputes the hashes
from the stored rows, and a consumer of ``ledger.events`` recomputes them from the facts (all three
with :func:`entry_hash`). The encoding is versioned and documented in ``docs/tamper-evidence.md``::

    entry_hash = SHA-256( field("wallet-entry-chain/v1") || field(partition) || field(chain_seq)
                          || field(entry_id) || field(kind) || field(customer_id)
                          || field(balance_id) || field(request_id) || field(currency)
                          || field(amount) || field(comment) || field(order_id)
                          || field(created_at) || field(number of postings)
                          || for each posting, ordered by (account_id, seq):
                               field(account_id) || field(seq) || field(amount)
                               || field(balance_after) || field(currency)
                          || field(prev_hash) )
    field(v)   = 4-byte big-endian length of v's bytes || v's bytes;  null = FF FF FF FF

Integers (partition, chain_seq, amounts and balances in minor units, sequence numbers, created_at
in microseconds since the Unix epoch) are their decimal ASCII digits, with ``-`` when negative;
uuids are their lowercase hyphenated text; text is UTF-8; ``prev_hash`` is its 32 raw bytes (32
zero bytes before a partition's first chained entry). The length prefixes make the encoding
unambiguous whatever the text holds, and easy to rebuild in any language (no JSON escaping rules).
"""

from __future__ import annotations

import hashlib
import struct
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, NamedTuple

from ledger_core.money import to_minor
from ledger_core.state import id_text

VERSION: Final = b"wallet-entry-chain/v1"
GENESIS: Final = bytes(32)
"""The ``prev_hash`` of a partition's first chained entry."""

_NULL: Final = b"\xff\xff\xff\xff"
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND: Final = timedelta(microseconds=1)
_LENGTH = struct.Struct(">I")


class ChainPosting(NamedTuple):
    """What the hash covers of one posting."""

    account_id: uuid.UUID
    seq: int
    amount: int  # signed, minor units
    balance_after: int
    currency: str


class ChainEntry(NamedTuple):
    """What the hash covers of one journal entry (besides its place in the chain)."""

    partition: int
    entry_id: uuid.UUID
    kind: str
    customer_id: str
    balance_id: str
    request_id: str
    currency: str
    amount: int  # minor units
    comment: str
    order_id: str | None
    created_at_us: int  # microseconds since the Unix epoch
    postings: Sequence[ChainPosting]


@dataclass(frozen=True, slots=True)
class ChainLink:
    """An entry's place in its partition's chain."""

    seq: int
    prev_hash: bytes
    entry_hash: bytes


def micros(at: datetime) -> int:
    """A timestamp as whole microseconds since the Unix epoch (exact: no float on the way)."""
    return (at - _EPOCH) // _MICROSECOND


def canonical_entry(entry: ChainEntry, chain_seq: int, prev_hash: bytes) -> bytes:
    """The bytes an entry's hash covers (see the module docstring)."""
    if len(prev_hash) != 32:
        raise ValueError("prev_hash is a 32-byte SHA-256 digest")
    values: list[bytes | None] = [
        VERSION,
        b"%d" % entry.partition,
        b"%d" % chain_seq,
        id_text(entry.entry_id).encode(),
        entry.kind.encode(),
        entry.customer_id.encode(),
        entry.balance_id.encode(),
        entry.request_id.encode(),
        entry.currency.encode(),
        b"%d" % entry.amount,
        entry.comment.encode(),
        None if entry.order_id is None else entry.order_id.encode(),
        b"%d" % entry.created_at_us,
        b"%d" % len(entry.postings),
    ]
    # The table keeps no position for a posting: (account, seq) is its key, so that order can be
    # rebuilt from the rows, and from a fact whatever order it lists them in.
    postings = [(id_text(p.account_id), p) for p in entry.postings]
    postings.sort(key=lambda item: (item[0], item[1].seq))
    for account, p in postings:
        values += (
            account.encode(),
            b"%d" % p.seq,
            b"%d" % p.amount,
            b"%d" % p.balance_after,
            p.currency.encode(),
        )
    values.append(prev_hash)
    # Written on the hot path (every entry the writer makes): one buffer, no call per field.
    out = bytearray()
    pack = _LENGTH.pack
    for value in values:
        if value is None:
            out += _NULL
        else:
            out += pack(len(value))
            out += value
    return bytes(out)


def entry_hash(entry: ChainEntry, chain_seq: int, prev_hash: bytes) -> bytes:
    """The SHA-256 of an entry at ``chain_seq`` following an entry whose hash is ``prev_hash``."""
    return hashlib.sha256(canonical_entry(entry, chain_seq, prev_hash)).digest()


def link_after(seq_before: int, hash_before: bytes, entry: ChainEntry) -> ChainLink:
    """Chain ``entry`` after the head ``(seq_before, hash_before)``: it becomes the new head."""
    seq = seq_before + 1
    return ChainLink(seq, hash_before, entry_hash(entry, seq, hash_before))


def chain_entry_of_fact(body: dict[str, Any]) -> ChainEntry | None:
    """What the hash covers, read back from an entry's fact (``entry.posted``, or
    ``exchange.settled``, whose entry's kind is ``exchange``, request id the exchange id and
    balance the source balance); None for a fact that carries no entry. Raises KeyError or
    ValueError for a malformed fact. Amounts are read back to minor units, ``occurred_at`` (the
    entry's ``created_at``) to microseconds."""
    kind = body.get("type")
    if kind == "entry.posted":
        currency = str(body["currency_code"])
        entry_kind, balance_id = str(body["kind"]), str(body["balance_id"])
        request_id, order_id = str(body["request_id"]), None
    elif kind == "exchange.settled":
        currency = str(body["currency_code"])
        entry_kind, balance_id = "exchange", str(body["source_balance_id"])
        request_id, order_id = str(body["exchange_id"]), str(body["order_id"])
    else:
        return None
    postings = []
    for p in body["postings"]:
        # entry.posted's postings are all in the entry's currency; exchange ones say theirs.
        posting_currency = str(p.get("currency_code", currency))
        postings.append(
            ChainPosting(
                uuid.UUID(p["account_id"]),
                int(p["seq"]),
                to_minor(p["amount"], posting_currency),
                to_minor(p["balance_after"], posting_currency),
                posting_currency,
            )
        )
    return ChainEntry(
        int(body["partition"]),
        uuid.UUID(body["entry_id"]),
        entry_kind,
        str(body["customer_id"]),
        balance_id,
        request_id,
        currency,
        to_minor(body["amount"], currency),
        str(body["comment"]),
        order_id,
        micros(datetime.fromisoformat(body["occurred_at"])),
        postings,
    )
