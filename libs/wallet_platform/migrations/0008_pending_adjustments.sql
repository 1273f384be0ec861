-- Four eyes on money moved by hand (services/operator_api/adjustments.py, docs/operator-api.md):
-- a deposit, withdrawal or reversal at or above its currency's threshold waits here until a
-- second operator key approves it (then its command goes to ledger.commands) or rejects it.
-- The ledger's own tables are untouched: an adjustment becomes an entry only through the ledger.

CREATE TABLE pending_adjustments (
    adjustment_id  uuid PRIMARY KEY,
    kind           text NOT NULL CHECK (kind IN ('deposit', 'withdrawal', 'reversal')),
    customer_id    text NOT NULL,
    balance_id     text NOT NULL,
    -- The maker's requestId: the command is sent with it on approval, so a retry of the maker's
    -- request finds this row again instead of making a second one.
    request_id     text NOT NULL,
    amount         text NOT NULL,          -- decimal string, valid in the currency
    currency       text NOT NULL,
    comment        text NOT NULL,
    reverses       uuid,                   -- the entry a reversal reverses
    maker          uuid NOT NULL,          -- api_id of the key that asked
    status         text NOT NULL DEFAULT 'pending'
                   CHECK (status IN ('pending', 'approved', 'rejected', 'failed')),
    checker        uuid,                   -- api_id of the key that approved or rejected
    reason         text,                   -- why it was rejected
    outcome_status smallint,               -- the ledger's answer once approved
    outcome_body   bytea,
    created_at     timestamptz NOT NULL DEFAULT now(),
    decided_at     timestamptz,
    completed_at   timestamptz,
    CHECK ((kind = 'reversal') = (reverses IS NOT NULL)),
    CHECK ((status = 'pending') = (checker IS NULL)),
    UNIQUE (customer_id, kind, balance_id, request_id)
);

-- The list operators work through: by status, oldest first.
CREATE INDEX pending_adjustments_status ON pending_adjustments (status, created_at, adjustment_id);
