"""Commands: the requests the ledger applies, and their wire form on ``ledger.commands``.

Every command carries a ``request_id`` and has an idempotency key
``(customer_id, scope, request_id)``: the scope is the operation plus the balance it targets
(``debit:<balance_id>``). The customer is in the key because the customer is the partition key,
so a writer can answer "seen before?" from its own partition's data alone.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from ledger_core.money import AmountError, parse_amount, parse_amount_or_zero

MoneyKind = Literal["debit", "credit", "deposit", "withdrawal"]
MONEY_KINDS: frozenset[str] = frozenset({"debit", "credit", "deposit", "withdrawal"})
MAX_ID_LENGTH = 128
MAX_COMMENT_LENGTH = 1024

WIRE_VERSION = 1


class CommandError(ValueError):
    """A command that can not be decoded; it goes to the dead-letter topic."""


@dataclass(frozen=True, slots=True)
class Envelope:
    """Transport fields around a command: who waits for the answer, and where."""

    command_id: str  # correlation id of this delivery attempt (one per HTTP request)
    reply_to: int  # partition of ledger.replies the waiting process reads; -1 for none


@dataclass(frozen=True, slots=True)
class MoneyCommand:
    """Move money between a customer's balance and a system account."""

    kind: MoneyKind
    customer_id: str
    balance_id: str
    request_id: str
    amount: str  # validated decimal string, as the caller sent it
    currency: str
    comment: str

    @property
    def scope(self) -> str:
        return f"{self.kind}:{self.balance_id}"


@dataclass(frozen=True, slots=True)
class CreateCustomer:
    customer_id: str
    request_id: str

    scope = "create_customer"


@dataclass(frozen=True, slots=True)
class OpenBalance:
    customer_id: str
    balance_id: str
    currency: str
    request_id: str

    @property
    def scope(self) -> str:
        return f"open_balance:{self.balance_id}"


@dataclass(frozen=True, slots=True)
class SetBlocked:
    customer_id: str
    blocked: bool
    request_id: str

    @property
    def scope(self) -> str:
        return "block" if self.blocked else "unblock"


@dataclass(frozen=True, slots=True)
class ExchangeReserve:
    """Hold ``amount`` of the source balance for an exchange into the target balance.

    The exchange id is the request id: one reservation per exchange, ever. The source balance's
    available amount drops at once; its total balance moves only when the exchange settles.
    """

    customer_id: str
    exchange_id: str
    source_balance_id: str
    target_balance_id: str
    amount: str  # source currency, validated decimal string
    currency: str  # the source balance's currency
    target_currency: str  # the target balance's currency
    comment: str  # the order's details (instruments, markup, quote), for people

    scope = "exchange_reserve"

    @property
    def request_id(self) -> str:
        return self.exchange_id


@dataclass(frozen=True, slots=True)
class ExchangeSettle:
    """Post a reserved exchange: source -> clearing, clearing -> target, margins, rounding.

    Amounts are in the target currency, exact in its minor units (zero allowed): what the
    customer is paid, the markup revenue, the affiliate margin and the rounding remainder.
    """

    customer_id: str
    exchange_id: str
    order_id: str
    target_currency: str
    paid: str
    markup_revenue: str
    affiliate_margin: str
    rounding: str

    scope = "exchange_settle"

    @property
    def request_id(self) -> str:
        return self.exchange_id


@dataclass(frozen=True, slots=True)
class ExchangeVoid:
    """Release a reserved exchange: nothing else moves."""

    customer_id: str
    exchange_id: str
    order_id: str  # empty when no order was created
    reason: str

    scope = "exchange_void"

    @property
    def request_id(self) -> str:
        return self.exchange_id


ReversalKind = Literal["deposit_reversal", "withdrawal_reversal"]
# The entry kinds a reversal can reverse, and the kind of the reversing entry.
REVERSAL_OF: dict[str, ReversalKind] = {
    "deposit": "deposit_reversal",
    "withdrawal": "withdrawal_reversal",
}
REVERSAL_SCOPE_PREFIX = "reversal:"


