"""Facts: what the ledger publishes on ``ledger.events`` for every change it makes.

The schema is versioned and documented in ``docs/events/ledger-event-v1.schema.json``. Every fact
has a deterministic ``event_id`` (the same command always yields the same ids, so a republish
after a crash is harmless) and balance facts carry the balance's sequence number, so consumers can
drop duplicates and detect gaps. Facts are keyed by customer id, like commands: a customer's
facts are in one partition, in order.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from ledger_core.chain import ChainLink
from ledger_core.decide import (
    BalanceState,
    BlockChange,
    Decision,
    JournalEntry,
    NewAccount,
    NewCustomer,
    ReservationMade,
    ReservationReleased,
)
from ledger_core.money import format_amount
from ledger_core.state import id_text, stable_id

SCHEMA = "ledger.event/v1"


@dataclass(frozen=True, slots=True)
class Fact:
    """One message for ``ledger.events``: its id, its key and its JSON bytes."""

    event_id: str
    key: str
    payload: bytes


def iso_time(epoch_ms: int) -> str:
    """Milliseconds since the epoch as an ISO-8601 UTC string."""
    return datetime.fromtimestamp(epoch_ms / 1000, tz=UTC).isoformat(timespec="milliseconds")


def facts_for(
    decision: Decision,
    partition: int,
    occurred_at_ms: int,
    chain: Mapping[uuid.UUID, ChainLink] | None = None,
) -> list[Fact]:
    """The facts a decision's effects produce, in order. ``chain``: each entry's place in its
    partition's hash chain (``ledger_core.chain``), carried by the entry's fact."""
    out: list[Fact] = []
    chain = chain or {}
    occurred_at = iso_time(occurred_at_ms)
    for effect in decision.effects:
        body: dict[str, Any]
        if isinstance(effect, JournalEntry):
            customer_posting = effect.postings[0]
            event_id = stable_id("fact", "entry.posted", id_text(effect.entry_id))
            body = {
                "type": "entry.posted",
                "customer_id": effect.customer_id,
                "balance_id": effect.balance_id,
                "balance_seq": customer_posting.seq,
                "entry_id": id_text(effect.entry_id),
                "kind": effect.kind,
                "request_id": effect.request_id,
                "amount": format_amount(effect.amount, effect.currency),
                "currency_code": effect.currency,
                "balance_after": format_amount(customer_posting.balance_after, effect.currency),
                "comment": effect.comment,
                "postings": [
                    {
                        "account_id": id_text(p.account_id),
                        "amount": format_amount(p.amount, effect.currency),
                        "seq": p.seq,
                        "balance_after": format_amount(p.balance_after, effect.currency),
                    }
                    for p in effect.postings
                ],
            }
            _add_link(body, chain.get(effect.entry_id))
        elif isinstance(effect, NewAccount):
            event_id = stable_id("fact", "balance.opened", id_text(effect.account_id))
            body = {
                "type": "balance.opened",
                "customer_id": effect.customer_id,
                "balance_id": effect.balance_id,
                "balance_seq": 0,
                "account_id": id_text(effect.account_id),
                "currency_code": effect.currency,
                "balance_after": format_amount(0, effect.currency),
            }
        elif isinstance(effect, NewCustomer):
            event_id = stable_id("fact", "customer.created", effect.customer_id)
            body = {"type": "customer.created", "customer_id": effect.customer_id}
        elif isinstance(effect, ReservationMade):
            event_id = stable_id(
                "fact", "exchange.reserved", effect.customer_id, effect.exchange_id
            )
            body = {
                "type": "exchange.reserved",
                "customer_id": effect.customer_id,
                "exchange_id": effect.exchange_id,
                "source_balance_id": effect.source_balance_id,
                "target_balance_id": effect.target_balance_id,
                "amount": format_amount(effect.amount, effect.currency),
                "currency_code": effect.currency,
                "target_currency_code": effect.target_currency,
                "comment": effect.comment,
                "balances": [_balance(effect.source)],
            }
        elif isinstance(effect, ReservationReleased):
            event_id, body = _released(effect)
            if effect.entry is not None:
                _add_link(body, chain.get(effect.entry.entry_id))
        else:
            assert isinstance(effect, BlockChange)
            kind = "customer.blocked" if effect.blocked else "customer.unblocked"
            # Blocks can repeat (block, unblock, block): each command's request_id tells them apart.
            event_id = stable_id("fact", kind, effect.customer_id, effect.request_id)
            body = {"type": kind, "customer_id": effect.customer_id}
        event = str(event_id)
        payload = {
            "schema": SCHEMA,
            "event_id": event,
            "occurred_at": occurred_at,
            "partition": partition,
            **body,
        }
        out.append(Fact(event, body["customer_id"], orjson.dumps(payload)))
    return out


def _add_link(body: dict[str, Any], link: ChainLink | None) -> None:
    """An entry fact's place in the chain: a consumer checks the links it receives and can
    recompute ``entry_hash`` from the fact (``docs/tamper-evidence.md``)."""
    if link is not None:
        body["chain_seq"] = link.seq
        body["prev_hash"] = link.prev_hash.hex()
        body["entry_hash"] = link.entry_hash.hex()


def _balance(state: BalanceState) -> dict[str, Any]:
    """A customer balance after an exchange step: both sequence numbers, total and available."""
    return {
        "balance_id": state.balance_id,
        "account_id": id_text(state.account_id),
        "currency_code": state.currency,
        "balance_seq": state.seq,
        "hold_seq": state.holds,
        "balance_after": format_amount(state.balance, state.currency),
        "reserved_after": format_amount(state.reserved, state.currency),
        "available_after": format_amount(state.available, state.currency),
    }


def _released(effect: ReservationReleased) -> tuple[Any, dict[str, Any]]:
    kind = f"exchange.{effect.outcome}"
    event_id = stable_id("fact", kind, effect.customer_id, effect.exchange_id)
    body: dict[str, Any] = {
        "type": kind,
        "customer_id": effect.customer_id,
        "exchange_id": effect.exchange_id,
        "order_id": effect.order_id,
        "source_balance_id": effect.source.balance_id,
        "amount": format_amount(effect.amount, effect.currency),
        "currency_code": effect.currency,
    }
    entry = effect.entry
    if entry is None:
        body["reason"] = effect.reason
        body["balances"] = [_balance(effect.source)]
        return event_id, body
    assert effect.target is not None and entry.exchange is not None
    terms = entry.exchange
    target = terms.target_currency
    body.update(
        entry_id=id_text(entry.entry_id),
        comment=entry.comment,
        target_balance_id=terms.target_balance_id,
        target_currency_code=target,
        paid=format_amount(terms.paid, target),
        markup_revenue=format_amount(terms.markup_revenue, target),
        affiliate_margin=format_amount(terms.affiliate_margin, target),
        rounding=format_amount(terms.rounding, target),
        postings=[
            {
                "account_id": id_text(p.account_id),
                "account": p.system_kind or f"balance:{p.balance_id}",
                "currency_code": p.currency,
                "amount": format_amount(p.amount, p.currency),
                "seq": p.seq,
                "balance_after": format_amount(p.balance_after, p.currency),
            }
            for p in entry.postings
        ],
        balances=[_balance(effect.source), _balance(effect.target)],
    )
    return event_id, body
