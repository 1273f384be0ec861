-- 0009: what operators did with dead letters, and the operator API's long-running jobs.
-- See docs/operator-jobs.md.

-- The dead-letter topic (ledger.commands.dlq) is the record of what was parked; this table holds
-- only what an operator did with one. A dead letter without a row here is new. A row is written
-- once, by the first action (redrive or discard), and never changed: a second action is refused.
CREATE TABLE operator_dead_letters (
    dlq_partition    int NOT NULL CHECK (dlq_partition >= 0),
    dlq_offset       bigint NOT NULL CHECK (dlq_offset >= 0),
    state            text NOT NULL CHECK (state IN ('redriven', 'discarded')),
    -- The key that acted (operator_api_keys.api_id); never deleted, so no foreign key needed.
    api_id           uuid NOT NULL,
    at               timestamptz NOT NULL,
    reason           text NOT NULL CHECK (length(reason) BETWEEN 1 AND 1024),
    -- Where the command first was (the record's `source` header), and for a redrive where the
    -- copy went: kept with the action so the audit trail needs no topic to be read.
    source           text NOT NULL,
    redriven_to      text,
    PRIMARY KEY (dlq_partition, dlq_offset)
);
CREATE TRIGGER operator_dead_letters_append_only BEFORE UPDATE OR DELETE ON operator_dead_letters
    FOR EACH ROW EXECUTE FUNCTION ledger_forbid_change();

-- Jobs of the operator API (projection rebuild, replay, republish). The process that runs one
-- (`runner`) updates its row at least every few seconds (`updated_at`, a heartbeat); a row left
-- `running` or `queued` whose heartbeat stopped (its process died) is marked `failed`
-- (interrupted) by the next operator API process that starts or sweeps.
CREATE TABLE operator_jobs (
    job_id      uuid PRIMARY KEY,
    type        text NOT NULL CHECK (type IN ('projection_rebuild', 'replay', 'republish')),
    status      text NOT NULL
                CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    params      jsonb NOT NULL,
    progress    jsonb NOT NULL DEFAULT '{}'::jsonb,
    result      jsonb,
    error       text,
    api_id      uuid NOT NULL,
    runner      text NOT NULL,
    created_at  timestamptz NOT NULL,
    started_at  timestamptz,
    finished_at timestamptz,
    updated_at  timestamptz NOT NULL
);
-- One job of each type at a time, across every operator API process.
CREATE UNIQUE INDEX operator_jobs_one_active_per_type ON operator_jobs (type)
    WHERE status IN ('queued', 'running');
CREATE INDEX operator_jobs_created ON operator_jobs (created_at DESC, job_id);
