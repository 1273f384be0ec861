"""Books from ledger facts: the pure core of the reference accounting consumer (no I/O).

:mod:`ledger_books.reading` turns one ``ledger.events`` fact into general-ledger lines (which
accounts move, on which side) and the per-balance sequence numbers it claims;
:mod:`ledger_books.books` decides, fact by fact, whether to book it, drop it as a duplicate, or
park it behind a gap until the missing fact arrives. ``services/accounting`` wires it to Kafka
and Postgres; ``docs/accounting-consumer.md`` describes the policy.
"""
