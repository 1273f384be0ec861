"""Validation of Quadcode's debit/credit bodies into commands, without I/O."""

from __future__ import annotations

from urllib.parse import quote, unquote

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from yarl import URL

from ledger_core.commands import Envelope, MoneyCommand, decode, encode, fingerprint
from ledger_core.requests import (
    ID_CHARACTERS,
    RequestError,
    check_comment,
    check_id,
    parse_callback,
)

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


# -- ids: what the ledger can store and a URL path can carry -------------------------------------

GOOD_IDS = [
    "12345",  # Quadcode's user ids
    "1234_USD",  # and balance ids
    "demo-1_USD",
    "0b4f2a52-8c1e-4a0e-9f5e-3a1b2c3d4e5f",
    "a-._~!$&'()*+,=:@z",  # every punctuation mark an id may hold
    "...",
    ".hidden",
    "x" * 128,
]

BAD_IDS = [
    "a/b",
    "/",
    "..%2F..%2Fc9",
    "a\\b",
    "a?b",
    "a#b",
    "a%b",
    "a;b",
    ".",
    "..",
    "a b",
    " a",
    "a\tb",
    "a\u00a0b",  # no-break space
    "a\x00b",
    "a\x1b[31mb",
    "a\x7fb",
    "a\u202eb",  # right-to-left override
    "a\u2066b",  # left-to-right isolate
    "a\u200bb",  # zero-width space
    "a\u2028b",
    "a\ud800b",  # a lone surrogate: not UTF-8
    "café",  # non-ASCII: look-alikes and normalisation
    "ｃ９",  # fullwidth
    'a"b',
    "a<b>",
    "a[b]",
    "a{b}",
    "a|b",
    "a^b",
    "a`b",
]


@pytest.mark.parametrize("value", GOOD_IDS)
def test_ids_of_quadcode_shapes_are_accepted(value: str) -> None:
    assert check_id(value, "customer_id") == value
    cmd = parse_callback("debit", value, value, body(request_id=value))
    assert (cmd.customer_id, cmd.balance_id, cmd.request_id) == (value, value, value)


@pytest.mark.parametrize("value", BAD_IDS, ids=ascii)
@pytest.mark.parametrize("where", ["customer_id", "balance_id"])
def test_ids_refuse_separators_url_syntax_whitespace_and_non_text(value: str, where: str) -> None:
    ids = {"customer_id": "c", "balance_id": "b"} | {where: value}
    with pytest.raises(RequestError) as info:
        parse_callback("credit", ids["customer_id"], ids["balance_id"], body(request_id="r"))
    assert info.value.code == "invalid_id"
    # One fixed message per field: the refusal never echoes what it refused.
    with pytest.raises(RequestError) as plain:
        check_id("a/b", where)
    assert info.value.message == plain.value.message


# A request id is never part of a URL: only what is not text is refused.
BAD_REQUEST_IDS = [
    "",
    "r" * 129,
    "a\x00b",
    "a\x1b[31mb",
    "a\x7fb",
    "a\u202eb",
    "a\u2066b",
    "a\u200bb",
    "a\u2028b",
]
GOOD_REQUEST_IDS = ["a b", "a/b", "a?b#c%d", "café", "order 42: open", "r" * 128]


@pytest.mark.parametrize("value", BAD_REQUEST_IDS, ids=ascii)
def test_request_ids_refuse_what_is_not_text(value: str) -> None:
    with pytest.raises(RequestError) as info:
        parse_callback("credit", "c", "b", body(request_id=value))
    assert info.value.code == "invalid_id"
    assert value not in info.value.message or not value


@pytest.mark.parametrize("value", GOOD_REQUEST_IDS)
def test_request_ids_may_hold_any_text(value: str) -> None:
    assert parse_callback("credit", "c", "b", body(request_id=value)).request_id == value


@given(st.text(alphabet=sorted(ID_CHARACTERS), min_size=1, max_size=128))
def test_every_accepted_id_is_one_path_segment_that_survives_the_url(value: str) -> None:
    try:
        check_id(value, "balance_id")
    except RequestError:
        assert value in (".", "..")
        return
    segment = quote(value, safe="")
    path = f"/v1/customers/c/balances/{segment}"
    # How the edge addresses the projection: joined to its base URL, never re-normalised.
    url = URL("http://127.0.0.1:1").join(URL.build(path=path, encoded=True))
    assert url.raw_path == path
    assert url.raw_parts[-1] == segment and unquote(segment) == value
    assert url.parts == ("/", "v1", "customers", "c", "balances", value)


# -- comments: text Postgres and a terminal can take ---------------------------------------------


@pytest.mark.parametrize(
    "comment",
    ["", "option opened", "ünïcode ✓", "10\u00a0€", "日本語のコメント", "🎉", "tab-free; ok?"],
)
def test_comments_of_printable_text_are_accepted(comment: str) -> None:
    assert parse_callback("credit", "c", "b", body(comment=comment)).comment == comment


@pytest.mark.parametrize(
    "comment",
    [
        "a\u0000b",  # NUL: Postgres text can not hold it
        "\x1b[2J\x1b[31mPAID",  # ANSI escapes: clear the screen, red
        "a\nb",
        "a\rb",
        "a\tb",
        "\x7f",
        "\x85",  # next line (C1)
        "\u202eevil",  # right-to-left override
        "\u2067x",  # right-to-left isolate
        "a\u200db",  # zero-width joiner
        "\ufeff",  # byte order mark
        "a\u2028b",  # line separator
        "a\u2029b",  # paragraph separator
        "\ue000",  # private use
        "\u0378",  # unassigned
        "\U000e0041",  # tag character
    ],
    ids=ascii,
)
def test_comments_with_control_or_format_characters_are_refused(comment: str) -> None:
    with pytest.raises(RequestError) as info:
        parse_callback("credit", "c", "b", body(comment=comment))
    assert info.value.code == "invalid_field"
    assert comment not in info.value.message


def test_a_lone_surrogate_in_a_comment_is_refused() -> None:
    # JSON can not carry one to us (orjson refuses the body), but other callers of the check can.
    with pytest.raises(RequestError) as info:
        check_comment("a\ud800b")
    assert info.value.code == "invalid_field"
    with pytest.raises(RequestError) as info:
        parse_callback(
            "credit",
            "c",
            "b",
            b'{"request_id":"r","amount":"1","currency_code":"USD","comment":"a\\ud800b"}',
        )
    assert info.value.code == "malformed_json"
