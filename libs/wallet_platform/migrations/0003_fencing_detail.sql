-- ledger_apply_batch: say which partition failed the fencing check and why (epoch or offset),
-- so an operator can tell a zombie writer from a writer whose memory ran ahead of Postgres.
CREATE OR REPLACE FUNCTION ledger_fencing_detail(
    lp_partition int[], lp_expected bigint[], lp_epoch bigint[]
) RETURNS text LANGUAGE sql STABLE AS $$
    SELECT string_agg(format('partition %s: writer epoch %s offset %s, stored epoch %s offset %s',
                             x.p, x.ep, x.expected, lp.epoch, lp.next_offset), '; ')
      FROM unnest(lp_partition, lp_expected, lp_epoch) AS x(p, expected, ep)
      LEFT JOIN ledger_partitions lp ON lp.partition = x.p
     WHERE lp.epoch IS DISTINCT FROM x.ep OR lp.next_offset IS DISTINCT FROM x.expected
$$;

CREATE OR REPLACE FUNCTION ledger_apply_batch(
    lp_partition int[], lp_expected bigint[], lp_next bigint[], lp_epoch bigint[],
    lp_outbox_seq bigint[], lp_published bigint[],
    c_id text[], c_partition int[], c_time timestamptz[],
    bl_id text[], bl_blocked boolean[], bl_time timestamptz[],
    a_id uuid[], a_partition int[], a_kind text[], a_customer text[], a_balance text[],
    a_currency text[],
    e_id uuid[], e_partition int[], e_offset bigint[], e_kind text[], e_customer text[],
    e_balance text[], e_request text[], e_currency text[], e_amount numeric[], e_comment text[],
    e_time timestamptz[],
    p_entry uuid[], p_account uuid[], p_seq bigint[], p_amount numeric[],
    p_balance_after numeric[], p_customer boolean[],
    i_customer text[], i_scope text[], i_request text[], i_fingerprint bytea[],
    i_status smallint[], i_body bytea[], i_entry uuid[], i_partition int[], i_time timestamptz[],
    o_partition int[], o_seq bigint[], o_event uuid[], o_key text[], o_payload bytea[]
) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    fenced int;
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
    IF EXISTS (SELECT 1 FROM unnest(p_entry, p_amount) AS x(e, a) GROUP BY e HAVING sum(a) <> 0) THEN
        RAISE EXCEPTION 'an entry''s postings do not sum to zero' USING ERRCODE = 'LI002';
    END IF;

    INSERT INTO customers (customer_id, partition, blocked, created_at, updated_at)
    SELECT x.id, x.p, false, x.t, x.t FROM unnest(c_id, c_partition, c_time) AS x(id, p, t);

    UPDATE customers c SET blocked = x.b, updated_at = x.t
      FROM unnest(bl_id, bl_blocked, bl_time) AS x(id, b, t)
     WHERE c.customer_id = x.id;

    INSERT INTO accounts (account_id, partition, kind, customer_id, balance_id, currency)
    SELECT * FROM unnest(a_id, a_partition, a_kind, a_customer, a_balance, a_currency);

    INSERT INTO journal_entries (entry_id, partition, command_offset, kind, customer_id,
                                 balance_id, request_id, currency, amount, comment, created_at)
    SELECT * FROM unnest(e_id, e_partition, e_offset, e_kind, e_customer, e_balance, e_request,
                         e_currency, e_amount, e_comment, e_time);

    INSERT INTO postings (entry_id, account_id, seq, amount, balance_after)
    SELECT * FROM unnest(p_entry, p_account, p_seq, p_amount, p_balance_after);

    INSERT INTO idempotency (customer_id, scope, request_id, fingerprint, status, body, entry_id,
                             partition, created_at)
    SELECT * FROM unnest(i_customer, i_scope, i_request, i_fingerprint, i_status, i_body, i_entry,
                         i_partition, i_time);

    INSERT INTO outbox (partition, seq, event_id, key, payload)
    SELECT * FROM unnest(o_partition, o_seq, o_event, o_key, o_payload);
END $$;
