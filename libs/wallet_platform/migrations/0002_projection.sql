-- The projection's read model: rebuilt from ledger.events at any time (see `projection rebuild`).
-- Offsets are stored with the rows they produced, so the projection applies each fact once.

CREATE TABLE projection_offsets (
    partition   int PRIMARY KEY,
    next_offset bigint NOT NULL
);

CREATE TABLE balance_view (
    customer_id text NOT NULL,
    balance_id  text NOT NULL,
    currency    text NOT NULL,
    amount      numeric(40, 0) NOT NULL,
    seq         bigint NOT NULL,
    updated_at  timestamptz NOT NULL,
    PRIMARY KEY (customer_id, balance_id)
);

CREATE TABLE customer_view (
    customer_id text PRIMARY KEY,
    blocked     boolean NOT NULL,
    updated_at  timestamptz NOT NULL
);