@dataclass(frozen=True, slots=True)
class Reversal:
    """Reverse a customer's deposit or withdrawal: the same amount moved back, as a new entry.

    The original entry's id is the request id, in one scope for every reversal of the balance
    (``reversal:<balance_id>``), so the idempotency key ``(customer, scope, entry id)`` admits
    one reversal per entry, ever, and the reversal's entry finds the original by its
    ``request_id``. ``reference`` is the operator's own request id: it is part of the
    fingerprint, so a retry of the same request replays the stored outcome while a second
    reversal of the entry (another reference or comment) is ``request_id_reused``.
    """

    kind: ReversalKind
    customer_id: str
    balance_id: str
    entry_id: str  # the original entry's id (its text form): the request id
    amount: str  # the original's amount, validated decimal string
    currency: str
    comment: str
    reference: str  # the operator's requestId

    wire_type = "reversal"

    @property
    def scope(self) -> str:
        return REVERSAL_SCOPE_PREFIX + self.balance_id

    @property
    def request_id(self) -> str:
        return self.entry_id


ExchangeCommand = ExchangeReserve | ExchangeSettle | ExchangeVoid
Command = MoneyCommand | CreateCustomer | OpenBalance | SetBlocked | ExchangeCommand | Reversal


def idempotency_key(cmd: Command) -> tuple[str, str, str]:
    """The key under which the command's outcome is stored."""
    return (cmd.customer_id, cmd.scope, cmd.request_id)


def fingerprint(cmd: Command) -> bytes:
    """A digest of what the command asks for; equal requests have equal fingerprints.

    Amounts are compared by value in minor units, so "10.5" and "10.50" are the same request.
    """
    if isinstance(cmd, MoneyCommand):
        try:
            amount = str(parse_amount(cmd.amount, cmd.currency))
        except AmountError:
            amount = "raw:" + cmd.amount  # never equal to a valid amount's fingerprint
        parts: list[Any] = [
            cmd.kind,
            cmd.customer_id,
            cmd.balance_id,
            amount,
            cmd.currency,
            cmd.comment,
        ]
    elif isinstance(cmd, CreateCustomer):
        parts = ["create_customer", cmd.customer_id]
    elif isinstance(cmd, OpenBalance):
        parts = ["open_balance", cmd.customer_id, cmd.balance_id, cmd.currency]
    elif isinstance(cmd, SetBlocked):
        parts = ["set_blocked", cmd.customer_id, cmd.blocked]
    elif isinstance(cmd, ExchangeReserve):
        parts = [
            "exchange_reserve",
            cmd.customer_id,
            cmd.exchange_id,
            cmd.source_balance_id,
            cmd.target_balance_id,
            _value(cmd.amount, cmd.currency),
            cmd.currency,
            cmd.target_currency,
            cmd.comment,
        ]
    elif isinstance(cmd, Reversal):
        parts = [
            "reversal",
            cmd.kind,
            cmd.customer_id,
            cmd.balance_id,
            cmd.entry_id,
            _value(cmd.amount, cmd.currency),
            cmd.currency,
            cmd.comment,
            cmd.reference,
        ]
    elif isinstance(cmd, ExchangeSettle):
        parts = [
            "exchange_settle",
            cmd.customer_id,
            cmd.exchange_id,
            cmd.order_id,
            cmd.target_currency,
            *(
                _value(a, cmd.target_currency, zero=True)
                for a in (cmd.paid, cmd.markup_revenue, cmd.affiliate_margin, cmd.rounding)
            ),
        ]
    else:
        parts = ["exchange_void", cmd.customer_id, cmd.exchange_id, cmd.order_id, cmd.reason]
    return hashlib.blake2b(orjson.dumps(parts), digest_size=16).digest()


def _value(amount: str, currency: str, *, zero: bool = False) -> str:
    """An amount by value for a fingerprint ("10.5" is "10.50"); the text itself if invalid
    (such a command is refused with a 400 and never stored)."""
    try:
        minor = parse_amount_or_zero(amount, currency) if zero else parse_amount(amount, currency)
    except ValueError:
        return "invalid:" + amount
    return str(minor)


