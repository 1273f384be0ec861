"""Quadcode's debit/credit request bodies, validated into commands (pure; no I/O).

Checks everything the request alone can tell: JSON shape, field types, id lengths, the currency
and the amount's format and precision. What needs the ledger (does the balance exist, is it in
this currency, are there funds) is decided by the ledger.
"""

from __future__ import annotations

from typing import Literal

import orjson

from ledger_core.commands import MAX_COMMENT_LENGTH, MAX_ID_LENGTH, MoneyCommand
from ledger_core.money import AmountError, parse_amount


class RequestError(ValueError):
    """A malformed request; ``code`` is its error code (all are 400s)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def check_id(value: object, name: str) -> str:
    """An id must be a non-empty string of at most 128 characters without control characters."""
    if not isinstance(value, str):
        raise RequestError("invalid_field", f"{name} must be a string")
    if not value or len(value) > MAX_ID_LENGTH or not value.isprintable():
        raise RequestError(
            "invalid_id", f"{name} must be 1 to {MAX_ID_LENGTH} printable characters"
        )
    return value


def parse_callback(
    kind: Literal["debit", "credit"], customer_id: str, balance_id: str, body: bytes
) -> MoneyCommand:
    """Validate a debit or credit callback into a command, or raise :class:`RequestError`."""
    check_id(customer_id, "customer_id")
    check_id(balance_id, "balance_id")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise RequestError("malformed_json", "the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise RequestError("malformed_json", "the body must be a JSON object")
    for name in ("request_id", "amount", "currency_code", "comment"):
        if name not in data:
            raise RequestError("invalid_field", f"{name} is required")
        if not isinstance(data[name], str):
            raise RequestError("invalid_field", f"{name} must be a string")
    request_id = check_id(data["request_id"], "request_id")
    comment: str = data["comment"]
    if len(comment) > MAX_COMMENT_LENGTH:
        raise RequestError(
            "invalid_field", f"comment must be at most {MAX_COMMENT_LENGTH} characters"
        )
    currency: str = data["currency_code"]
    amount: str = data["amount"]
    try:
        parse_amount(amount, currency)
    except AmountError as exc:
        raise RequestError(exc.code, exc.message) from None
    return MoneyCommand(kind, customer_id, balance_id, request_id, amount, currency, comment)
