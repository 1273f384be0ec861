"""Exchanges through Swapgate: quote, reserve the source amount in the ledger, create the order,
poll it, then settle or void the reservation (the orchestration; the ledger books)."""
