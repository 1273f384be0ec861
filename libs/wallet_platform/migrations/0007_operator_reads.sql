-- The operator API's reads (services/operator_api/ledger_reads.py), each bounded by an index so
-- its cost does not grow with a balance's history.

-- A balance's entries by time: the balance at a point in time and a statement's from/to bounds
-- are one descent of this index (max(created_at) at or before the time). It starts with the
-- columns of journal_entries_customer, which it replaces: the ledger still maintains one index
-- here per entry, not two.
CREATE INDEX journal_entries_balance_time ON journal_entries (customer_id, balance_id, created_at);
DROP INDEX journal_entries_customer;

-- An exchange's entry is filed under its source balance; the exchanges settled into a balance
-- (its target) are found here, by time. Only settled reservations, which an exchange's
-- settlement updates once.
CREATE INDEX exchange_reservations_settled_target ON exchange_reservations (target_account, released_at)
    WHERE status = 'settled';

-- Entries by Swapgate order id (exchange entries only; the others have none and cost nothing).
CREATE INDEX journal_entries_order ON journal_entries (order_id) WHERE order_id IS NOT NULL;
