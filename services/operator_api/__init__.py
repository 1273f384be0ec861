"""The operator-facing HTTP API: what the B2B client's website and back office call.

It starts with one endpoint, ``POST /v1/customers/{customer_id}/trading-room``, which opens
Quadcode's trading room for a customer (registering them at Quadcode on the first visit) and
answers the iframe URL or a message the website can show. Run it with ``python -m operator_api``.
"""
