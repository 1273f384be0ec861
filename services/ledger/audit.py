"""The ledger's audit: invariants that must hold after any run, crash or replay.

``python -m ledger.audit`` prints each check and exits non-zero if any fails. Tests and the
benchmark call :func:`audit` directly. Exchanges are covered: entries balance per currency,
available amounts (balance minus open reservations) are never negative, and every reservation
matches its stored outcomes and entry.
"""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass

import asyncpg

# Entries of one customer posting and one system posting (a reversal is one too).
MONEY_KINDS = (
    "('debit', 'credit', 'deposit', 'withdrawal', 'deposit_reversal', 'withdrawal_reversal')"
)

# The last balance of every customer account and what open exchanges hold on it.
_CUSTOMER_BALANCES = """
    SELECT a.account_id, a.customer_id, a.balance_id, coalesce(l.balance_after, 0) AS amount,
           coalesce(h.held, 0) AS reserved
      FROM accounts a
      LEFT JOIN LATERAL (SELECT balance_after FROM postings p
                          WHERE p.account_id = a.account_id
                          ORDER BY seq DESC LIMIT 1) l ON true
      LEFT JOIN (SELECT source_account, sum(amount) AS held FROM exchange_reservations
                  WHERE status = 'open' GROUP BY source_account) h
             ON h.source_account = a.account_id
     WHERE a.kind = 'customer'"""

