"""The reference accounting consumer: books from ledger.events (see docs/accounting-consumer.md)."""
