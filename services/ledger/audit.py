"""The ledger's audit: invariants that must hold after any run, crash or replay.

``python -m ledger.audit`` prints each check and exits non-zero if any fails. Tests and the
benchmark call :func:`audit` directly.
"""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass

import asyncpg

CHECKS: dict[str, str] = {
    "entries_balance": """
        SELECT count(*) FROM (SELECT entry_id FROM postings GROUP BY entry_id
                              HAVING sum(amount) <> 0) bad""",
    "currencies_sum_to_zero": """
        SELECT count(*) FROM (SELECT a.currency FROM postings p JOIN accounts a USING (account_id)
                              GROUP BY a.currency HAVING sum(p.amount) <> 0) bad""",
    "no_negative_customer_balance": """
        SELECT count(*) FROM postings p JOIN accounts a USING (account_id)
         WHERE a.kind = 'customer' AND p.balance_after < 0""",
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
         WHERE i.status = 201 AND i.scope ~ '^(debit|credit|deposit|withdrawal):'
           AND NOT EXISTS (SELECT 1 FROM journal_entries e WHERE e.entry_id = i.entry_id)""",
    "every_entry_has_two_postings": """
        SELECT count(*) FROM journal_entries e
         WHERE (SELECT count(*) FROM postings p WHERE p.entry_id = e.entry_id) <> 2""",
    "projection_equals_ledger": """
        SELECT count(*) FROM (
            SELECT a.customer_id, a.balance_id, coalesce(l.balance_after, 0) AS amount
              FROM accounts a
              LEFT JOIN LATERAL (SELECT balance_after FROM postings p
                                  WHERE p.account_id = a.account_id
                                  ORDER BY seq DESC LIMIT 1) l ON true
             WHERE a.kind = 'customer') ledger
          FULL JOIN balance_view v USING (customer_id, balance_id)
         WHERE ledger.amount IS DISTINCT FROM v.amount""",
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
