-- ledger_apply_batch: one batch of the ledger writer, written in one statement (one transaction).
--
-- Defined here once (not in a migration): `schema migrate` re-applies this file, in one
-- transaction after the migrations, whenever its checksum differs from the one recorded in
-- schema_definitions; services refuse a database whose recorded checksum is not their build's.
-- The file owns the function and its row types, so it drops and recreates them whole.
--
-- Each input is one array of a composite row type; each type's attributes are, in order, the
-- fields of the matching NamedTuple in libs/ledger_core/rows.py (a test checks the two agree).
-- Adding a column: add it to the table (a migration), to the row type here and to the tuple.
--
-- Checks (SQLSTATE): LF001 the writer is fenced (epoch, offset or chain head moved); LI001 a customer
-- balance would go negative; LI002 an entry's postings do not sum to zero in every currency;
-- LI003 an available amount would go negative; LI004 a reservation to release is not open;
-- LI005 a posting's stated currency is not its account's. Every statement whose input is empty
-- in this batch is skipped: each skip saves an executor start, a large part of a small batch.

-- Whatever an earlier build defined: the 71-array signature of migrations 0004/0005, then the
-- row types (CASCADE drops the function that takes them, whatever its signature).
DROP FUNCTION IF EXISTS ledger_apply_batch(
    int[], bigint[], bigint[], bigint[], bigint[], bigint[],
    text[], int[], timestamptz[],
    text[], boolean[], timestamptz[],
    uuid[], int[], text[], text[], text[], text[],
    uuid[], int[], bigint[], text[], text[], text[], text[], text[], numeric[], text[],
    timestamptz[], text[],
    uuid[], uuid[], bigint[], numeric[], numeric[], boolean[], text[],
    text[], text[], text[], bytea[], smallint[], bytea[], uuid[], int[], timestamptz[],
    int[], bigint[], uuid[], text[], bytea[],
    text[], text[], int[], text[], uuid[], text[], uuid[], text[], numeric[], text[], bigint[],
    timestamptz[],
    text[], text[], text[], text[], text[], uuid[], bigint[], timestamptz[]);
DROP TYPE IF EXISTS ledger_cursor_row, ledger_customer_row, ledger_block_row, ledger_account_row,
    ledger_entry_row, ledger_posting_row, ledger_outcome_row, ledger_fact_row,
    ledger_reservation_row, ledger_release_row CASCADE;

-- The conditional move of a partition's offsets (fences zombie writers).
-- The chain's head moves the same way: from expected_chain_seq to (chain_seq, chain_hash).
CREATE TYPE ledger_cursor_row AS (
    partition int, expected_offset bigint, next_offset bigint, epoch bigint, outbox_seq bigint,
    published_seq bigint, expected_chain_seq bigint, chain_seq bigint, chain_hash bytea);
CREATE TYPE ledger_customer_row AS (customer_id text, partition int, created_at timestamptz);
CREATE TYPE ledger_block_row AS (customer_id text, blocked boolean, updated_at timestamptz);
CREATE TYPE ledger_account_row AS (
    account_id uuid, partition int, kind text, customer_id text, balance_id text, currency text);
CREATE TYPE ledger_entry_row AS (
    entry_id uuid, partition int, command_offset bigint, kind text, customer_id text,
    balance_id text, request_id text, currency text, amount numeric, comment text,
    created_at timestamptz, order_id text, chain_seq bigint, prev_hash bytea, entry_hash bytea);
