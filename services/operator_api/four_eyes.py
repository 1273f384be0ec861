"""Four eyes on money moved by hand, the pure part: which amounts wait for a second key, the
requests of the reversal and adjustment routes, and how an adjustment is shown.

A deposit, withdrawal or reversal whose amount is at or above its currency's threshold is not
sent to the ledger: it is kept as a pending adjustment until another operator key approves it
(:mod:`operator_api.adjustment_routes`). Thresholds come from
``WALLET_OPERATOR_FOUR_EYES_THRESHOLDS`` (``USD=1000.00,BTC=0.1``); a currency not listed uses
``WALLET_OPERATOR_FOUR_EYES_DEFAULT`` (``0``: every amount; empty: none). Both are empty by
default (see ``docs/operator-api.md`` for why).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Final, Literal

import orjson
from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from ledger_core.commands import MoneyCommand, Reversal, ReversalKind
from ledger_core.currencies import EXPONENTS
from ledger_core.money import AmountError, format_amount, parse_amount, parse_amount_or_zero
from ledger_core.requests import RequestError, check_comment, check_request_id
from operator_api.ledger_requests import parse_object
from operator_api.ledger_views import rfc3339
from wallet_platform.config import ENV_PREFIX, CommonSettings

AdjustmentKind = Literal["deposit", "withdrawal", "reversal"]
STATUSES: Final = ("pending", "approved", "rejected", "failed")
DEFAULT_LIST: Final = 100
MAX_LIST: Final = 1000


@dataclass(frozen=True, slots=True)
class FourEyesPolicy:
    """Which amounts need a second key: per currency (minor units), else ``default`` (a decimal
    amount, compared in any currency; None: no other currency needs one)."""

    thresholds: Mapping[str, int]
    default: Decimal | None = None

    def needs_approval(self, currency: str, amount: int) -> bool:
        """Whether ``amount`` (minor units of ``currency``) waits for a second key."""
        threshold = self.thresholds.get(currency)
        if threshold is not None:
            return amount >= threshold
        if self.default is None:
            return False
        # Exact: the amount as a decimal in its currency against the default.
        return Decimal(amount).scaleb(-EXPONENTS[currency]) >= self.default


def parse_policy(thresholds: str, default: str) -> FourEyesPolicy:
    """``CODE=AMOUNT,...`` and a default amount (empty: none); :class:`ValueError` naming what
    is wrong. An amount must be valid in its currency; ``0`` means every amount."""
    per_currency: dict[str, int] = {}
    for item in (part.strip() for part in thresholds.split(",")):
        if not item:
            continue
        code, sep, amount = (x.strip() for x in item.partition("="))
        if not sep or code not in EXPONENTS:
            raise ValueError(f"{item!r} is not CODE=AMOUNT with a supported currency code")
        if code in per_currency:
            raise ValueError(f"{code} is given twice")
        try:
            per_currency[code] = parse_amount_or_zero(amount, code)
        except AmountError as exc:
            raise ValueError(f"{item!r}: {exc.message}") from None
    fallback: Decimal | None = None
    if default.strip():
        try:
            fallback = Decimal(default.strip())
        except InvalidOperation:
            raise ValueError(f"{default!r} is not a decimal amount") from None
        if not fallback.is_finite() or fallback < 0:
            raise ValueError(f"{default!r} is not an amount of zero or more")
    return FourEyesPolicy(per_currency, fallback)


class FourEyesSettings(CommonSettings):
    """``WALLET_OPERATOR_FOUR_EYES_THRESHOLDS`` and ``WALLET_OPERATOR_FOUR_EYES_DEFAULT``,
    checked at start-up."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    operator_four_eyes_thresholds: str = Field(
        default="",
        description="Per currency, the amount at or above which a deposit, withdrawal or "
        "reversal waits for a second operator key (CODE=AMOUNT, comma separated).",
    )
    operator_four_eyes_default: str = Field(
        default="",
        description="The threshold of a currency not listed: 0 means every amount, empty none.",
    )

    @model_validator(mode="after")
    def _policy_parses(self) -> FourEyesSettings:
        try:
            self.four_eyes()
        except ValueError as exc:
            raise ValueError(f"WALLET_OPERATOR_FOUR_EYES_*: {exc}") from None
        return self

    def four_eyes(self) -> FourEyesPolicy:
        """The policy these settings describe."""
        return parse_policy(self.operator_four_eyes_thresholds, self.operator_four_eyes_default)


@dataclass(frozen=True, slots=True)
class ReversalRequest:
    """``POST /v1/entries/{entryId}/reversal`` as asked."""

    entry_id: uuid.UUID
    request_id: str  # the operator's requestId; the entry id when none was given
    comment: str


def parse_entry_id(text: str) -> uuid.UUID:
    """An entry id from a path (``invalid_id`` unless a UUID)."""
    try:
        return uuid.UUID(text)
    except ValueError:
        raise RequestError("invalid_id", "entryId must be a UUID") from None


def reversal_request(entry_id: str, body: bytes) -> ReversalRequest:
    """``{requestId?, comment}``: the comment says why (required). Without a ``requestId`` the
    entry id is the request id, so a retry with the same comment replays the reversal."""
    entry = parse_entry_id(entry_id)
    data = parse_object(body, frozenset({"requestId", "comment"}))
    if not isinstance(data.get("comment"), str) or not data["comment"]:
        raise RequestError("invalid_field", "comment is required, a non-empty string saying why")
    comment = check_comment(data["comment"])
    if "requestId" in data:
        if not isinstance(data["requestId"], str):
            raise RequestError("invalid_field", "requestId must be a string")
        request_id = check_request_id(data["requestId"])
    else:
        request_id = str(entry)
    return ReversalRequest(entry, request_id, comment)


