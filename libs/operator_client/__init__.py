"""A Python client of the wallet's operator API: every request signed with an operator API key,
as Swapgate's API v2 requests are (see :mod:`operator_client.client`)."""

from operator_client.client import Credentials, OperatorClient, load_credentials

__all__ = ["Credentials", "OperatorClient", "load_credentials"]
