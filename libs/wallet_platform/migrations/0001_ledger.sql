-- The double-entry ledger. Written only by the ledger service, one writer per partition of
-- ledger.commands; every batch is one call of ledger_apply_batch (one transaction).

CREATE TABLE currencies (
    code     text PRIMARY KEY,
    exponent smallint NOT NULL CHECK (exponent BETWEEN 0 AND 18)
);

-- One row per partition of ledger.commands: the next offset to apply (stored with the output,
-- so a crash can neither lose nor repeat a batch) and the writer epoch that fences zombies.
CREATE TABLE ledger_partitions (
    partition     int PRIMARY KEY,
    next_offset   bigint NOT NULL DEFAULT 0,
    epoch         bigint NOT NULL DEFAULT 0,
    outbox_seq    bigint NOT NULL DEFAULT 0,  -- last outbox sequence number assigned
    published_seq bigint NOT NULL DEFAULT 0   -- outbox rows up to here are known published
);

CREATE TABLE customers (
    customer_id text PRIMARY KEY,
    partition   int NOT NULL,
    blocked     boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL
);
CREATE INDEX customers_partition ON customers (partition);

CREATE TABLE accounts (
    account_id  uuid PRIMARY KEY,
    partition   int NOT NULL,
    kind        text NOT NULL CHECK (kind IN ('customer', 'trading', 'settlement')),
    customer_id text REFERENCES customers,
    balance_id  text,
    currency    text NOT NULL REFERENCES currencies,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CHECK ((kind = 'customer') = (customer_id IS NOT NULL AND balance_id IS NOT NULL))
);
CREATE UNIQUE INDEX accounts_customer_balance ON accounts (customer_id, balance_id)
    WHERE kind = 'customer';
CREATE UNIQUE INDEX accounts_system_shard ON accounts (kind, currency, partition)
    WHERE kind <> 'customer';
CREATE INDEX accounts_partition ON accounts (partition);

CREATE TABLE journal_entries (
    entry_id       uuid PRIMARY KEY,
    partition      int NOT NULL,
    command_offset bigint NOT NULL,
    kind           text NOT NULL,
    customer_id    text NOT NULL,
    balance_id     text NOT NULL,
    request_id     text NOT NULL,
    currency       text NOT NULL REFERENCES currencies,
    amount         numeric(40, 0) NOT NULL CHECK (amount > 0),
    comment        text NOT NULL,
    created_at     timestamptz NOT NULL
);
CREATE INDEX journal_entries_customer ON journal_entries (customer_id, balance_id);

-- Signed amounts in minor units: every entry's postings sum to zero. seq is the account's own
-- sequence number (1, 2, ...), balance_after the account's balance after this posting.
CREATE TABLE postings (
    entry_id      uuid NOT NULL REFERENCES journal_entries,
    account_id    uuid NOT NULL REFERENCES accounts,
    seq           bigint NOT NULL CHECK (seq > 0),
    amount        numeric(40, 0) NOT NULL CHECK (amount <> 0),
    balance_after numeric(40, 0) NOT NULL,
    PRIMARY KEY (account_id, seq)
);
CREATE INDEX postings_entry ON postings (entry_id);

-- The stored outcome of every request whose answer depends on the ledger, kept for replays.
CREATE TABLE idempotency (
    customer_id text NOT NULL,
    scope       text NOT NULL,
    request_id  text NOT NULL,
    fingerprint bytea NOT NULL,
    status      smallint NOT NULL,
    body        bytea NOT NULL,
    entry_id    uuid,
    partition   int NOT NULL,
    created_at  timestamptz NOT NULL,
    PRIMARY KEY (customer_id, scope, request_id)
);

-- Facts waiting for (or already given to) ledger.events, in order per partition.
CREATE TABLE outbox (
    partition int NOT NULL,
    seq       bigint NOT NULL,
    event_id  uuid NOT NULL,
    key       text NOT NULL,
    payload   bytea NOT NULL,
    PRIMARY KEY (partition, seq)
);

-- Append-only, enforced here and not only in code: corrections are new entries.
CREATE FUNCTION ledger_forbid_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the % table is append-only', TG_TABLE_NAME USING ERRCODE = 'LA001';
END $$;
CREATE TRIGGER journal_entries_append_only BEFORE UPDATE OR DELETE ON journal_entries
    FOR EACH ROW EXECUTE FUNCTION ledger_forbid_change();
CREATE TRIGGER journal_entries_no_truncate BEFORE TRUNCATE ON journal_entries
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_forbid_change();
CREATE TRIGGER postings_append_only BEFORE UPDATE OR DELETE ON postings
    FOR EACH ROW EXECUTE FUNCTION ledger_forbid_change();
CREATE TRIGGER postings_no_truncate BEFORE TRUNCATE ON postings
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_forbid_change();

-- One batch of the writer, in one call (one round trip, one transaction, one fsync).
-- Raises LF001 if a partition's epoch or offset is not what the writer believes: a newer writer
-- owns it (this one is a zombie) and nothing of the batch may land.
CREATE FUNCTION ledger_apply_batch(
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
        RAISE EXCEPTION 'writer fenced: partition epoch or offset moved' USING ERRCODE = 'LF001';
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
