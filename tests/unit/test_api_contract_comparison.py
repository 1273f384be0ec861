"""The comparison of our OpenAPI descriptions with Quadcode's files (``python -m api_contract``,
which CI runs against its copy of Quadcode's files), checked on our own files and altered
copies of them: it must see a dropped required field, a retyped property, a missing status,
parameter, operation or security, and a Quadcode operation our client does not call.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from api_contract import (
    QUADCODE_B2B_CLIENT,
    QUADCODE_EXTERNAL,
    QUADCODE_GATEWAY,
    QUADCODE_INTERNAL,
    WALLET_CALLBACKS,
    Spec,
    load,
    operation_differences,
    operations,
    resolve,
)
from api_contract.__main__ import compare, keys_of, main
from quadcode_gateway.client import EXTERNAL_OPERATIONS
from quadcode_gateway.internal import INTERNAL_OPERATIONS

pytestmark = pytest.mark.unit


# -- the comparison itself (always runs: our files against altered copies of themselves) --------


def debit_request_schema(spec: Spec) -> Spec:
    operation = spec["paths"]["/v1/customers/{customer_id}/balances/{balance_id}/debit"]["post"]
    schema: Spec = resolve(spec, operation["requestBody"]["content"]["application/json"]["schema"])
    return schema


@pytest.fixture
def callbacks() -> Spec:
    return load(WALLET_CALLBACKS)


def test_a_description_matches_itself(callbacks: Spec) -> None:
    assert operation_differences(callbacks, callbacks, operations(callbacks)) == []
    gateway = load(QUADCODE_GATEWAY)
    assert operation_differences(gateway, gateway, operations(gateway)) == []


def test_the_comparison_reports_a_required_field_dropped(callbacks: Spec) -> None:
    ours = copy.deepcopy(callbacks)
    debit_request_schema(ours)["required"].remove("comment")
    found = operation_differences(callbacks, ours, operations(callbacks))
    assert any("request: required" in line for line in found), found


def test_the_comparison_reports_a_property_typed_differently(callbacks: Spec) -> None:
    ours = copy.deepcopy(callbacks)
    # A shared schema, so the debit and the credit request both change.
    ours["components"]["schemas"]["MoneyMovementRequest"]["properties"]["amount"] = {
        "type": "number"
    }
    found = operation_differences(callbacks, ours, operations(callbacks))
    assert sum(".amount: type 'string', ours 'number'" in line for line in found) == 2, found


def test_the_comparison_reports_a_missing_status_and_parameter(callbacks: Spec) -> None:
    ours = copy.deepcopy(callbacks)
    get = ours["paths"]["/v1/customers/{customer_id}/balances/{balance_id}"]
    del get["get"]["responses"]["451"]
    get["parameters"] = get["parameters"][:1]
    found = operation_differences(callbacks, ours, operations(callbacks))
    assert any("status 451 missing" in line for line in found), found
    assert any("parameters" in line and "balance_id" in line for line in found), found


def test_the_comparison_reports_a_missing_operation_and_security(callbacks: Spec) -> None:
    ours = copy.deepcopy(callbacks)
    del ours["paths"]["/v1/customers/{customer_id}/balances/{balance_id}/credit"]
    ours["paths"]["/v1/customers/{customer_id}/balances/{balance_id}/debit"]["post"][
        "security"
    ] = []
    found = operation_differences(callbacks, ours, operations(callbacks))
    assert "POST /v1/customers/{customer_id}/balances/{balance_id}/credit: missing" in found
    assert any("debit: security" in line for line in found), found


def quadcode_like(directory: Path, gateway: Spec) -> Path:
    """Quadcode's three files as our own descriptions would be them: the callbacks as the B2B
    client contract, our gateway description split into its external and internal calls."""
    directory.mkdir()
    (directory / QUADCODE_B2B_CLIENT).write_text(WALLET_CALLBACKS.read_text())
    for name, client_operations in (
        (QUADCODE_EXTERNAL, EXTERNAL_OPERATIONS),
        (QUADCODE_INTERNAL, INTERNAL_OPERATIONS),
    ):
        part = copy.deepcopy(gateway)
        paths = {path for _, path in keys_of(client_operations)}
        part["paths"] = {p: item for p, item in part["paths"].items() if p in paths}
        (directory / name).write_text(yaml.safe_dump(part))
    return directory


def test_compare_finds_nothing_against_files_equal_to_ours(tmp_path: Path) -> None:
    assert compare(quadcode_like(tmp_path / "quadcode", load(QUADCODE_GATEWAY))) == []


def test_compare_reports_a_quadcode_operation_our_client_does_not_call(tmp_path: Path) -> None:
    gateway = load(QUADCODE_GATEWAY)
    directory = quadcode_like(tmp_path / "quadcode", gateway)
    internal = load(directory / QUADCODE_INTERNAL)
    internal["paths"]["/v1/b2b-gateway/new-call"] = {"get": {"responses": {"200": {}}}}
    (directory / QUADCODE_INTERNAL).write_text(yaml.safe_dump(internal))
    assert compare(directory) == [
        f"GET /v1/b2b-gateway/new-call: in {QUADCODE_INTERNAL}, not called by our client"
    ]
    assert main([str(directory)]) == 1


def test_a_directory_without_quadcodes_files_is_an_error_not_a_pass(tmp_path: Path) -> None:
    assert main([str(tmp_path)]) == 2
