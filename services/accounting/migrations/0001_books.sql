-- The reference accounting consumer's books, in a schema of its own. Everything here is derived
-- from ledger.events and can be rebuilt by dropping the schema and reading the topic again.

-- Every fact booked, once (the primary key makes a second booking of one fact fail loudly).
CREATE TABLE accounting.facts (
    event_id        uuid PRIMARY KEY,
    type            text NOT NULL,
    customer_id     text NOT NULL,
    kafka_partition int NOT NULL,
    kafka_offset    bigint NOT NULL,
    occurred_at     timestamptz NOT NULL,
    booked_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX facts_without_sequence ON accounting.facts (type) WHERE type LIKE 'customer.%';

-- Per customer balance, the last sequence numbers booked (gap and duplicate detection).
CREATE TABLE accounting.balance_positions (
    customer_id text NOT NULL,
    balance_id  text NOT NULL,
    balance_seq bigint NOT NULL,
    hold_seq    bigint NOT NULL,
    PRIMARY KEY (customer_id, balance_id)
);

-- The accounts the books have seen (a customer balance, or a system account's shard) and their
-- balance: the sum of their lines, in minor units, + credit / - debit.
CREATE TABLE accounting.accounts (
    account_id  uuid PRIMARY KEY,
    account     text NOT NULL,
    customer_id text NOT NULL,
    balance_id  text NOT NULL,
    currency    text NOT NULL,
    balance     numeric(40, 0) NOT NULL
);

-- The general ledger: one line per posting.
CREATE TABLE accounting.gl_lines (
    line_id     bigserial PRIMARY KEY,
    event_id    uuid NOT NULL REFERENCES accounting.facts,
    entry_id    text NOT NULL,
    fact_type   text NOT NULL,
    kind        text NOT NULL,
    reference   text NOT NULL,
    account_id  uuid NOT NULL REFERENCES accounting.accounts,
    currency    text NOT NULL,
    amount      numeric(40, 0) NOT NULL CHECK (amount <> 0),
    day         date NOT NULL,
    occurred_at timestamptz NOT NULL
);
CREATE INDEX gl_lines_day ON accounting.gl_lines (day, line_id);

-- Movements per account and day; closing balances are running sums over these.
CREATE TABLE accounting.daily_movements (
    account_id uuid NOT NULL REFERENCES accounting.accounts,
    day        date NOT NULL,
    debits     numeric(40, 0) NOT NULL,  -- positive: the sum of the debit lines' amounts
    credits    numeric(40, 0) NOT NULL,
    lines      bigint NOT NULL,
    PRIMARY KEY (account_id, day)
);

-- Where the books stand in ledger.events, stored in the transaction of the books it produced.
CREATE TABLE accounting.kafka_positions (
    kafka_partition int PRIMARY KEY,
    next_offset     bigint NOT NULL
);
