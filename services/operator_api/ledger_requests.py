"""The operator API's ledger requests, checked before anything is read or sent (pure; no I/O).

Bodies and query strings become commands (:mod:`ledger_core.commands`) or read queries; every
refusal is a :class:`~ledger_core.requests.RequestError` with a 400 code of the one error table.
Ids in the path obey :func:`~ledger_core.requests.check_id`; a ``requestId`` travels in a body or a
query string, never a path, so it obeys the rules of text
(:func:`~ledger_core.requests.check_request_id`), as on the callbacks.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal

import orjson

from ledger_core.commands import CreateCustomer, MoneyCommand, OpenBalance, SetBlocked
from ledger_core.currencies import EXPONENTS
from ledger_core.money import AmountError, parse_amount
from ledger_core.requests import RequestError, check_comment, check_id, check_request_id

DEFAULT_PAGE: Final = 100
MAX_PAGE: Final = 1000
# Postgres bigint: a posting's seq is one, so no cursor may exceed it.
MAX_SEQ: Final = 2**63 - 1

Format = Literal["json", "csv"]
DepositOrWithdrawal = Literal["deposit", "withdrawal"]


def parse_object(body: bytes, allowed: frozenset[str]) -> dict[str, Any]:
    """The body as a JSON object holding only ``allowed`` fields (``malformed_json``,
    ``invalid_field``): an unknown field is refused rather than ignored, so a misspelt one
    (``requestID``) can not silently change what is asked."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise RequestError("malformed_json", "the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise RequestError("malformed_json", "the body must be a JSON object")
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise RequestError("invalid_field", f"unexpected field(s): {', '.join(unknown)}")
    return data


def _required(data: Mapping[str, Any], name: str) -> Any:
    if name not in data:
        raise RequestError("invalid_field", f"{name} is required")
    return data[name]


def _text(data: Mapping[str, Any], name: str) -> str:
    value = _required(data, name)
    if not isinstance(value, str):
        raise RequestError("invalid_field", f"{name} must be a string")
    return value


def _request_id(data: Mapping[str, Any]) -> str:
    _text(data, "requestId")  # required, and a string: "requestId is required" names it
    return check_request_id(data["requestId"])


def create_customer(body: bytes) -> CreateCustomer:
    """``{customerId, requestId?}``. Without a ``requestId`` the customer id is the request id,
    so a retry of the same creation replays its stored outcome instead of answering 409."""
    data = parse_object(body, frozenset({"customerId", "requestId"}))
    customer_id = check_id(_required(data, "customerId"), "customerId")
    request_id = _request_id(data) if "requestId" in data else customer_id
    return CreateCustomer(customer_id, request_id)


def open_balance(customer_id: str, body: bytes) -> OpenBalance:
    """``{balanceId, currency, requestId}`` for the customer in the path."""
    check_id(customer_id, "customerId")
    data = parse_object(body, frozenset({"balanceId", "currency", "requestId"}))
    balance_id = check_id(_required(data, "balanceId"), "balanceId")
    currency = _text(data, "currency")
    if currency not in EXPONENTS:
        raise RequestError("unknown_currency", f"currency {currency!r} is not supported")
    return OpenBalance(customer_id, balance_id, currency, _request_id(data))


def set_blocked(customer_id: str, body: bytes, *, blocked: bool) -> SetBlocked:
    """``{requestId}`` for a block or an unblock of the customer in the path."""
    check_id(customer_id, "customerId")
    data = parse_object(body, frozenset({"requestId"}))
    return SetBlocked(customer_id, blocked, _request_id(data))


@dataclass(frozen=True, slots=True)
class MoneyRequest:
    """A deposit or withdrawal as asked, before the balance's currency is known: the body does
    not name it (the balance has exactly one), so the routes read it and then build the command."""

    kind: DepositOrWithdrawal
    customer_id: str
    balance_id: str
    request_id: str
    amount: str
    comment: str

    def command(self, currency: str) -> MoneyCommand:
        """The command in the balance's currency; the amount must fit it (``invalid_amount``,
        ``amount_too_large``), checked here so nothing malformed reaches the ledger."""
        try:
            parse_amount(self.amount, currency)
        except AmountError as exc:
            raise RequestError(exc.code, exc.message) from None
        return MoneyCommand(
            self.kind,
            self.customer_id,
            self.balance_id,
            self.request_id,
            self.amount,
            currency,
            self.comment,
        )


def money_request(
    kind: DepositOrWithdrawal, customer_id: str, balance_id: str, body: bytes
) -> MoneyRequest:
    """``{requestId, amount, comment?}``; the comment defaults to "operator deposit" (or
    withdrawal), a constant, so a retry without one is the same request."""
    check_id(customer_id, "customerId")
    check_id(balance_id, "balanceId")
    data = parse_object(body, frozenset({"requestId", "amount", "comment"}))
    request_id = _request_id(data)
    amount = _text(data, "amount")
    comment = check_comment(_text(data, "comment")) if "comment" in data else f"operator {kind}"
    return MoneyRequest(kind, customer_id, balance_id, request_id, amount, comment)


# RFC 3339 date-time: a date, "T" (or a space, which RFC 3339 allows), a time with optional
# fraction and a mandatory offset. A "+" written unencoded in a query string arrives as a space
# (form encoding), so " 01:00" at the end is read as "+01:00": it can mean nothing else.
_RFC3339 = re.compile(
    r"(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?([Zz]|[+\- ]\d{2}:\d{2})"
)


