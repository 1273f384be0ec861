"""The read model: balances and customers as the facts describe them (pure; no I/O).

Facts carry each balance's sequence number and absolute balance-after, so applying a fact twice,
or an older fact after a newer one, changes nothing. Exchange facts also carry the balance's hold
sequence number and absolute reserved-after: the amount held by open exchanges is tracked the same
way, on its own counter. Quadcode's GET balance answers the available amount (total - reserved).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import orjson

from ledger_core.money import format_amount, to_minor


@dataclass(slots=True)
class BalanceRow:
    currency: str
    amount: int  # the total balance
    seq: int
    reserved: int = 0  # held by open exchanges
    hold_seq: int = 0

    @property
    def available(self) -> int:
        return self.amount - self.reserved


EXCHANGE_FACTS = frozenset({"exchange.reserved", "exchange.settled", "exchange.voided"})


@dataclass(slots=True)
class ReadModel:
    balances: dict[tuple[str, str], BalanceRow] = field(default_factory=dict)
    customers: dict[str, bool] = field(default_factory=dict)  # customer id -> blocked
    gaps: int = 0  # balance facts that skipped a sequence number (should stay 0)

    def apply(self, payload: bytes) -> tuple[str, tuple[tuple[str, str], ...]]:
        """Apply one fact; returns (customer changed, balance keys changed)."""
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
                return customer, ()  # a duplicate or an older fact: already reflected
            if row is not None and seq != row.seq + 1:
                self.gaps += 1
            currency = fact["currency_code"]
            amount = to_minor(fact["balance_after"], currency)
            if row is None:
                self.balances[key] = BalanceRow(currency, amount, seq)
            else:
                row.amount, row.seq = amount, seq
            self.customers.setdefault(customer, False)
            return customer, (key,)
        elif kind in EXCHANGE_FACTS:
            return customer, tuple(self._exchange_balances(customer, fact["balances"]))
        return customer, ()

    def _exchange_balances(
        self, customer: str, balances: list[dict[str, object]]
    ) -> list[tuple[str, str]]:
        """Total and reserved amounts of the balances an exchange step changed, each only if the
        fact is newer than what the row reflects (by ``balance_seq`` and ``hold_seq``)."""
        changed = []
        for item in balances:
            balance_id, currency = item["balance_id"], item["currency_code"]
            seq, hold_seq = item["balance_seq"], item["hold_seq"]
            if not isinstance(balance_id, str) or not isinstance(currency, str):
                raise TypeError("balance_id and currency_code must be strings")
            if not isinstance(seq, int) or not isinstance(hold_seq, int):
                raise TypeError("balance_seq and hold_seq must be integers")
            key = (customer, balance_id)
            row = self.balances.get(key)
            if row is None:
                row = self.balances[key] = BalanceRow(currency, 0, 0)
            moved = False
            if seq > row.seq:
                if seq != row.seq + 1:
                    self.gaps += 1
                row.amount, row.seq = to_minor(str(item["balance_after"]), currency), seq
                moved = True
            if hold_seq > row.hold_seq:
                if hold_seq != row.hold_seq + 1:
                    self.gaps += 1
                row.reserved = to_minor(str(item["reserved_after"]), currency)
                row.hold_seq = hold_seq
                moved = True
            if moved:
                changed.append(key)
        self.customers.setdefault(customer, False)
        return changed

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
                # The available amount: what a debit may spend (exchanges' holds excluded).
                "amount": format_amount(row.available, row.currency),
                "currency_code": row.currency,
            }
        )
