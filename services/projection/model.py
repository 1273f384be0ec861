"""The read model: balances and customers as the facts describe them (pure; no I/O).

Facts carry each balance's sequence number and absolute balance-after, so applying a fact twice,
or an older fact after a newer one, changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import orjson

from ledger_core.money import format_amount, to_minor


@dataclass(slots=True)
class BalanceRow:
    currency: str
    amount: int
    seq: int


@dataclass(slots=True)
class ReadModel:
    balances: dict[tuple[str, str], BalanceRow] = field(default_factory=dict)
    customers: dict[str, bool] = field(default_factory=dict)  # customer id -> blocked
    gaps: int = 0  # balance facts that skipped a sequence number (should stay 0)

    def apply(self, payload: bytes) -> tuple[str, tuple[str, str] | None]:
        """Apply one fact; returns (customer changed, balance key changed or None)."""
        fact = orjson.loads(payload)
        kind = fact["type"]
        customer = fact["customer_id"]
        if kind == "customer.created":
            self.customers.setdefault(customer, False)
        elif kind in ("customer.blocked", "customer.unblocked"):
            self.customers[customer] = kind == "customer.blocked"
        elif kind in ("balance.opened", "entry.posted"):
            key = (customer, fact["balance_id"])
            seq = fact["balance_seq"]
            row = self.balances.get(key)
            if row is not None and seq <= row.seq:
                return customer, None  # a duplicate or an older fact: already reflected
            if row is not None and seq != row.seq + 1:
                self.gaps += 1
            currency = fact["currency_code"]
            self.balances[key] = BalanceRow(
                currency, to_minor(fact["balance_after"], currency), seq
            )
            self.customers.setdefault(customer, False)
            return customer, key
        return customer, None

    def balance_body(self, customer_id: str, balance_id: str) -> tuple[str | None, bytes]:
        """(error code or None, body) for Quadcode's GET balance."""
        blocked = self.customers.get(customer_id)
        if blocked is None:
            return "customer_not_found", b""
        if blocked:
            return "customer_blocked", b""
        row = self.balances.get((customer_id, balance_id))
        if row is None:
            return "balance_not_found", b""
        return None, orjson.dumps(
            {
                "customer_id": customer_id,
                "balance_id": balance_id,
                "amount": format_amount(row.amount, row.currency),
                "currency_code": row.currency,
            }
        )