CHECKS: dict[str, str] = {
    # Per entry and currency: an exchange entry's postings span two currencies.
    "entries_balance": """
        SELECT count(*) FROM (SELECT p.entry_id FROM postings p JOIN accounts a USING (account_id)
                              GROUP BY p.entry_id, a.currency HAVING sum(p.amount) <> 0) bad""",
    "currencies_sum_to_zero": """
        SELECT count(*) FROM (SELECT a.currency FROM postings p JOIN accounts a USING (account_id)
                              GROUP BY a.currency HAVING sum(p.amount) <> 0) bad""",
    "no_negative_customer_balance": """
        SELECT count(*) FROM postings p JOIN accounts a USING (account_id)
         WHERE a.kind = 'customer' AND p.balance_after < 0""",
    "no_negative_available_balance": f"""
        SELECT count(*) FROM ({_CUSTOMER_BALANCES}) b WHERE b.amount - b.reserved < 0""",
    "sequences_contiguous_and_chained": """
        SELECT count(*) FROM (
            SELECT seq, amount, balance_after,
                   lag(seq) OVER w AS prev_seq, lag(balance_after) OVER w AS prev_balance
              FROM postings WINDOW w AS (PARTITION BY account_id ORDER BY seq)) x
         WHERE (prev_seq IS NULL AND (seq <> 1 OR balance_after <> amount))
            OR (prev_seq IS NOT NULL AND (seq <> prev_seq + 1
                                          OR balance_after <> prev_balance + amount))""",
    "every_entry_has_its_outcome": """
        SELECT count(*) FROM journal_entries e
         WHERE NOT EXISTS (SELECT 1 FROM idempotency i
                            WHERE i.entry_id = e.entry_id AND i.status = 201)""",
    "every_success_has_one_entry": """
        SELECT count(*) FROM idempotency i
         WHERE i.status = 201
           AND i.scope ~ '^((debit|credit|deposit|withdrawal|reversal):|exchange_settle$)'
           AND NOT EXISTS (SELECT 1 FROM journal_entries e WHERE e.entry_id = i.entry_id)""",
    # A money entry: the customer's posting and the system shard's. An exchange entry: its order
    # id, at least two postings on distinct accounts, in at most two currencies.
    "every_entry_has_its_postings": f"""
        SELECT count(*) FROM journal_entries e
          JOIN LATERAL (SELECT count(*) AS n, count(DISTINCT p.account_id) AS accounts,
                               count(DISTINCT a.currency) AS currencies
                          FROM postings p JOIN accounts a USING (account_id)
                         WHERE p.entry_id = e.entry_id) x ON true
         WHERE CASE WHEN e.kind IN {MONEY_KINDS} THEN x.n <> 2 OR x.accounts <> 2
                    WHEN e.kind = 'exchange' THEN e.order_id IS NULL OR x.n < 2
                                                  OR x.accounts <> x.n OR x.currencies > 2
                    ELSE true END""",
    # Every reservation was accepted (a stored 201), holds a positive amount, and if released
    # was released by its stored outcome: settled with its exchange entry (the reserved amount,
    # the order id), or voided.
    "reservations_not_negative_or_orphaned": """
        SELECT count(*) FROM exchange_reservations r
         WHERE r.amount <= 0
            OR NOT EXISTS (SELECT 1 FROM idempotency i
                            WHERE (i.customer_id, i.scope, i.request_id)
                                  = (r.customer_id, 'exchange_reserve', r.exchange_id)
                              AND i.status = 201)
            OR (r.status = 'settled' AND NOT EXISTS (
                    SELECT 1 FROM journal_entries e
                      JOIN idempotency i ON i.entry_id = e.entry_id AND i.status = 201
                                        AND i.scope = 'exchange_settle'
                     WHERE e.entry_id = r.entry_id AND e.kind = 'exchange'
                       AND e.customer_id = r.customer_id AND e.request_id = r.exchange_id
                       AND e.amount = r.amount AND e.order_id IS NOT DISTINCT FROM r.order_id))
            OR (r.status = 'voided' AND NOT EXISTS (
                    SELECT 1 FROM idempotency i
                     WHERE (i.customer_id, i.scope, i.request_id)
                           = (r.customer_id, 'exchange_void', r.exchange_id)
                       AND i.status = 200))""",
    # ... and the other way round: no accepted reservation or exchange entry without its row.
    "exchange_outcomes_have_their_reservation": """
        SELECT (SELECT count(*) FROM idempotency i
                 WHERE i.scope = 'exchange_reserve' AND i.status = 201
                   AND NOT EXISTS (SELECT 1 FROM exchange_reservations r
                                    WHERE (r.customer_id, r.exchange_id)
                                          = (i.customer_id, i.request_id)))
             + (SELECT count(*) FROM journal_entries e
                 WHERE e.kind = 'exchange'
                   AND NOT EXISTS (SELECT 1 FROM exchange_reservations r
                                    WHERE r.entry_id = e.entry_id AND r.status = 'settled'))""",
    "projection_equals_ledger": f"""
        SELECT count(*) FROM ({_CUSTOMER_BALANCES}) ledger
          FULL JOIN balance_view v USING (customer_id, balance_id)
         WHERE ledger.amount IS DISTINCT FROM v.amount
            OR ledger.reserved IS DISTINCT FROM v.reserved""",
}


@dataclass(frozen=True, slots=True)
class AuditResult:
    failures: dict[str, int]
    checked: list[str]

    @property
    def ok(self) -> bool:
        return not self.failures


async def audit(conn: asyncpg.Connection, *, include_projection: bool = True) -> AuditResult:
    """Run every check; a check fails when it finds offending rows."""
    failures: dict[str, int] = {}
    checked = []
    for name, sql in CHECKS.items():
        if name == "projection_equals_ledger" and not include_projection:
            continue
        checked.append(name)
        bad = await conn.fetchval(sql)
        if bad:
            failures[name] = int(bad)
    return AuditResult(failures, checked)


async def _main(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        result = await audit(conn)
    finally:
        await conn.close()
    for name in result.checked:
        print(
            f"{'FAIL' if name in result.failures else 'ok  '} {name}"
            + (f" ({result.failures[name]} offending rows)" if name in result.failures else "")
        )
    return 0 if result.ok else 1


def main() -> int:
    from wallet_platform.config import CommonSettings, load_settings

    dsn = sys.argv[1] if len(sys.argv) > 1 else load_settings(CommonSettings).pg_dsn
    return asyncio.run(_main(dsn))


if __name__ == "__main__":
    sys.exit(main())
