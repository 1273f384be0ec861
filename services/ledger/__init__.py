"""The ledger service: the only writer of the ledger, one writer per partition."""
