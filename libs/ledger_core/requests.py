"""Quadcode's debit/credit request bodies, validated into commands (pure; no I/O).

Checks everything the request alone can tell: JSON shape, field types, id lengths, the currency
and the amount's format and precision. What needs the ledger (does the balance exist, is it in
this currency, are there funds) is decided by the ledger.
"""

from __future__ import annotations

import string
import unicodedata
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


# The characters an id may hold: RFC 3986's unreserved characters and the sub-delimiters that a
# URL path segment carries literally, plus ":" and "@". So an id means the same raw and
# percent-encoded, in every client, proxy and log. Left out: "/" and "\" (path separators), "?",
# "#" and "%" (they end or re-encode a path), ";" (path parameters, which some servers strip),
# whitespace, what a URL must always encode (" < > [ ] { } | ^ `), every non-ASCII character
# (look-alikes, normalisation, bidi controls) and every control character (Postgres text can not
# hold NUL; terminals obey escapes).
ID_CHARACTERS = frozenset(string.ascii_letters + string.digits + "-._~!$&'()*+,=:@")
# "." and ".." are path segments of their own: a URL holding one is rewritten by normalisation.
_DOT_SEGMENTS = frozenset({".", ".."})


def check_id(value: object, name: str) -> str:
    """An id must be 1 to 128 characters of :data:`ID_CHARACTERS`, and not "." or ".."."""
    if not isinstance(value, str):
        raise RequestError("invalid_field", f"{name} must be a string")
    if (
        not value
        or len(value) > MAX_ID_LENGTH
        or not ID_CHARACTERS.issuperset(value)
        or value in _DOT_SEGMENTS
    ):
        raise RequestError(
            "invalid_id",
            f"{name} must be 1 to {MAX_ID_LENGTH} characters among letters, digits"
            " and -._~!$&'()*+,=:@ (and not '.' or '..')",
        )
    return value


# Unicode categories a comment may not hold: Cc (controls: NUL, ESC, ...), Cf (format: bidi
# overrides and isolates, zero-width characters), Cs (lone surrogates, not UTF-8), Co (private
# use), Cn (unassigned) and Zl, Zp (U+2028 and U+2029, line breaks to a terminal and to JSON in
# JavaScript). Spaces of every width (Zs) are text and stay.
_NOT_TEXT = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def check_comment(value: str) -> str:
    """A comment is at most 1024 characters of printable text; anything a Postgres ``text``
    column or a terminal would mishandle is refused (``invalid_field``)."""
    if len(value) > MAX_COMMENT_LENGTH:
        raise RequestError(
            "invalid_field", f"comment must be at most {MAX_COMMENT_LENGTH} characters"
        )
    # isprintable() is False exactly for the categories above and Zs other than " ": the common
    # case costs one C-speed scan, the rare one a look at each character.
    if not value.isprintable() and any(unicodedata.category(c) in _NOT_TEXT for c in value):
        raise RequestError(
            "invalid_field", "comment may hold no control, format or unassigned characters"
        )
    return value


def check_request_id(value: object) -> str:
    """A request id travels only in the JSON body, never in a URL, so it is held to the rules of
    text rather than those of a path segment (Quadcode gives it no pattern; refusing, say, a space
    in it would refuse a trade): 1 to 128 characters, none of them control, format or
    unassigned characters (``invalid_id``)."""
    if not isinstance(value, str):
        raise RequestError("invalid_field", "request_id must be a string")
    if (
        not value
        or len(value) > MAX_ID_LENGTH
        or (not value.isprintable() and any(unicodedata.category(c) in _NOT_TEXT for c in value))
    ):
        raise RequestError(
            "invalid_id",
            f"request_id must be 1 to {MAX_ID_LENGTH} characters of text (no control, format or"
            " unassigned characters)",
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
    request_id = check_request_id(data["request_id"])
    comment = check_comment(data["comment"])
    currency: str = data["currency_code"]
    amount: str = data["amount"]
    try:
        parse_amount(amount, currency)
    except AmountError as exc:
        raise RequestError(exc.code, exc.message) from None
    return MoneyCommand(kind, customer_id, balance_id, request_id, amount, currency, comment)
