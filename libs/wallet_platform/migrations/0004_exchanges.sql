-- Exchanges (Swapgate): reservations that hold part of a customer balance, settlement entries with
-- postings in two currencies, the system accounts they post to, and the orchestrator's own table.

-- System accounts for exchanges, sharded per partition and currency like trading and settlement:
-- exchange_clearing (the other side of both legs: Swapgate's position), markup_revenue,
-- affiliate_margin and rounding (remainders of rounding, never lost).
ALTER TABLE accounts DROP CONSTRAINT accounts_kind_check;
ALTER TABLE accounts ADD CONSTRAINT accounts_kind_check CHECK (kind IN (
    'customer', 'trading', 'settlement',
    'exchange_clearing', 'markup_revenue', 'affiliate_margin', 'rounding'));

-- The exchange's order at Swapgate, on every entry an exchange causes (NULL for the others).
-- An exchange entry's currency and amount are its source leg's; its postings span two currencies.
ALTER TABLE journal_entries ADD COLUMN order_id text;

-- One row per exchange reservation, written by the ledger writer only. Made 'open' (the amount
-- is held: available = balance - the open reservations on it), then released exactly once, as
-- 'settled' (with its journal entry) or 'voided'. The trigger below allows that one change and
-- nothing else: the row is otherwise as append-only as the journal.
CREATE TABLE exchange_reservations (
    customer_id       text NOT NULL REFERENCES customers,
    exchange_id       text NOT NULL,
    partition         int NOT NULL,
    source_balance_id text NOT NULL,
    source_account    uuid NOT NULL REFERENCES accounts,
    target_balance_id text NOT NULL,
    target_account    uuid NOT NULL REFERENCES accounts,
    currency          text NOT NULL REFERENCES currencies,
    amount            numeric(40, 0) NOT NULL CHECK (amount > 0),
    comment           text NOT NULL,
    reserved_offset   bigint NOT NULL,
    reserved_at       timestamptz NOT NULL,
    status            text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'settled', 'voided')),
    order_id          text,
    reason            text,
    entry_id          uuid REFERENCES journal_entries,
    released_offset   bigint,
    released_at       timestamptz,
    PRIMARY KEY (customer_id, exchange_id),
    CHECK ((status = 'open') = (released_at IS NULL)),
    CHECK ((status = 'settled') = (entry_id IS NOT NULL)),
    CHECK (source_account <> target_account)
);
-- What the batch function's available check and a takeover read: the open ones, per partition.
CREATE INDEX exchange_reservations_open ON exchange_reservations (partition, source_account)
    WHERE status = 'open';

CREATE FUNCTION exchange_reservations_release_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'UPDATE' THEN
        RAISE EXCEPTION 'the % table allows only releasing a reservation', TG_TABLE_NAME
            USING ERRCODE = 'LA001';
    END IF;
    IF OLD.status <> 'open' OR NEW.status = 'open'
       OR (NEW.customer_id, NEW.exchange_id, NEW.partition, NEW.source_balance_id,
           NEW.source_account, NEW.target_balance_id, NEW.target_account, NEW.currency,
           NEW.amount, NEW.comment, NEW.reserved_offset, NEW.reserved_at)
          IS DISTINCT FROM
          (OLD.customer_id, OLD.exchange_id, OLD.partition, OLD.source_balance_id,
           OLD.source_account, OLD.target_balance_id, OLD.target_account, OLD.currency,
           OLD.amount, OLD.comment, OLD.reserved_offset, OLD.reserved_at) THEN
        RAISE EXCEPTION 'a reservation can only be released, once' USING ERRCODE = 'LA001';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER exchange_reservations_release_only BEFORE UPDATE OR DELETE ON exchange_reservations
    FOR EACH ROW EXECUTE FUNCTION exchange_reservations_release_only();
CREATE TRIGGER exchange_reservations_no_truncate BEFORE TRUNCATE ON exchange_reservations
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_forbid_change();

-- The read model keeps what open exchanges hold, with its own sequence number (facts carry it),
-- so GET balance can answer the available amount.
ALTER TABLE balance_view ADD COLUMN reserved numeric(40, 0) NOT NULL DEFAULT 0;
ALTER TABLE balance_view ADD COLUMN hold_seq bigint NOT NULL DEFAULT 0;