def reject_reason(body: bytes) -> str:
    """``{reason}`` of a rejection (required text)."""
    data = parse_object(body, frozenset({"reason"}))
    if not isinstance(data.get("reason"), str) or not data["reason"]:
        raise RequestError("invalid_field", "reason is required, a non-empty string")
    return check_comment(data["reason"])


def approve_body(body: bytes) -> None:
    """An approval asks nothing: an empty body or ``{}``."""
    if body.strip():
        parse_object(body, frozenset())


def parse_adjustment_id(text: str) -> uuid.UUID:
    """An adjustment id from a path (``invalid_id`` unless a UUID)."""
    try:
        return uuid.UUID(text)
    except ValueError:
        raise RequestError("invalid_id", "adjustmentId must be a UUID") from None


@dataclass(frozen=True, slots=True)
class ListQuery:
    """``GET /v1/adjustments``: by status (all when None), oldest first, after ``after``."""

    status: str | None = None
    after: uuid.UUID | None = None
    limit: int = DEFAULT_LIST


def list_query(query: Mapping[str, Sequence[str]]) -> ListQuery:
    """``?status=&afterId=&limit=``, each at most once; nothing else."""
    unknown = sorted(set(query) - {"status", "afterId", "limit"})
    if unknown:
        raise RequestError("invalid_field", f"unexpected query parameter(s): {', '.join(unknown)}")
    if any(len(values) > 1 for values in query.values()):
        raise RequestError("invalid_field", "each query parameter may be given once")
    status = query.get("status", [None])[0]
    if status is not None and status not in STATUSES:
        raise RequestError("invalid_field", f"status must be one of {', '.join(STATUSES)}")
    after = query.get("afterId", [None])[0]
    limit = query.get("limit", [None])[0]
    if limit is not None and not (
        limit.isascii() and limit.isdigit() and len(limit) <= 4 and 1 <= int(limit) <= MAX_LIST
    ):
        raise RequestError("invalid_field", f"limit must be a whole number from 1 to {MAX_LIST}")
    return ListQuery(
        status=status,
        after=None if after is None else parse_adjustment_id(after),
        limit=DEFAULT_LIST if limit is None else int(limit),
    )


@dataclass(frozen=True, slots=True)
class Adjustment:
    """One row of ``pending_adjustments`` (migration 0008)."""

    adjustment_id: uuid.UUID
    kind: str
    customer_id: str
    balance_id: str
    request_id: str
    amount: str
    currency: str
    comment: str
    reverses: uuid.UUID | None
    maker: uuid.UUID
    status: str
    checker: uuid.UUID | None
    reason: str | None
    outcome_status: int | None
    outcome_body: bytes | None
    created_at: datetime
    decided_at: datetime | None
    completed_at: datetime | None

    def same_request(self, amount: str, comment: str, reverses: uuid.UUID | None) -> bool:
        """Whether a request under this adjustment's key asks the same (amount by value)."""
        return (
            parse_amount(self.amount, self.currency) == parse_amount(amount, self.currency)
            and self.comment == comment
            and self.reverses == reverses
        )

    def money_command(self) -> MoneyCommand:
        """The deposit or withdrawal to send on approval, with the maker's requestId."""
        assert self.kind in ("deposit", "withdrawal")
        return MoneyCommand(
            "deposit" if self.kind == "deposit" else "withdrawal",
            self.customer_id,
            self.balance_id,
            self.request_id,
            self.amount,
            self.currency,
            self.comment,
        )

    def reversal_command(self, kind: ReversalKind) -> Reversal:
        """The reversal to send on approval (``kind`` from the original entry)."""
        assert self.reverses is not None
        return Reversal(
            kind,
            self.customer_id,
            self.balance_id,
            str(self.reverses),
            self.amount,
            self.currency,
            self.comment,
            self.request_id,
        )


def _time(at: datetime | None) -> str | None:
    return None if at is None else rfc3339(at)


def adjustment_view(adj: Adjustment) -> dict[str, Any]:
    """How the API shows an adjustment; ``outcome`` is the ledger's answer once approved."""
    outcome = None
    if adj.outcome_status is not None and adj.outcome_body is not None:
        outcome = {"status": adj.outcome_status, "body": orjson.loads(adj.outcome_body)}
    return {
        "adjustmentId": str(adj.adjustment_id),
        "kind": adj.kind,
        "status": adj.status,
        "customerId": adj.customer_id,
        "balanceId": adj.balance_id,
        "requestId": adj.request_id,
        "amount": format_amount(parse_amount(adj.amount, adj.currency), adj.currency),
        "currency": adj.currency,
        "comment": adj.comment,
        "reverses": None if adj.reverses is None else str(adj.reverses),
        "maker": str(adj.maker),
        "checker": None if adj.checker is None else str(adj.checker),
        "reason": adj.reason,
        "createdAt": rfc3339(adj.created_at),
        "decidedAt": _time(adj.decided_at),
        "completedAt": _time(adj.completed_at),
        "outcome": outcome,
    }
