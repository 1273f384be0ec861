"""Validation of Quadcode's debit/credit bodies into commands, without I/O."""

from __future__ import annotations

import orjson
import pytest

from ledger_core.commands import Envelope, MoneyCommand, decode, encode, fingerprint
from ledger_core.requests import RequestError, parse_callback

pytestmark = pytest.mark.unit


def body(**fields: object) -> bytes:
    base: dict[str, object] = {
        "request_id": "r1",
        "amount": "1.50",
        "currency_code": "USD",
        "comment": "c",
    }
    base.update(fields)
    return orjson.dumps({k: v for k, v in base.items() if v is not None})


def test_valid_body_becomes_a_command() -> None:
    cmd = parse_callback("debit", "cust", "bal", body())
    assert cmd == MoneyCommand("debit", "cust", "bal", "r1", "1.50", "USD", "c")


def test_unknown_extra_fields_are_ignored() -> None:
    assert parse_callback("credit", "c", "b", body(extra=1)).amount == "1.50"


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"", "malformed_json"),
        (b"null", "malformed_json"),
        (b'"text"', "malformed_json"),
        (body(request_id=None), "invalid_field"),
        (body(comment=None), "invalid_field"),
        (body(amount=1.5), "invalid_field"),
        (body(currency_code=840), "invalid_field"),
        (body(request_id="x" * 129), "invalid_id"),
        (body(request_id="a\nb"), "invalid_id"),
        (body(comment="x" * 1025), "invalid_field"),
        (body(amount="1.501"), "invalid_amount"),
        (body(currency_code="usd"), "unknown_currency"),
    ],
)
def test_bad_bodies_are_refused_with_their_code(raw: bytes, code: str) -> None:
    with pytest.raises(RequestError) as info:
        parse_callback("debit", "c", "b", raw)
    assert info.value.code == code


@pytest.mark.parametrize(("customer", "balance"), [("", "b"), ("c", ""), ("c" * 129, "b")])
def test_bad_path_ids_are_refused(customer: str, balance: str) -> None:
    with pytest.raises(RequestError) as info:
        parse_callback("debit", customer, balance, body())
    assert info.value.code == "invalid_id"


def test_commands_survive_the_wire() -> None:
    cmd = parse_callback("debit", "cust", "bal", body(comment="ünïcode ✓"))
    decoded, envelope = decode(encode(cmd, Envelope("cid", 3)))
    assert decoded == cmd and envelope == Envelope("cid", 3)


def test_fingerprint_compares_amounts_by_value() -> None:
    a = parse_callback("debit", "c", "b", body(amount="1.5"))
    b = parse_callback("debit", "c", "b", body(amount="1.50"))
    c = parse_callback("debit", "c", "b", body(amount="1.51"))
    assert fingerprint(a) == fingerprint(b) != fingerprint(c)


def test_fingerprint_of_an_invalid_amount_does_not_raise() -> None:
    bad = MoneyCommand("debit", "c", "b", "r", "1.001", "USD", "x")
    good = MoneyCommand("debit", "c", "b", "r", "1.00", "USD", "x")
    assert fingerprint(bad) != fingerprint(good)
