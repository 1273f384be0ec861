"""Facts: what the ledger publishes on ``ledger.events`` for every change it makes.

The schema is versioned and documented in ``docs/events/ledger-event-v1.schema.json``. Every fact
has a deterministic ``event_id`` (the same command always yields the same ids, so a republish
after a crash is harmless) and balance facts carry the balance's sequence number, so consumers can
drop duplicates and detect gaps. Facts are keyed by customer id, like commands: a customer's
facts are in one partition, in order.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from ledger_core.decide import BlockChange, Decision, JournalEntry, NewAccount, NewCustomer
from ledger_core.money import format_amount
from ledger_core.state import stable_id

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


def facts_for(decision: Decision, partition: int, occurred_at_ms: int) -> list[Fact]:
    """The facts a decision's effects produce, in order."""
    out: list[Fact] = []
    occurred_at = iso_time(occurred_at_ms)
    for effect in decision.effects:
        body: dict[str, Any]
        if isinstance(effect, JournalEntry):
            customer_posting = effect.postings[0]
            event_id = stable_id("fact", "entry.posted", str(effect.entry_id))
            body = {
                "type": "entry.posted",
                "customer_id": effect.customer_id,
                "balance_id": effect.balance_id,
                "balance_seq": customer_posting.seq,
                "entry_id": str(effect.entry_id),
                "kind": effect.kind,
                "request_id": effect.request_id,
                "amount": format_amount(effect.amount, effect.currency),
                "currency_code": effect.currency,
                "balance_after": format_amount(customer_posting.balance_after, effect.currency),
                "comment": effect.comment,
                "postings": [
                    {
                        "account_id": str(p.account_id),
                        "amount": format_amount(p.amount, effect.currency),
                        "seq": p.seq,
                        "balance_after": format_amount(p.balance_after, effect.currency),
                    }
                    for p in effect.postings
                ],
            }
        elif isinstance(effect, NewAccount):
            event_id = stable_id("fact", "balance.opened", str(effect.account_id))
            body = {
                "type": "balance.opened",
                "customer_id": effect.customer_id,
                "balance_id": effect.balance_id,
                "balance_seq": 0,
                "account_id": str(effect.account_id),
                "currency_code": effect.currency,
                "balance_after": format_amount(0, effect.currency),
            }
        elif isinstance(effect, NewCustomer):
            event_id = stable_id("fact", "customer.created", effect.customer_id)
            body = {"type": "customer.created", "customer_id": effect.customer_id}
        else:
            assert isinstance(effect, BlockChange)
            kind = "customer.blocked" if effect.blocked else "customer.unblocked"
            # Blocks can repeat (block, unblock, block): each command's request_id tells them apart.
            event_id = stable_id("fact", kind, effect.customer_id, effect.request_id)
            body = {"type": kind, "customer_id": effect.customer_id}
        payload = {
            "schema": SCHEMA,
            "event_id": str(event_id),
            "occurred_at": occurred_at,
            "partition": partition,
            **body,
        }
        out.append(Fact(str(event_id), body["customer_id"], orjson.dumps(payload)))
    return out
