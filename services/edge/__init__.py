"""The edge: Quadcode's single base URL. Authenticates callbacks, turns writes into commands on
ledger.commands and answers with the ledger's outcome; forwards balance reads to the projection."""
