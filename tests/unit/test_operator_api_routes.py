"""Every route the operator API serves under ``/v1/`` is in its OpenAPI description
(docs/api/operator-api.yaml), and every operation the description names is served.

The routes are read from the application ``build_app`` makes (nothing is started), so a route
added to the code without its description, or described but never wired, fails here. The
console's static files (``/console...``) are outside ``/v1/``, public and not part of the API,
and the operational routes (``/health``, ``/ready``, ``/metrics``) are on a port of their own.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

import pytest
from aiohttp import hdrs
from cryptography.fernet import Fernet

from api_contract import OPERATOR_API, load, operations
from operator_api.app import build_app
from operator_api.settings import OperatorApiSettings
from quadcode_gateway import generate_keypair
from quadcode_gateway.tokens import Environment

pytestmark = pytest.mark.unit

Operation = tuple[str, str]  # (METHOD, path template)

PARAMETER = re.compile(r"\{[^}]*\}")


def shape(path: str) -> str:
    """A path template with its parameters unnamed: ``{id}`` and ``{exchange_id}`` match the
    same requests, so a route and its description may name a parameter differently."""
    return PARAMETER.sub("{}", path)


def served_operations(settings: OperatorApiSettings) -> set[Operation]:
    """(METHOD, path template) of every ``/v1/`` route of the operator API's application,
    without the HEAD route aiohttp adds beside each GET."""
    app = build_app(settings)
    served = set()
    for route in app.router.routes():
        path = route.resource.canonical if route.resource is not None else ""
        if path.startswith("/v1/") and route.method != hdrs.METH_HEAD:
            served.add((route.method, path))
    return served


def undescribed(served: Iterable[Operation], described: Iterable[Operation]) -> list[Operation]:
    """The served operations whose method and path shape the description does not have."""
    shapes = {(method, shape(path)) for method, path in described}
    return sorted(op for op in served if (op[0], shape(op[1])) not in shapes)


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> OperatorApiSettings:
    # Only what start-up reads (master keys, our Quadcode key); nothing is connected to.
    generate_keypair(tmp_path / "ours-private.pem", tmp_path / "ours-public.pem")
    for name in [n for n in os.environ if n.startswith("WALLET_")]:
        monkeypatch.delenv(name)
    return OperatorApiSettings(
        operator_master_keys=Fernet.generate_key().decode(),
        quadcode_base_url="http://127.0.0.1:9",
        quadcode_issuer="test",
        quadcode_environment=Environment.SANDBOX,
        quadcode_private_key_path=str(tmp_path / "ours-private.pem"),
    )


def test_every_v1_route_of_the_app_is_in_the_operator_description(
    settings: OperatorApiSettings,
) -> None:
    served = served_operations(settings)
    assert len(served) >= 30  # the app was built with its routes, not an empty router
    assert undescribed(served, operations(load(OPERATOR_API))) == []


def test_every_described_operation_is_served(settings: OperatorApiSettings) -> None:
    described = operations(load(OPERATOR_API))
    assert undescribed(described, served_operations(settings)) == []


def test_a_route_missing_from_the_description_is_reported() -> None:
    described = [("GET", "/v1/customers/{customer_id}/exchanges/{exchange_id}")]
    served = [
        ("GET", "/v1/customers/{customer_id}/exchanges/{id}"),  # same shape: described
        ("POST", "/v1/customers/{customer_id}/exchanges/{id}"),  # another method
        ("GET", "/v1/customers/{customer_id}/exchanges"),  # another path
    ]
    assert undescribed(served, described) == [
        ("GET", "/v1/customers/{customer_id}/exchanges"),
        ("POST", "/v1/customers/{customer_id}/exchanges/{id}"),
    ]
