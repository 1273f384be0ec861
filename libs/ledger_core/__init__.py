"""The ledger's pure domain: money, commands, the decision function, outcomes, facts.

Nothing in this package performs I/O. Services feed it plain data and persist what it returns.
"""