-- The exchange orchestrator's progress (quote, reserve, order, poll, settle or void), written by
-- the orchestrator (operator API, exchange CLI), never by the ledger writer; the ledger's own
-- record of an exchange is exchange_reservations and the idempotency table.
CREATE TABLE exchanges (
    customer_id   text NOT NULL,
    exchange_id   text NOT NULL,
    request       jsonb NOT NULL,           -- the validated request, as accepted
    fingerprint   bytea NOT NULL,           -- of the request: the same id with another body is refused
    state         text NOT NULL,
    order_id      text,
    quote         jsonb,                    -- the quote the exchange started from
    settlement    jsonb,                    -- the amounts booked (or to be booked)
    ledger_status smallint,                 -- the ledger's last answer to this exchange
    ledger_body   jsonb,
    detail        text,                     -- why it stopped, for people
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (customer_id, exchange_id)
);
CREATE INDEX exchanges_unfinished ON exchanges (updated_at)
    WHERE state NOT IN ('settled', 'voided', 'refused', 'failed');

-- ledger_apply_batch with exchanges: entries carry an order id, postings their currency (given
-- for exchange entries, whose postings span two currencies; NULL means the entry's currency),
-- reservations are made (r_*) and released (x_*). Invariants, all in the batch's transaction:
-- LF001 fencing (as 0003); LI001 no customer posting below zero; LI002 every entry's postings
-- sum to zero per currency; LI003 no customer's available amount (balance - open reservations)
-- below zero; LI004 a release must find its reservation open; LI005 a posting's stated currency
-- must be its account's.
DROP FUNCTION ledger_apply_batch(
    int[], bigint[], bigint[], bigint[], bigint[], bigint[],
    text[], int[], timestamptz[],
    text[], boolean[], timestamptz[],
    uuid[], int[], text[], text[], text[], text[],
    uuid[], int[], bigint[], text[], text[], text[], text[], text[], numeric[], text[],
    timestamptz[],
    uuid[], uuid[], bigint[], numeric[], numeric[], boolean[],
    text[], text[], text[], bytea[], smallint[], bytea[], uuid[], int[], timestamptz[],
    int[], bigint[], uuid[], text[], bytea[]);

CREATE FUNCTION ledger_apply_batch(
    lp_partition int[], lp_expected bigint[], lp_next bigint[], lp_epoch bigint[],
    lp_outbox_seq bigint[], lp_published bigint[],
    c_id text[], c_partition int[], c_time timestamptz[],
    bl_id text[], bl_blocked boolean[], bl_time timestamptz[],
    a_id uuid[], a_partition int[], a_kind text[], a_customer text[], a_balance text[],
    a_currency text[],
    e_id uuid[], e_partition int[], e_offset bigint[], e_kind text[], e_customer text[],
    e_balance text[], e_request text[], e_currency text[], e_amount numeric[], e_comment text[],
    e_time timestamptz[], e_order text[],
    p_entry uuid[], p_account uuid[], p_seq bigint[], p_amount numeric[],
    p_balance_after numeric[], p_customer boolean[], p_currency text[],
    i_customer text[], i_scope text[], i_request text[], i_fingerprint bytea[],
    i_status smallint[], i_body bytea[], i_entry uuid[], i_partition int[], i_time timestamptz[],
    o_partition int[], o_seq bigint[], o_event uuid[], o_key text[], o_payload bytea[],
    r_customer text[], r_exchange text[], r_partition int[], r_source_balance text[],
    r_source uuid[], r_target_balance text[], r_target uuid[], r_currency text[],
    r_amount numeric[], r_comment text[], r_offset bigint[], r_time timestamptz[],
    x_customer text[], x_exchange text[], x_status text[], x_order text[], x_reason text[],
    x_entry uuid[], x_offset bigint[], x_time timestamptz[]
) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    fenced int;
    released int;
BEGIN
    UPDATE ledger_partitions lp
       SET next_offset = x.nxt, outbox_seq = x.obs, published_seq = x.pub
      FROM unnest(lp_partition, lp_expected, lp_next, lp_epoch, lp_outbox_seq, lp_published)
           AS x(p, expected, nxt, ep, obs, pub)
     WHERE lp.partition = x.p AND lp.epoch = x.ep AND lp.next_offset = x.expected;
    GET DIAGNOSTICS fenced = ROW_COUNT;
    IF fenced <> cardinality(lp_partition) THEN
        RAISE EXCEPTION 'writer fenced: %',
            ledger_fencing_detail(lp_partition, lp_expected, lp_epoch) USING ERRCODE = 'LF001';
    END IF;

    -- Invariants, checked on the batch's own rows before anything is written.
    IF EXISTS (SELECT 1 FROM unnest(p_balance_after, p_customer) AS x(b, c) WHERE c AND b < 0) THEN
        RAISE EXCEPTION 'a customer balance would go negative' USING ERRCODE = 'LI001';
    END IF;
    IF EXISTS (SELECT 1 FROM unnest(p_entry, p_amount, p_currency) AS x(e, a, cur)
                GROUP BY e, cur HAVING sum(a) <> 0) THEN
        RAISE EXCEPTION 'an entry''s postings do not sum to zero in every currency'
            USING ERRCODE = 'LI002';
    END IF;

    INSERT INTO customers (customer_id, partition, blocked, created_at, updated_at)
    SELECT x.id, x.p, false, x.t, x.t FROM unnest(c_id, c_partition, c_time) AS x(id, p, t);

    UPDATE customers c SET blocked = x.b, updated_at = x.t
      FROM unnest(bl_id, bl_blocked, bl_time) AS x(id, b, t)
     WHERE c.customer_id = x.id;

    INSERT INTO accounts (account_id, partition, kind, customer_id, balance_id, currency)
    SELECT * FROM unnest(a_id, a_partition, a_kind, a_customer, a_balance, a_currency);

    -- A stated currency (exchange entries) must be the account's: else a wrong one could hide an
    -- imbalance from the check above. Entries without one are single-currency, as in 0003.
    IF EXISTS (SELECT 1 FROM unnest(p_account, p_currency) AS x(acc, cur)
                WHERE x.cur IS NOT NULL
                  AND x.cur IS DISTINCT FROM (SELECT a.currency FROM accounts a
                                               WHERE a.account_id = x.acc)) THEN
        RAISE EXCEPTION 'a posting''s currency is not its account''s' USING ERRCODE = 'LI005';
    END IF;

    INSERT INTO journal_entries (entry_id, partition, command_offset, kind, customer_id,
                                 balance_id, request_id, currency, amount, comment, created_at,
                                 order_id)
    SELECT * FROM unnest(e_id, e_partition, e_offset, e_kind, e_customer, e_balance, e_request,
                         e_currency, e_amount, e_comment, e_time, e_order);

    INSERT INTO postings (entry_id, account_id, seq, amount, balance_after)
    SELECT * FROM unnest(p_entry, p_account, p_seq, p_amount, p_balance_after);

    INSERT INTO exchange_reservations (customer_id, exchange_id, partition, source_balance_id,
                                       source_account, target_balance_id, target_account,
                                       currency, amount, comment, reserved_offset, reserved_at)
    SELECT * FROM unnest(r_customer, r_exchange, r_partition, r_source_balance, r_source,
                         r_target_balance, r_target, r_currency, r_amount, r_comment, r_offset,
                         r_time);

    UPDATE exchange_reservations r
       SET status = x.st, order_id = x.ord, reason = x.why, entry_id = x.ent,
           released_offset = x.off, released_at = x.t
      FROM unnest(x_customer, x_exchange, x_status, x_order, x_reason, x_entry, x_offset, x_time)
           AS x(c, e, st, ord, why, ent, off, t)
     WHERE r.customer_id = x.c AND r.exchange_id = x.e AND r.status = 'open';
    GET DIAGNOSTICS released = ROW_COUNT;
    IF released <> cardinality(x_customer) THEN
        RAISE EXCEPTION 'a reservation to release is not open' USING ERRCODE = 'LI004';
    END IF;

    -- The available amount of every balance an open reservation holds in these partitions, now
    -- that the batch's postings and reservations are in: the last balance minus what is held.
    -- Only balances with open reservations can fail it (LI001 covers the rest), and those are
    -- few: the partial index holds open reservations only.
    IF EXISTS (
        SELECT 1
          FROM (SELECT source_account, sum(amount) AS held FROM exchange_reservations
                 WHERE status = 'open' AND partition = ANY(lp_partition)
                 GROUP BY source_account) h
          LEFT JOIN LATERAL (SELECT p.balance_after FROM postings p
                              WHERE p.account_id = h.source_account
                              ORDER BY p.seq DESC LIMIT 1) l ON true
         WHERE coalesce(l.balance_after, 0) - h.held < 0) THEN
        RAISE EXCEPTION 'a customer''s available amount would go negative'
            USING ERRCODE = 'LI003';
    END IF;

    INSERT INTO idempotency (customer_id, scope, request_id, fingerprint, status, body, entry_id,
                             partition, created_at)
    SELECT * FROM unnest(i_customer, i_scope, i_request, i_fingerprint, i_status, i_body, i_entry,
                         i_partition, i_time);

    INSERT INTO outbox (partition, seq, event_id, key, payload)
    SELECT * FROM unnest(o_partition, o_seq, o_event, o_key, o_payload);
END $$;
