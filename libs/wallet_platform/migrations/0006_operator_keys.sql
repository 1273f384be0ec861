-- Operator API keys (Swapgate API v2's scheme), replay refusal shared by every operator API
-- replica, and the operator audit log: append-only, each record's hash chained to the previous.

-- One row per key. The secret is never stored in clear: `secret` is a Fernet token (the master
-- keys are outside the database), and only the server, which must compute HMACs, decrypts it.
-- Keys are never deleted (the audit names them); they are deactivated.
CREATE TABLE operator_api_keys (
    api_id        uuid PRIMARY KEY,
    name          text NOT NULL CHECK (length(name) BETWEEN 1 AND 128),
    public_key    text NOT NULL UNIQUE,
    secret        bytea NOT NULL,
    is_active     boolean NOT NULL,
    white_list_ip cidr[] NOT NULL,
    settings      jsonb NOT NULL CHECK (settings->>'role' IN ('read_only', 'operator', 'admin')),
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL,
    -- The api_id of the admin key that made it, or "cli:<os user>" for the bootstrap CLI.
    created_by    text NOT NULL
);

-- Signatures accepted within the timestamp window: inserting one that is here already is a
-- replay. A row is useless once its timestamp has left the window (the window check refuses the
-- request first), so expired rows are purged by range on the index.
CREATE TABLE operator_seen_signatures (
    digest     bytea PRIMARY KEY,
    expires_at timestamptz NOT NULL
);
CREATE INDEX operator_seen_signatures_expiry ON operator_seen_signatures (expires_at);

-- The audit log. `hash` = SHA-256(prev_hash || canonical encoding of the record), see
-- services/operator_api/audit.py; `seq` counts from 1 without gaps. Appends are serialised by
-- locking the one row of operator_audit_head, so concurrent requests (and replicas) never fork
-- the chain.
CREATE TABLE operator_audit (
    seq         bigint PRIMARY KEY CHECK (seq > 0),
    at          timestamptz NOT NULL,
    api_id      uuid,
    method      text NOT NULL,
    route       text NOT NULL,
    path        text NOT NULL,
    body_sha256 bytea NOT NULL,
    status      smallint NOT NULL,
    outcome     text NOT NULL,
    detail      jsonb NOT NULL,
    prev_hash   bytea NOT NULL,
    hash        bytea NOT NULL
);
CREATE TRIGGER operator_audit_append_only BEFORE UPDATE OR DELETE ON operator_audit
    FOR EACH ROW EXECUTE FUNCTION ledger_forbid_change();
CREATE TRIGGER operator_audit_no_truncate BEFORE TRUNCATE ON operator_audit
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_forbid_change();

-- The chain's head: the last record's seq and hash (0 and 32 zero bytes before the first).
CREATE TABLE operator_audit_head (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    seq      bigint NOT NULL,
    hash     bytea NOT NULL
);
INSERT INTO operator_audit_head (seq, hash) VALUES (0, decode(repeat('00', 32), 'hex'));
