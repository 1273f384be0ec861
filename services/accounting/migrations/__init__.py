"""Migrations of the accounting consumer's own schema, ``accounting`` (see accounting.store)."""
