"""Four eyes, the pure part: which amounts wait for a second key, the settings that say so, the
reversal and adjustment requests, and how an adjustment is shown (no I/O)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from ledger_core.requests import RequestError
from operator_api.four_eyes import (
    Adjustment,
    FourEyesSettings,
    adjustment_view,
    approve_body,
    list_query,
    parse_policy,
    reject_reason,
    reversal_request,
)

pytestmark = pytest.mark.unit


def test_an_amount_at_or_above_its_currencys_threshold_needs_a_second_key() -> None:
    policy = parse_policy("USD=1000.00, BTC=0.1", "")
    assert policy.needs_approval("USD", 100_000)  # 1000.00: at the threshold
    assert not policy.needs_approval("USD", 99_999)
    assert policy.needs_approval("BTC", 10_000_000)
    assert not policy.needs_approval("BTC", 9_999_999)
    assert not policy.needs_approval("EUR", 10**15)  # not listed, no default: never


def test_the_default_covers_unlisted_currencies_and_zero_means_every_amount() -> None:
    assert parse_policy("", "0").needs_approval("EUR", 1)
    policy = parse_policy("USD=0", "500")
    assert policy.needs_approval("USD", 1)
    assert policy.needs_approval("JPY", 500) and not policy.needs_approval("JPY", 499)
    assert policy.needs_approval("EUR", 50_000) and not policy.needs_approval("EUR", 49_999)


@pytest.mark.parametrize(
    ("thresholds", "default"),
    [
        ("USD", ""),
        ("XXX=1", ""),
        ("USD=1.001", ""),  # more decimals than the currency has
        ("USD=-1", ""),
        ("USD=1,USD=2", ""),
        ("", "ten"),
        ("", "-1"),
        ("", "NaN"),
    ],
)
def test_a_bad_threshold_stops_start_up_naming_the_setting(thresholds: str, default: str) -> None:
    with pytest.raises(ValidationError, match="WALLET_OPERATOR_FOUR_EYES_"):
        FourEyesSettings(
            operator_four_eyes_thresholds=thresholds, operator_four_eyes_default=default
        )


def test_four_eyes_is_off_by_default() -> None:
    policy = FourEyesSettings().four_eyes()
    assert not policy.needs_approval("USD", 10**17)


def test_a_reversal_without_request_id_uses_the_entry_id_and_needs_a_comment() -> None:
    entry = uuid.uuid4()
    asked = reversal_request(str(entry), b'{"comment": "wrong customer"}')
    assert (asked.entry_id, asked.request_id, asked.comment) == (
        entry,
        str(entry),
        "wrong customer",
    )
    assert reversal_request(str(entry), b'{"comment":"x","requestId":"r-1"}').request_id == "r-1"
    for body in (b"{}", b'{"comment": ""}', b'{"comment": "x", "amount": "1"}'):
        with pytest.raises(RequestError) as refused:
            reversal_request(str(entry), body)
        assert refused.value.code == "invalid_field"
    with pytest.raises(RequestError) as refused:
        reversal_request("not-a-uuid", b'{"comment": "x"}')
    assert refused.value.code == "invalid_id"


def test_a_rejection_needs_a_reason_and_an_approval_asks_nothing() -> None:
    assert reject_reason(b'{"reason": "duplicate"}') == "duplicate"
    for body in (b"{}", b'{"reason": ""}', b'{"reason": 1}'):
        with pytest.raises(RequestError):
            reject_reason(body)
    approve_body(b"")
    approve_body(b"{}")
    with pytest.raises(RequestError):
        approve_body(b'{"amount": "1"}')


def test_the_list_query_takes_a_status_a_cursor_and_a_limit() -> None:
    after = uuid.uuid4()
    query = list_query({"status": ["pending"], "afterId": [str(after)], "limit": ["5"]})
    assert (query.status, query.after, query.limit) == ("pending", after, 5)
    assert list_query({}).status is None
    for bad in ({"status": ["done"]}, {"limit": ["0"]}, {"limit": ["1001"]}, {"x": ["1"]}):
        with pytest.raises(RequestError):
            list_query(bad)
    with pytest.raises(RequestError):
        list_query({"status": ["pending", "failed"]})


def test_an_adjustment_is_shown_with_its_amount_in_the_currencys_format() -> None:
    maker = uuid.uuid4()
    at = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
    adj = Adjustment(
        uuid.uuid4(), "deposit", "ann", "ann_USD", "r-1", "1500", "USD", "funding", None, maker,
        "approved", uuid.uuid4(), None, 201, b'{"amount":"1500.00"}', at, at, at,
    )  # fmt: skip
    view = adjustment_view(adj)
    assert (view["amount"], view["maker"], view["status"]) == ("1500.00", str(maker), "approved")
    assert view["outcome"] == {"status": 201, "body": {"amount": "1500.00"}}
    assert adj.same_request("1500.00", "funding", None)
    assert not adj.same_request("1500.01", "funding", None)
    assert adj.money_command().request_id == "r-1"
