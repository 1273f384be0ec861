"""The journal's hash chain in the pure core: the canonical encoding, fixed vectors, the links a
batch builds (and takes back), and the hash a consumer recomputes from a fact."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime
from pathlib import Path

import jsonschema
import orjson
import pytest

from ledger.chain import describe_difference
from ledger.store import BatchRows, PartitionCursor
from ledger_books.chain import ChainFollower, Link
from ledger_core.chain import (
    GENESIS,
    ChainEntry,
    ChainPosting,
    canonical_entry,
    chain_entry_of_fact,
    entry_hash,
    link_after,
    micros,
)
from ledger_core.commands import (
    Command,
    CreateCustomer,
    ExchangeReserve,
    ExchangeSettle,
    MoneyCommand,
    OpenBalance,
)
from ledger_core.decide import Decision, apply, decide
from ledger_core.facts import facts_for
from ledger_core.state import PartitionState, UndoLog

pytestmark = pytest.mark.unit

SCHEMA = orjson.loads(
    (Path(__file__).parents[2] / "docs" / "events" / "ledger-event-v1.schema.json").read_bytes()
)
AT = datetime(2026, 1, 1, 12, 30, 5, 123000, tzinfo=UTC)
AT_MS = 1_767_270_605_123
ACCOUNT_A = uuid.UUID("00000000-0000-0000-0000-00000000000a")
ACCOUNT_B = uuid.UUID("00000000-0000-0000-0000-00000000000b")

ENTRY = ChainEntry(
    partition=3,
    entry_id=uuid.UUID("11111111-2222-3333-4444-555555555555"),
    kind="debit",
    customer_id="ann",
    balance_id="ann_USD",
    request_id="r-1",
    currency="USD",
    amount=1050,
    comment="stake",
    order_id=None,
    created_at_us=1_767_270_605_123_000,
    postings=[
        ChainPosting(ACCOUNT_B, 7, 1050, 99_000, "USD"),
        ChainPosting(ACCOUNT_A, 2, -1050, 950, "USD"),
    ],
)


def field(value: bytes) -> bytes:
    return len(value).to_bytes(4, "big") + value


def test_canonical_encoding_is_length_prefixed_fields_with_postings_by_account() -> None:
    expected = b"".join(
        [
            field(b"wallet-entry-chain/v1"),
            field(b"3"),
            field(b"1"),
            field(b"11111111-2222-3333-4444-555555555555"),
            field(b"debit"),
            field(b"ann"),
            field(b"ann_USD"),
            field(b"r-1"),
            field(b"USD"),
            field(b"1050"),
            field(b"stake"),
            b"\xff\xff\xff\xff",  # order_id: null
            field(b"1767270605123000"),
            field(b"2"),
            # Postings in (account_id, seq) order, whatever order they were given in.
            field(b"00000000-0000-0000-0000-00000000000a"),
            field(b"2"),
            field(b"-1050"),
            field(b"950"),
            field(b"USD"),
            field(b"00000000-0000-0000-0000-00000000000b"),
            field(b"7"),
            field(b"1050"),
            field(b"99000"),
            field(b"USD"),
            field(GENESIS),
        ]
    )
    assert canonical_entry(ENTRY, 1, GENESIS) == expected
    assert entry_hash(ENTRY, 1, GENESIS) == hashlib.sha256(expected).digest()


def test_fixed_vectors_pin_the_hash() -> None:
    # If these change, every stored chain and every consumer's check breaks: a new version.
    first = entry_hash(ENTRY, 1, GENESIS)
    assert first.hex() == "0607d22cce9294b44e55961383fe1bd117511924650e9dd49c0ace6dcb607081"
    second = entry_hash(ENTRY._replace(order_id="o-9", comment=""), 2, first)
    assert second.hex() == "82324763e21bb490c587251d9855814760043c368bd063a626e6cdb40a845307"


@pytest.mark.parametrize(
    "changed",
    [
        {"partition": 4},
        {"entry_id": uuid.UUID(int=1)},
        {"kind": "credit"},
        {"customer_id": "bob"},
        {"balance_id": "ann_EUR"},
        {"request_id": "r-2"},
        {"currency": "EUR"},
        {"amount": 1051},
        {"comment": "stake!"},
        {"order_id": ""},  # an empty order id is not a missing one
        {"created_at_us": 1_767_270_605_123_001},
        {"postings": [ChainPosting(ACCOUNT_A, 2, -1050, 950, "USD")]},
        {"postings": [*ENTRY.postings, ChainPosting(uuid.UUID(int=9), 1, 0, 0, "USD")]},
        {"postings": [ENTRY.postings[0], ChainPosting(ACCOUNT_A, 2, -1050, 951, "USD")]},
        {"postings": [ENTRY.postings[0], ChainPosting(ACCOUNT_A, 3, -1050, 950, "USD")]},
        {"postings": [ENTRY.postings[0], ChainPosting(ACCOUNT_A, 2, -1049, 950, "USD")]},
        {"postings": [ENTRY.postings[0], ChainPosting(ACCOUNT_A, 2, -1050, 950, "EUR")]},
    ],
)
def test_every_covered_field_changes_the_hash(changed: dict[str, object]) -> None:
    assert entry_hash(ENTRY._replace(**changed), 1, GENESIS) != entry_hash(ENTRY, 1, GENESIS)


def test_the_place_in_the_chain_and_the_previous_hash_change_the_hash() -> None:
    assert entry_hash(ENTRY, 2, GENESIS) != entry_hash(ENTRY, 1, GENESIS)
    assert entry_hash(ENTRY, 1, b"\x01" * 32) != entry_hash(ENTRY, 1, GENESIS)


def test_text_boundaries_are_unambiguous() -> None:
    one = ENTRY._replace(request_id="ab", comment="c")
    other = ENTRY._replace(request_id="a", comment="bc")
    assert entry_hash(one, 1, GENESIS) != entry_hash(other, 1, GENESIS)


def test_micros_is_exact() -> None:
    assert micros(AT) == AT_MS * 1000
    assert micros(datetime.fromtimestamp(AT_MS / 1000, tz=UTC)) == AT_MS * 1000


class Partition:
    """decide + apply for one partition, as the writer runs them (no I/O)."""

    def __init__(self) -> None:
        self.state = PartitionState(partition=3)

    def decide(self, cmd: Command, undo: UndoLog) -> Decision:
        decision = decide(self.state, cmd, None)
        apply(self.state, decision, undo)
        return decision


def deposit(request_id: str, amount: str = "10") -> MoneyCommand:
    return MoneyCommand("deposit", "ann", "usdt", request_id, amount, "USDT", "funding")


def funded() -> Partition:
    ledger = Partition()
    undo = UndoLog()
    for cmd in (
        CreateCustomer("ann", "c"),
        OpenBalance("ann", "usdt", "USDT", "o1"),
        OpenBalance("ann", "btc", "BTC", "o2"),
    ):
        ledger.decide(cmd, undo)
    return ledger


def test_a_batch_links_its_entries_after_the_head_and_moves_it() -> None:
    ledger = funded()
    cursor = PartitionCursor(3, epoch=1, next_offset=10, outbox_seq=0, published_seq=0)
    undo = UndoLog()
    rows = BatchRows()
    links = {}
    for i, request in enumerate(("d1", "d2", "d3")):
        decision = ledger.decide(deposit(request), undo)
        links.update(rows.add_effects(decision, 3, 10 + i, AT, cursor, undo))
    rows.add_cursor(cursor, 13)
    seqs = [row.chain_seq for row in rows.entries]
    assert seqs == [1, 2, 3]
    assert rows.entries[0].prev_hash == GENESIS
    for before, after in zip(rows.entries, rows.entries[1:], strict=False):
        assert after.prev_hash == before.entry_hash
    assert {row.entry_id: row.entry_hash for row in rows.entries} == {
        k: v.entry_hash for k, v in links.items()
    }
    (cursor_row,) = rows.cursors
    assert (cursor_row.expected_chain_seq, cursor_row.chain_seq) == (0, 3)
    assert cursor_row.chain_hash == rows.entries[-1].entry_hash == cursor.chain_hash


def test_a_failed_batch_takes_the_head_back_and_the_retry_links_the_same() -> None:
    ledger = funded()
    cursor = PartitionCursor(3, 1, 10, 0, 0, chain_seq=41, chain_hash=b"\x07" * 32)
    undo = UndoLog()
    first = BatchRows()
    first.add_effects(ledger.decide(deposit("d1"), undo), 3, 10, AT, cursor, undo)
    assert (cursor.chain_seq, first.entries[0].prev_hash) == (42, b"\x07" * 32)
    undo.rollback()  # Postgres refused the batch: memory returns to what it holds
    assert (cursor.chain_seq, cursor.chain_hash) == (41, b"\x07" * 32)
    again = BatchRows()
    again.add_effects(ledger.decide(deposit("d1"), UndoLog()), 3, 10, AT, cursor, None)
    assert again.entries == first.entries
    again.add_cursor(cursor, 11)
    assert again.cursors[0].expected_chain_seq == 41


def test_entries_without_a_cursor_are_unchained() -> None:
    ledger = funded()
    rows = BatchRows()
    assert rows.add_effects(ledger.decide(deposit("d1"), UndoLog()), 3, 10, AT) == {}
    assert rows.entries[0][-3:] == (None, None, None)


def chained_facts(ledger: Partition, commands: list[Command]) -> tuple[BatchRows, list[bytes]]:
    cursor = PartitionCursor(3, 1, 0, 0, 0)
    rows = BatchRows()
    payloads = []
    for offset, cmd in enumerate(commands):
        decision = ledger.decide(cmd, UndoLog())
        links = rows.add_effects(decision, 3, offset, AT, cursor)
        payloads += [f.payload for f in facts_for(decision, 3, AT_MS, links)]
    return rows, payloads


def test_a_consumer_recomputes_each_entry_hash_from_its_fact() -> None:
    ledger = funded()
    rows, payloads = chained_facts(
        ledger,
        [
            deposit("d1", "100"),
            ExchangeReserve("ann", "x1", "usdt", "btc", "60", "USDT", "BTC", "USDT -> BTC"),
            ExchangeSettle("ann", "x1", "order-1", "BTC", "0.00119", "0.00000007", "0", "0"),
            deposit("d2", "5"),
        ],
    )
    entry_facts = [orjson.loads(p) for p in payloads if b'"entry_hash"' in p]
    assert [f["type"] for f in entry_facts] == ["entry.posted", "exchange.settled", "entry.posted"]
    previous = GENESIS.hex()
    for fact, row in zip(entry_facts, rows.entries, strict=True):
        jsonschema.validate(fact, SCHEMA)
        entry = chain_entry_of_fact(fact)
        assert entry is not None
        assert fact["chain_seq"] == row.chain_seq
        assert fact["prev_hash"] == previous
        assert (
            entry_hash(entry, fact["chain_seq"], bytes.fromhex(fact["prev_hash"])).hex()
            == (fact["entry_hash"])
        )
        previous = fact["entry_hash"]


def test_a_fact_and_a_link_computed_apart_agree() -> None:
    link = link_after(0, GENESIS, ENTRY)
    assert (link.seq, link.prev_hash, link.entry_hash) == (
        1,
        GENESIS,
        entry_hash(ENTRY, 1, GENESIS),
    )


def test_the_difference_names_the_altered_posting() -> None:
    altered = ENTRY._replace(
        postings=[ENTRY.postings[0], ChainPosting(ACCOUNT_A, 2, -1050, 951, "USD")]
    )
    text = describe_difference(ENTRY, altered)
    assert f"posting of account {ACCOUNT_A} seq 2: balance_after 950 -> 951" in text
    assert describe_difference(ENTRY, ENTRY) == ""


def entry_facts() -> list[bytes]:
    _, payloads = chained_facts(
        funded(), [deposit("d1", "100"), deposit("d2", "5"), deposit("d3", "1")]
    )
    return [p for p in payloads if b'"entry_hash"' in p]


def test_a_consumer_links_the_facts_it_receives_and_passes_duplicates() -> None:
    follower = ChainFollower()
    first, second, third = entry_facts()
    links = [follower.offer_payload(p) for p in (first, second, second, first, third)]
    assert [c.link if c else None for c in links] == [
        Link.LINKED,
        Link.LINKED,
        Link.DUPLICATE,
        Link.DUPLICATE,
        Link.LINKED,
    ]
    assert follower.intact and follower.heads[3][0] == 3


def test_a_consumer_waits_at_a_gap_and_links_once_the_missing_fact_arrives() -> None:
    follower = ChainFollower()
    first, second, third = entry_facts()
    follower.offer_payload(first)
    check = follower.offer_payload(third)
    assert check is not None and check.link is Link.GAP
    assert [c.link for c in map(follower.offer_payload, (second, third)) if c] == [
        Link.LINKED,
        Link.LINKED,
    ]
    assert follower.intact


def test_a_consumer_restarted_mid_chain_anchors_on_the_first_fact() -> None:
    follower = ChainFollower()
    _, second, third = entry_facts()
    assert [c.link for c in map(follower.offer_payload, (second, third)) if c] == [
        Link.ANCHORED,
        Link.LINKED,
    ]


def test_a_consumer_finds_an_altered_fact_and_a_broken_link() -> None:
    first, second, _ = entry_facts()
    altered = orjson.loads(second)
    altered["postings"][1]["amount"] = "-5.000001"
    follower = ChainFollower()
    follower.offer_payload(first)
    check = follower.offer(altered)
    assert check is not None and check.link is Link.BROKEN and check.chain_seq == 2
    assert "is not the fact's" in check.reason
    assert not follower.intact

    # A fact rehashed consistently after an alteration still does not link to its predecessor.
    forged = orjson.loads(second)
    forged["prev_hash"] = "ab" * 32
    entry = chain_entry_of_fact(forged)
    assert entry is not None
    forged["entry_hash"] = entry_hash(entry, 2, bytes.fromhex(forged["prev_hash"])).hex()
    follower = ChainFollower()
    follower.offer_payload(first)
    check = follower.offer(forged)
    assert check is not None and check.link is Link.BROKEN
    assert check.reason == "prev_hash is not the previous entry's hash"


def test_facts_without_an_entry_are_not_the_chains() -> None:
    follower = ChainFollower()
    reserve = ExchangeReserve("ann", "x1", "usdt", "btc", "1", "USDT", "BTC", "to BTC")
    _, payloads = chained_facts(funded(), [deposit("d1", "1"), reserve])
    others = [p for p in payloads if b'"entry_hash"' not in p]
    assert others and all(follower.offer_payload(p) is None for p in others)
    assert follower.offer(orjson.loads(others[0])) is None
