"""The projection: follows ledger.events into a balance read model and answers balance reads."""
