"""A Swapgate stand-in: rates, signed orders with a timed lifecycle, API keys, test hooks.

Run it with ``python -m simulators.swapgate --host 127.0.0.1 --port 8090``. Behaviour the real
Swapgate does not document (order status endpoint, key deactivation, the timestamp window) is
described in ``docs/exchange-swapgate.md``.
"""