def parse_time(text: str, name: str) -> datetime:
    """An RFC 3339 date-time with its offset (``2026-11-22T01:56:15Z``, ``...+01:00``); a time
    without an offset is ambiguous and refused (``invalid_field``). Fractions beyond
    microseconds (Postgres' resolution) are cut, not rounded."""
    match = _RFC3339.fullmatch(text)
    if match is None:
        raise RequestError(
            "invalid_field",
            f"{name} must be an RFC 3339 date-time with offset, e.g. 2026-11-22T01:56:15Z",
        )
    day, clock, fraction, offset = match.groups()
    offset = "+00:00" if offset in ("Z", "z") else offset.replace(" ", "+")
    micro = f".{fraction[:6].ljust(6, '0')}" if fraction else ""
    try:
        return datetime.fromisoformat(f"{day}T{clock}{micro}{offset}")
    except ValueError:  # 2026-02-30, 25:00:00, an offset of +24:00
        raise RequestError("invalid_field", f"{name} is not a valid date-time") from None


def _single(query: Mapping[str, Sequence[str]], name: str) -> str | None:
    values = query.get(name, ())
    if len(values) > 1:
        # Which one would win differs between proxies and frameworks: refuse rather than guess.
        raise RequestError("invalid_field", f"{name} may be given once")
    return values[0] if values else None


def _only(query: Mapping[str, Sequence[str]], allowed: frozenset[str]) -> None:
    unknown = sorted(set(query) - allowed)
    if unknown:
        raise RequestError("invalid_field", f"unexpected query parameter(s): {', '.join(unknown)}")


def _whole(text: str, name: str, low: int, high: int) -> int:
    # ASCII digits only: int() would also take "+5", " 5", "5_0" and Unicode digits.
    if not (text.isascii() and text.isdigit()) or len(text) > 19 or not low <= int(text) <= high:
        raise RequestError("invalid_field", f"{name} must be a whole number from {low} to {high}")
    return int(text)


@dataclass(frozen=True, slots=True)
class StatementQuery:
    """One page of a statement: postings after ``after_seq`` (the keyset cursor), at most
    ``limit``, of entries from ``start`` (inclusive) to ``end`` (exclusive)."""

    after_seq: int = 0
    limit: int = DEFAULT_PAGE
    start: datetime | None = None
    end: datetime | None = None
    format: Format = "json"


def statement_query(query: Mapping[str, Sequence[str]]) -> StatementQuery:
    """``afterSeq``, ``limit`` (1 to 1000, default 100), ``from``, ``to`` (RFC 3339) and
    ``format`` (``json`` or ``csv``), each at most once; nothing else."""
    _only(query, frozenset({"afterSeq", "limit", "from", "to", "format"}))
    after = _single(query, "afterSeq")
    limit = _single(query, "limit")
    start = _single(query, "from")
    end = _single(query, "to")
    shape = _single(query, "format") or "json"
    if shape not in ("json", "csv"):
        raise RequestError("invalid_field", "format must be json or csv")
    checked = StatementQuery(
        after_seq=0 if after is None else _whole(after, "afterSeq", 0, MAX_SEQ),
        limit=DEFAULT_PAGE if limit is None else _whole(limit, "limit", 1, MAX_PAGE),
        start=None if start is None else parse_time(start, "from"),
        end=None if end is None else parse_time(end, "to"),
        format="csv" if shape == "csv" else "json",
    )
    if checked.start is not None and checked.end is not None and checked.end < checked.start:
        raise RequestError("invalid_field", "to must not be before from")
    return checked


def time_query(query: Mapping[str, Sequence[str]]) -> datetime:
    """``?time=`` of the balance-at-a-time route (required, RFC 3339)."""
    _only(query, frozenset({"time"}))
    text = _single(query, "time")
    if text is None:
        raise RequestError("invalid_field", "time is required")
    return parse_time(text, "time")


@dataclass(frozen=True, slots=True)
class ByRequest:
    """Entries a customer's request made (a request id is unique only per customer)."""

    customer_id: str
    request_id: str


@dataclass(frozen=True, slots=True)
class ByOrder:
    """Entries of an exchange's order at Swapgate."""

    order_id: str


def entries_query(query: Mapping[str, Sequence[str]]) -> ByRequest | ByOrder:
    """``?customerId=&requestId=`` (both) or ``?orderId=`` (alone)."""
    _only(query, frozenset({"customerId", "requestId", "orderId"}))
    customer = _single(query, "customerId")
    request = _single(query, "requestId")
    order = _single(query, "orderId")
    if order is not None:
        if customer is not None or request is not None:
            raise RequestError("invalid_field", "orderId is not combined with other parameters")
        return ByOrder(check_request_id_named(order, "orderId"))
    if customer is None or request is None:
        raise RequestError("invalid_field", "give customerId and requestId, or orderId")
    return ByRequest(check_id(customer, "customerId"), check_request_id(request))


def check_request_id_named(value: str, name: str) -> str:
    """An order id is Swapgate's text (a UUID today): held to the rules of a request id."""
    try:
        return check_request_id(value)
    except RequestError as exc:
        raise RequestError(exc.code, exc.message.replace("request_id", name)) from None
