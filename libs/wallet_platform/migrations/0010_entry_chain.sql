-- Tamper evidence (docs/tamper-evidence.md): every journal entry written from now on carries its
-- place in its partition's hash chain. entry_hash = SHA-256 of a canonical encoding of the entry,
-- its postings and prev_hash, the entry_hash of the partition's entry before it
-- (libs/ledger_core/chain.py). The writer computes the hashes; ledger_apply_batch stores them and
-- moves the partition's head in the same transaction, conditionally like the offsets, so a zombie
-- writer can not fork the chain.
--
-- Entries written before this migration keep NULL chain columns (their hashes would only vouch
-- for whatever the rows hold today): a partition's chain starts at its first entry written after
-- it, chain_seq 1, from prev_hash = 32 zero bytes. `ledger.chain verify` checks that no unchained
-- entry follows a chained one. Adding nullable columns rewrites nothing.
ALTER TABLE journal_entries
    ADD COLUMN chain_seq  bigint CHECK (chain_seq > 0),
    ADD COLUMN prev_hash  bytea CHECK (octet_length(prev_hash) = 32),
    ADD COLUMN entry_hash bytea CHECK (octet_length(entry_hash) = 32),
    ADD CONSTRAINT journal_entries_chained_whole
        CHECK ((chain_seq IS NULL) = (prev_hash IS NULL)
               AND (chain_seq IS NULL) = (entry_hash IS NULL));

-- One entry per place in a partition's chain: a fork is a unique violation. Also the verifier's
-- walk, in chain order.
CREATE UNIQUE INDEX journal_entries_chain ON journal_entries (partition, chain_seq);

-- The head of each partition's chain: the last chained entry's seq and hash (0 and 32 zero bytes
-- before the first).
ALTER TABLE ledger_partitions
    ADD COLUMN chain_seq  bigint NOT NULL DEFAULT 0,
    ADD COLUMN chain_hash bytea NOT NULL DEFAULT decode(repeat('00', 32), 'hex')
        CHECK (octet_length(chain_hash) = 32);
