"""A stand-in for Quadcode's B2B gateway (external balances) and its trading room.

Serves the gateway API on loopback with Quadcode's rules (JWT, IP allowlist, rate limits,
country and currency restrictions, blocking) and plays trades against our wallet's callbacks.
Run ``python -m simulators.quadcode --help``; see docs/quadcode-integration.md.
"""
