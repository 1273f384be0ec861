"""The operator API's ledger requests: bodies and query strings, checked before any I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import orjson
import pytest

from ledger_core.commands import CreateCustomer, MoneyCommand, OpenBalance, SetBlocked
from ledger_core.requests import RequestError
from operator_api.ledger_requests import (
    MAX_PAGE,
    ByOrder,
    ByRequest,
    StatementQuery,
    create_customer,
    entries_query,
    money_request,
    open_balance,
    parse_time,
    set_blocked,
    statement_query,
    time_query,
)

pytestmark = pytest.mark.unit


def body(**fields: object) -> bytes:
    return orjson.dumps(fields)


def code_of(call: object) -> str:
    with pytest.raises(RequestError) as caught:
        call()  # type: ignore[operator]
    return caught.value.code


def test_a_customer_created_without_request_id_uses_its_id_so_a_retry_replays() -> None:
    assert create_customer(body(customerId="cust-1")) == CreateCustomer("cust-1", "cust-1")
    assert create_customer(body(customerId="cust-1", requestId="r 1")) == CreateCustomer(
        "cust-1", "r 1"
    )


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"{", "malformed_json"),
        (b"[]", "malformed_json"),
        (body(), "invalid_field"),
        (body(customerId="a/b"), "invalid_id"),
        (body(customerId=7), "invalid_field"),
        (body(customerId="c", requestID="misspelt"), "invalid_field"),
        (body(customerId="c", requestId=""), "invalid_id"),
        (body(customerId="c", requestId="a\x00b"), "invalid_id"),
    ],
)
def test_a_bad_customer_creation_is_refused(raw: bytes, code: str) -> None:
    assert code_of(lambda: create_customer(raw)) == code


def test_opening_a_balance_needs_a_known_currency_and_a_request_id() -> None:
    assert open_balance("c", body(balanceId="c_USD", currency="USD", requestId="r")) == (
        OpenBalance("c", "c_USD", "USD", "r")
    )
    assert code_of(lambda: open_balance("c", body(balanceId="b", currency="XXX", requestId="r")))
    assert (
        code_of(lambda: open_balance("c", body(balanceId="b", currency="XYZ", requestId="r")))
        == "unknown_currency"
    )
    assert code_of(lambda: open_balance("c", body(balanceId="b", currency="USD"))) == (
        "invalid_field"
    )
    assert code_of(lambda: open_balance("..", body(balanceId="b", currency="USD", requestId="r")))


def test_block_and_unblock_carry_the_request_id() -> None:
    assert set_blocked("c", body(requestId="r"), blocked=True) == SetBlocked("c", True, "r")
    assert code_of(lambda: set_blocked("c", b"{}", blocked=False)) == "invalid_field"


def test_a_deposit_takes_the_balance_currency_and_checks_the_amount_in_it() -> None:
    asked = money_request("deposit", "c", "c_USD", body(requestId="r", amount="10.5"))
    assert asked.command("USD") == MoneyCommand(
        "deposit", "c", "c_USD", "r", "10.5", "USD", "operator deposit"
    )
    assert code_of(lambda: asked.command("JPY")) == "invalid_amount"  # JPY has no decimals
    huge = money_request("withdrawal", "c", "b", body(requestId="r", amount="1" + "0" * 15))
    assert code_of(lambda: huge.command("USD")) == "amount_too_large"


@pytest.mark.parametrize(
    "fields",
    [
        {"amount": "1.00"},
        {"requestId": "r"},
        {"requestId": "r", "amount": 1},
        {"requestId": "r", "amount": "1", "comment": "\x1b[31m"},
        {"requestId": "r", "amount": "1", "currency": "USD"},
    ],
)
def test_a_bad_deposit_body_is_refused(fields: dict[str, object]) -> None:
    assert code_of(lambda: money_request("deposit", "c", "b", orjson.dumps(fields)))


def test_rfc3339_times_need_an_offset_and_a_plus_sent_unencoded_still_counts() -> None:
    plus_one = timezone(timedelta(hours=1))
    assert parse_time("2026-11-22T01:56:15Z", "t") == datetime(2026, 11, 22, 1, 56, 15, tzinfo=UTC)
    assert parse_time("2026-11-22t01:56:15.1234567z", "t") == datetime(
        2026, 11, 22, 1, 56, 15, 123456, tzinfo=UTC
    )
    assert parse_time("2026-11-22T02:56:15+01:00", "t") == datetime(
        2026, 11, 22, 2, 56, 15, tzinfo=plus_one
    )
    # "+01:00" in a query string arrives as " 01:00" (form encoding).
    assert parse_time("2026-11-22T02:56:15 01:00", "t") == parse_time("2026-11-22T01:56:15Z", "t")


@pytest.mark.parametrize(
    "text",
    ["2026-11-22T01:56:15", "2026-11-22", "2026-02-30T00:00:00Z", "yesterday", "1700000000"],
)
def test_a_time_that_is_not_rfc3339_with_an_offset_is_refused(text: str) -> None:
    assert code_of(lambda: parse_time(text, "time")) == "invalid_field"


def test_a_statement_query_defaults_to_the_first_json_page_of_100() -> None:
    assert statement_query({}) == StatementQuery()
    checked = statement_query(
        {
            "afterSeq": ["40"],
            "limit": [str(MAX_PAGE)],
            "from": ["2026-01-01T00:00:00Z"],
            "to": ["2026-02-01T00:00:00Z"],
            "format": ["csv"],
        }
    )
    assert (checked.after_seq, checked.limit, checked.format) == (40, MAX_PAGE, "csv")
    assert checked.start == datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    "query",
    [
        {"limit": ["0"]},
        {"limit": [str(MAX_PAGE + 1)]},
        {"limit": ["+5"]},
        {"limit": ["５"]},  # a fullwidth digit: int() would take it
        {"afterSeq": ["-1"]},
        {"afterSeq": ["9223372036854775808"]},
        {"afterSeq": ["1", "2"]},
        {"offset": ["10"]},
        {"format": ["xml"]},
        {"from": ["2026-02-01T00:00:00Z"], "to": ["2026-01-01T00:00:00Z"]},
    ],
)
def test_a_bad_statement_query_is_refused(query: dict[str, list[str]]) -> None:
    assert code_of(lambda: statement_query(query)) == "invalid_field"


def test_balance_at_a_time_needs_the_time() -> None:
    assert time_query({"time": ["2026-01-01T00:00:00Z"]}) == datetime(2026, 1, 1, tzinfo=UTC)
    assert code_of(lambda: time_query({})) == "invalid_field"
    assert code_of(lambda: time_query({"time": ["now"]})) == "invalid_field"


def test_entries_are_found_by_customer_and_request_id_or_by_order_id() -> None:
    assert entries_query({"customerId": ["c"], "requestId": ["r 1"]}) == ByRequest("c", "r 1")
    assert entries_query({"orderId": ["dc99"]}) == ByOrder("dc99")
    assert code_of(lambda: entries_query({"requestId": ["r"]})) == "invalid_field"
    assert code_of(lambda: entries_query({"orderId": ["o"], "customerId": ["c"]}))
    assert code_of(lambda: entries_query({})) == "invalid_field"
    assert code_of(lambda: entries_query({"customerId": ["a/b"], "requestId": ["r"]})) == (
        "invalid_id"
    )
