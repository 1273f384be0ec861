"""Commands: the requests the ledger applies, and their wire form on ``ledger.commands``.

Every command carries a ``request_id`` and has an idempotency key
``(customer_id, scope, request_id)``: the scope is the operation plus the balance it targets
(``debit:<balance_id>``). The customer is in the key because the customer is the partition key,
so a writer can answer "seen before?" from its own partition's data alone.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from ledger_core.money import parse_amount

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


Command = MoneyCommand | CreateCustomer | OpenBalance | SetBlocked


def idempotency_key(cmd: Command) -> tuple[str, str, str]:
    """The key under which the command's outcome is stored."""
    return (cmd.customer_id, cmd.scope, cmd.request_id)


def fingerprint(cmd: Command) -> bytes:
    """A digest of what the command asks for; equal requests have equal fingerprints.

    Amounts are compared by value in minor units, so "10.5" and "10.50" are the same request.
    """
    if isinstance(cmd, MoneyCommand):
        parts: list[Any] = [
            cmd.kind,
            cmd.customer_id,
            cmd.balance_id,
            str(parse_amount(cmd.amount, cmd.currency)),
            cmd.currency,
            cmd.comment,
        ]
    elif isinstance(cmd, CreateCustomer):
        parts = ["create_customer", cmd.customer_id]
    elif isinstance(cmd, OpenBalance):
        parts = ["open_balance", cmd.customer_id, cmd.balance_id, cmd.currency]
    else:
        parts = ["set_blocked", cmd.customer_id, cmd.blocked]
    return hashlib.blake2b(orjson.dumps(parts), digest_size=16).digest()


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
    else:
        body.update(
            type="set_blocked",
            customer_id=cmd.customer_id,
            blocked=cmd.blocked,
            request_id=cmd.request_id,
        )
    return orjson.dumps(body)


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
    else:
        raise CommandError(f"unknown command type {kind!r}")
    return cmd, envelope
