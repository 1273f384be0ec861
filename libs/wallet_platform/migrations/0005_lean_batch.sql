-- ledger_apply_batch as in 0004, with the same checks, doing only what a batch needs: every
-- statement over an input that is empty in this batch is skipped (a batch of debits and credits
-- creates no customers or accounts, blocks nobody and makes or releases no reservation; each
-- statement skipped saves its executor start, which the benchmark showed as a large part of the
-- fixed cost of a small batch). The available-amount check (LI003) runs only when the batch can
-- lower an available amount: it posts or makes a reservation (a release only raises one).

CREATE OR REPLACE FUNCTION ledger_apply_batch(
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
    IF cardinality(p_entry) > 0 THEN
        IF EXISTS (SELECT 1 FROM unnest(p_balance_after, p_customer) AS x(b, c)
                    WHERE c AND b < 0) THEN
            RAISE EXCEPTION 'a customer balance would go negative' USING ERRCODE = 'LI001';
        END IF;
        IF EXISTS (SELECT 1 FROM unnest(p_entry, p_amount, p_currency) AS x(e, a, cur)
                    GROUP BY e, cur HAVING sum(a) <> 0) THEN
            RAISE EXCEPTION 'an entry''s postings do not sum to zero in every currency'
                USING ERRCODE = 'LI002';
        END IF;
    END IF;

    IF cardinality(c_id) > 0 THEN
        INSERT INTO customers (customer_id, partition, blocked, created_at, updated_at)
        SELECT x.id, x.p, false, x.t, x.t FROM unnest(c_id, c_partition, c_time) AS x(id, p, t);
    END IF;

    IF cardinality(bl_id) > 0 THEN
        UPDATE customers c SET blocked = x.b, updated_at = x.t
          FROM unnest(bl_id, bl_blocked, bl_time) AS x(id, b, t)
         WHERE c.customer_id = x.id;
    END IF;

    IF cardinality(a_id) > 0 THEN
        INSERT INTO accounts (account_id, partition, kind, customer_id, balance_id, currency)
        SELECT * FROM unnest(a_id, a_partition, a_kind, a_customer, a_balance, a_currency);
    END IF;

    -- A stated currency (exchange entries) must be the account's: else a wrong one could hide an
    -- imbalance from the check above. Entries without one are single-currency, as in 0003.
    IF cardinality(array_remove(p_currency, NULL)) > 0
       AND EXISTS (SELECT 1 FROM unnest(p_account, p_currency) AS x(acc, cur)
                    WHERE x.cur IS NOT NULL
                      AND x.cur IS DISTINCT FROM (SELECT a.currency FROM accounts a
                                                   WHERE a.account_id = x.acc)) THEN
        RAISE EXCEPTION 'a posting''s currency is not its account''s' USING ERRCODE = 'LI005';
    END IF;

    IF cardinality(e_id) > 0 THEN
        INSERT INTO journal_entries (entry_id, partition, command_offset, kind, customer_id,
                                     balance_id, request_id, currency, amount, comment,
                                     created_at, order_id)
        SELECT * FROM unnest(e_id, e_partition, e_offset, e_kind, e_customer, e_balance,
                             e_request, e_currency, e_amount, e_comment, e_time, e_order);
    END IF;

    IF cardinality(p_entry) > 0 THEN
        INSERT INTO postings (entry_id, account_id, seq, amount, balance_after)
        SELECT * FROM unnest(p_entry, p_account, p_seq, p_amount, p_balance_after);
    END IF;

    IF cardinality(r_customer) > 0 THEN
        INSERT INTO exchange_reservations (customer_id, exchange_id, partition,
                                           source_balance_id, source_account, target_balance_id,
                                           target_account, currency, amount, comment,
                                           reserved_offset, reserved_at)
        SELECT * FROM unnest(r_customer, r_exchange, r_partition, r_source_balance, r_source,
                             r_target_balance, r_target, r_currency, r_amount, r_comment,
                             r_offset, r_time);
    END IF;

    IF cardinality(x_customer) > 0 THEN
        UPDATE exchange_reservations r
           SET status = x.st, order_id = x.ord, reason = x.why, entry_id = x.ent,
               released_offset = x.off, released_at = x.t
          FROM unnest(x_customer, x_exchange, x_status, x_order, x_reason, x_entry, x_offset,
                      x_time) AS x(c, e, st, ord, why, ent, off, t)
         WHERE r.customer_id = x.c AND r.exchange_id = x.e AND r.status = 'open';
        GET DIAGNOSTICS released = ROW_COUNT;
        IF released <> cardinality(x_customer) THEN
            RAISE EXCEPTION 'a reservation to release is not open' USING ERRCODE = 'LI004';
        END IF;
    END IF;

    -- The available amount of every balance an open reservation holds in these partitions, now
    -- that the batch's postings and reservations are in: the last balance minus what is held.
    -- Only balances with open reservations can fail it (LI001 covers the rest), and those are
    -- few: the partial index holds open reservations only.
    IF (cardinality(p_entry) > 0 OR cardinality(r_customer) > 0) AND EXISTS (
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

    IF cardinality(i_customer) > 0 THEN
        INSERT INTO idempotency (customer_id, scope, request_id, fingerprint, status, body,
                                 entry_id, partition, created_at)
        SELECT * FROM unnest(i_customer, i_scope, i_request, i_fingerprint, i_status, i_body,
                             i_entry, i_partition, i_time);
    END IF;

    IF cardinality(o_partition) > 0 THEN
        INSERT INTO outbox (partition, seq, event_id, key, payload)
        SELECT * FROM unnest(o_partition, o_seq, o_event, o_key, o_payload);
    END IF;
END $$;