-- customer: the posting is a customer's (its balance may not go negative); currency: stated by
-- multi-currency (exchange) entries, NULL for single-currency ones (the entry's).
CREATE TYPE ledger_posting_row AS (
    entry_id uuid, account_id uuid, seq bigint, amount numeric, balance_after numeric,
    customer boolean, currency text);
CREATE TYPE ledger_outcome_row AS (
    customer_id text, scope text, request_id text, fingerprint bytea, status smallint,
    body bytea, entry_id uuid, partition int, created_at timestamptz);
CREATE TYPE ledger_fact_row AS (
    partition int, seq bigint, event_id uuid, key text, payload bytea);
CREATE TYPE ledger_reservation_row AS (
    customer_id text, exchange_id text, partition int, source_balance_id text,
    source_account uuid, target_balance_id text, target_account uuid, currency text,
    amount numeric, comment text, reserved_offset bigint, reserved_at timestamptz);
CREATE TYPE ledger_release_row AS (
    customer_id text, exchange_id text, status text, order_id text, reason text, entry_id uuid,
    released_offset bigint, released_at timestamptz);

CREATE FUNCTION ledger_apply_batch(
    in_cursors ledger_cursor_row[], in_customers ledger_customer_row[],
    in_blocks ledger_block_row[], in_accounts ledger_account_row[],
    in_entries ledger_entry_row[], in_postings ledger_posting_row[],
    in_outcomes ledger_outcome_row[], in_facts ledger_fact_row[],
    in_reservations ledger_reservation_row[], in_releases ledger_release_row[]
) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    fenced int;
    released int;
BEGIN
    UPDATE ledger_partitions lp
       SET next_offset = x.next_offset, outbox_seq = x.outbox_seq, published_seq = x.published_seq,
           chain_seq = x.chain_seq, chain_hash = x.chain_hash
      FROM unnest(in_cursors) AS x
     WHERE lp.partition = x.partition AND lp.epoch = x.epoch
       AND lp.next_offset = x.expected_offset AND lp.chain_seq = x.expected_chain_seq;
    GET DIAGNOSTICS fenced = ROW_COUNT;
    IF fenced <> cardinality(in_cursors) THEN
        -- Epoch and offsets as expected: then the chain's head is not (memory went astray).
        RAISE EXCEPTION 'writer fenced: %',
            coalesce(ledger_fencing_detail(ARRAY(SELECT x.partition FROM unnest(in_cursors) x),
                                           ARRAY(SELECT x.expected_offset
                                                   FROM unnest(in_cursors) x),
                                           ARRAY(SELECT x.epoch FROM unnest(in_cursors) x)),
                     'the entry chain''s head is not at the writer''s expected chain_seq')
            USING ERRCODE = 'LF001';
    END IF;

    -- Invariants, checked on the batch's own rows before anything is written.
    IF cardinality(in_postings) > 0 THEN
        IF EXISTS (SELECT 1 FROM unnest(in_postings) AS x WHERE x.customer AND x.balance_after < 0)
        THEN
            RAISE EXCEPTION 'a customer balance would go negative' USING ERRCODE = 'LI001';
        END IF;
        IF EXISTS (SELECT 1 FROM unnest(in_postings) AS x
                    GROUP BY x.entry_id, x.currency HAVING sum(x.amount) <> 0) THEN
            RAISE EXCEPTION 'an entry''s postings do not sum to zero in every currency'
                USING ERRCODE = 'LI002';
        END IF;
    END IF;

    IF cardinality(in_customers) > 0 THEN
        INSERT INTO customers (customer_id, partition, blocked, created_at, updated_at)
        SELECT x.customer_id, x.partition, false, x.created_at, x.created_at
          FROM unnest(in_customers) AS x;
    END IF;

    IF cardinality(in_blocks) > 0 THEN
        UPDATE customers c SET blocked = x.blocked, updated_at = x.updated_at
          FROM unnest(in_blocks) AS x
         WHERE c.customer_id = x.customer_id;
    END IF;

    IF cardinality(in_accounts) > 0 THEN
        INSERT INTO accounts (account_id, partition, kind, customer_id, balance_id, currency)
        SELECT x.account_id, x.partition, x.kind, x.customer_id, x.balance_id, x.currency
          FROM unnest(in_accounts) AS x;
    END IF;

    -- A stated currency (exchange entries) must be the account's: else a wrong one could hide an
    -- imbalance from the check above. Postings without one are single-currency.
    IF cardinality(in_postings) > 0
       AND EXISTS (SELECT 1 FROM unnest(in_postings) AS x
                    WHERE x.currency IS NOT NULL
                      AND x.currency IS DISTINCT FROM (SELECT a.currency FROM accounts a
                                                        WHERE a.account_id = x.account_id)) THEN
        RAISE EXCEPTION 'a posting''s currency is not its account''s' USING ERRCODE = 'LI005';
    END IF;

    IF cardinality(in_entries) > 0 THEN
        INSERT INTO journal_entries (entry_id, partition, command_offset, kind, customer_id,
                                     balance_id, request_id, currency, amount, comment,
                                     created_at, order_id, chain_seq, prev_hash, entry_hash)
        SELECT x.entry_id, x.partition, x.command_offset, x.kind, x.customer_id, x.balance_id,
               x.request_id, x.currency, x.amount, x.comment, x.created_at, x.order_id,
               x.chain_seq, x.prev_hash, x.entry_hash
          FROM unnest(in_entries) AS x;
    END IF;

    IF cardinality(in_postings) > 0 THEN
        INSERT INTO postings (entry_id, account_id, seq, amount, balance_after)
        SELECT x.entry_id, x.account_id, x.seq, x.amount, x.balance_after
          FROM unnest(in_postings) AS x;
    END IF;

    IF cardinality(in_reservations) > 0 THEN
        INSERT INTO exchange_reservations (customer_id, exchange_id, partition,
                                           source_balance_id, source_account, target_balance_id,
                                           target_account, currency, amount, comment,
                                           reserved_offset, reserved_at)
        SELECT x.customer_id, x.exchange_id, x.partition, x.source_balance_id, x.source_account,
               x.target_balance_id, x.target_account, x.currency, x.amount, x.comment,
               x.reserved_offset, x.reserved_at
          FROM unnest(in_reservations) AS x;
    END IF;

    IF cardinality(in_releases) > 0 THEN
        UPDATE exchange_reservations r
           SET status = x.status, order_id = x.order_id, reason = x.reason,
               entry_id = x.entry_id, released_offset = x.released_offset,
               released_at = x.released_at
          FROM unnest(in_releases) AS x
         WHERE r.customer_id = x.customer_id AND r.exchange_id = x.exchange_id
           AND r.status = 'open';
        GET DIAGNOSTICS released = ROW_COUNT;
        IF released <> cardinality(in_releases) THEN
            RAISE EXCEPTION 'a reservation to release is not open' USING ERRCODE = 'LI004';
        END IF;
    END IF;

    -- The available amount of every balance an open reservation holds in these partitions, now
    -- that the batch's postings and reservations are in: the last balance minus what is held.
    -- Only balances with open reservations can fail it (LI001 covers the rest), and only a batch
    -- that posts or makes a reservation can lower one (a release only raises it).
    IF (cardinality(in_postings) > 0 OR cardinality(in_reservations) > 0) AND EXISTS (
        SELECT 1
          FROM (SELECT source_account, sum(amount) AS held FROM exchange_reservations
                 WHERE status = 'open'
                   AND partition = ANY(ARRAY(SELECT c.partition FROM unnest(in_cursors) c))
                 GROUP BY source_account) h
          LEFT JOIN LATERAL (SELECT p.balance_after FROM postings p
                              WHERE p.account_id = h.source_account
                              ORDER BY p.seq DESC LIMIT 1) l ON true
         WHERE coalesce(l.balance_after, 0) - h.held < 0) THEN
        RAISE EXCEPTION 'a customer''s available amount would go negative'
            USING ERRCODE = 'LI003';
    END IF;

    IF cardinality(in_outcomes) > 0 THEN
        INSERT INTO idempotency (customer_id, scope, request_id, fingerprint, status, body,
                                 entry_id, partition, created_at)
        SELECT x.customer_id, x.scope, x.request_id, x.fingerprint, x.status, x.body,
               x.entry_id, x.partition, x.created_at
          FROM unnest(in_outcomes) AS x;
    END IF;

    IF cardinality(in_facts) > 0 THEN
        INSERT INTO outbox (partition, seq, event_id, key, payload)
        SELECT x.partition, x.seq, x.event_id, x.key, x.payload FROM unnest(in_facts) AS x;
    END IF;
END $$;