def encode(cmd: Command, envelope: Envelope) -> bytes:
    """The command as JSON bytes for ``ledger.commands``."""
    body: dict[str, Any] = {
        "v": WIRE_VERSION,
        "command_id": envelope.command_id,
        "reply_to": envelope.reply_to,
    }
    if isinstance(cmd, MoneyCommand):
        body.update(
            type=cmd.kind,
            customer_id=cmd.customer_id,
            balance_id=cmd.balance_id,
            request_id=cmd.request_id,
            amount=cmd.amount,
            currency=cmd.currency,
            comment=cmd.comment,
        )
    elif isinstance(cmd, CreateCustomer):
        body.update(type="create_customer", customer_id=cmd.customer_id, request_id=cmd.request_id)
    elif isinstance(cmd, OpenBalance):
        body.update(
            type="open_balance",
            customer_id=cmd.customer_id,
            balance_id=cmd.balance_id,
            currency=cmd.currency,
            request_id=cmd.request_id,
        )
    elif isinstance(cmd, SetBlocked):
        body.update(
            type="set_blocked",
            customer_id=cmd.customer_id,
            blocked=cmd.blocked,
            request_id=cmd.request_id,
        )
    elif isinstance(cmd, Reversal):
        body["type"] = Reversal.wire_type
        body.update((f.name, getattr(cmd, f.name)) for f in dataclasses.fields(cmd))
    else:
        body["type"] = cmd.scope
        body.update((f.name, getattr(cmd, f.name)) for f in dataclasses.fields(cmd))
    return orjson.dumps(body)


# The exchange commands on the wire: "type" is the scope, every field a string.
EXCHANGE_TYPES: dict[str, type[ExchangeReserve] | type[ExchangeSettle] | type[ExchangeVoid]] = {
    ExchangeReserve.scope: ExchangeReserve,
    ExchangeSettle.scope: ExchangeSettle,
    ExchangeVoid.scope: ExchangeVoid,
}


def _text(obj: dict[str, Any], name: str) -> str:
    value = obj.get(name)
    if not isinstance(value, str):
        raise CommandError(f"field {name!r} must be a string")
    return value


def decode(raw: bytes) -> tuple[Command, Envelope]:
    """Parse command bytes; raises :class:`CommandError` for anything malformed."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise CommandError(f"not JSON: {exc}") from None
    if not isinstance(obj, dict) or obj.get("v") != WIRE_VERSION:
        raise CommandError("not a version 1 command object")
    reply_to = obj.get("reply_to")
    if not isinstance(reply_to, int):
        raise CommandError("reply_to must be an integer")
    envelope = Envelope(_text(obj, "command_id"), reply_to)
    kind = obj.get("type")
    cmd: Command
    if kind in MONEY_KINDS:
        cmd = MoneyCommand(
            kind=kind,
            customer_id=_text(obj, "customer_id"),
            balance_id=_text(obj, "balance_id"),
            request_id=_text(obj, "request_id"),
            amount=_text(obj, "amount"),
            currency=_text(obj, "currency"),
            comment=_text(obj, "comment"),
        )
    elif kind == "create_customer":
        cmd = CreateCustomer(_text(obj, "customer_id"), _text(obj, "request_id"))
    elif kind == "open_balance":
        cmd = OpenBalance(
            _text(obj, "customer_id"),
            _text(obj, "balance_id"),
            _text(obj, "currency"),
            _text(obj, "request_id"),
        )
    elif kind == "set_blocked":
        blocked = obj.get("blocked")
        if not isinstance(blocked, bool):
            raise CommandError("blocked must be a boolean")
        cmd = SetBlocked(_text(obj, "customer_id"), blocked, _text(obj, "request_id"))
    elif kind == Reversal.wire_type:
        reversal_kind = obj.get("kind")
        if reversal_kind not in ("deposit_reversal", "withdrawal_reversal"):
            raise CommandError(f"unknown reversal kind {reversal_kind!r}")
        cmd = Reversal(
            reversal_kind,
            *(_text(obj, f.name) for f in dataclasses.fields(Reversal) if f.name != "kind"),
        )
    elif isinstance(kind, str) and kind in EXCHANGE_TYPES:
        cls = EXCHANGE_TYPES[kind]
        cmd = cls(*(_text(obj, f.name) for f in dataclasses.fields(cls)))
    else:
        raise CommandError(f"unknown command type {kind!r}")
    return cmd, envelope
