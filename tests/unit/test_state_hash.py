"""The state hash's canonical encoding (docs/replay.md), without a database."""

from __future__ import annotations

import hashlib
import uuid

import pytest

from ledger.state_hash import (
    HEADER,
    SECTIONS,
    StateHasher,
    canonical,
    encode_record,
    entry_row_records,
)

pytestmark = pytest.mark.unit

ENTRY = uuid.UUID("00000000-0000-5000-8000-000000000001")
OTHER_ENTRY = uuid.UUID("00000000-0000-5000-8000-000000000002")


def test_a_record_is_compact_json_with_hex_bytes_and_uuid_text() -> None:
    record = encode_record(["c-1", 3, True, None, b"\x00\xff", ENTRY, "123456789012345678901234"])

    assert record == (
        b'["c-1",3,true,null,"00ff","00000000-0000-5000-8000-000000000001",'
        b'"123456789012345678901234"]\n'
    )


def test_a_newline_in_text_can_not_forge_a_record_boundary() -> None:
    # One record holding a newline and a fake second record, against two real records.
    forged = encode_record(['a"]\n["b'])
    honest = encode_record(["a"]) + encode_record(["b"])

    assert forged.count(b"\n") == 1
    assert forged != honest


def test_a_value_without_a_canonical_form_is_refused() -> None:
    # A float has several spellings of one value; the ledger has none, so none may sneak in.
    with pytest.raises(TypeError):
        canonical(1.5)


def test_the_hash_is_sha256_over_the_documented_bytes() -> None:
    hasher = StateHasher()
    hasher.section("customers")
    hasher.record(("c-1", 0, False))
    hasher.section("accounts")

    expected = hashlib.sha256(HEADER + b'#customers\n["c-1",0,false]\n#accounts\n').hexdigest()
    assert hasher.hexdigest() == expected
    assert hasher.counts == {"customers": 1, "accounts": 0}


def test_a_record_in_another_section_changes_the_hash() -> None:
    first, second = StateHasher(), StateHasher()
    first.section("customers")
    first.record(("c-1", 0, False))
    first.section("accounts")
    second.section("customers")
    second.section("accounts")
    second.record(("c-1", 0, False))

    assert first.hexdigest() != second.hexdigest()


def test_a_posting_follows_its_entry_and_the_entry_is_written_once() -> None:
    entry = (0, 5, ENTRY, "debit", "c-1", "c-1_USD", "r-1", "USD", "100", "", None)
    first = (*entry, "customer", "c-1", "c-1_USD", "USD", 0, 2, "-100", "900")
    second = (*entry, "trading", None, None, "USD", 0, 1, "100", "100")

    records = entry_row_records(first, None) + entry_row_records(second, ENTRY)

    assert records == [
        ("entry", *entry),
        ("posting", "customer", "c-1", "c-1_USD", "USD", 0, 2, "-100", "900"),
        ("posting", "trading", None, None, "USD", 0, 1, "100", "100"),
    ]


def test_an_entry_without_postings_is_still_hashed() -> None:
    entry = (0, 6, OTHER_ENTRY, "credit", "c-1", "c-1_USD", "r-2", "USD", "1", "", None)
    no_posting = (*entry, None, None, None, None, None, None, None, None)

    assert entry_row_records(no_posting, ENTRY) == [("entry", *entry)]


def test_every_section_orders_its_rows_in_byte_order() -> None:
    # The databases' collations may differ; the hash may not depend on them.
    for name, sql in SECTIONS:
        order_by = sql.rsplit("ORDER BY", 1)[1]
        text_keys = [
            k for k in ("customer_id", "scope", "request_id", "exchange_id") if k in order_by
        ]
        for key in text_keys:
            assert f'{key} COLLATE "C"' in order_by, (name, key)
