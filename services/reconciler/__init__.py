"""Continuous reconciliation: checks, every few seconds, that the ledger, its outbox, the Kafka
topics, the projection and the reference accounting consumer's books agree."""
