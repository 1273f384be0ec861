"""Our OpenAPI descriptions (docs/api/) against Quadcode's own files, where those are present.

CI has Quadcode's files in ``../shared/contracts/quadcode/`` (or ``$QUADCODE_CONTRACTS_DIR``); a
plain clone does not, and then the comparisons skip. For every operation of Quadcode's that our
wallet serves or our client calls, ours must have the same path, method and parameters, every
status Quadcode lists, and the same required fields and property types wherever Quadcode gives a
JSON schema. The last tests check the comparison itself on our own files, so they always run.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from api_descriptions import (
    QUADCODE_B2B_CLIENT,
    QUADCODE_EXTERNAL,
    QUADCODE_GATEWAY,
    QUADCODE_INTERNAL,
    WALLET_CALLBACKS,
    Spec,
    load,
    operation_differences,
    operations,
    quadcode_contracts_dir,
    resolve,
)
from quadcode_gateway.client import EXTERNAL_OPERATIONS
from quadcode_gateway.internal import INTERNAL_OPERATIONS
from quadcode_gateway.transport import Operation

pytestmark = pytest.mark.unit


def quadcode_file(name: str) -> Spec:
    """One of Quadcode's files, or a skip saying why there is none."""
    directory = quadcode_contracts_dir()
    path = directory / name
    if not path.is_file():
        pytest.skip(
            f"Quadcode's contract files are not at {directory} (a plain clone has no ../shared; "
            "set QUADCODE_CONTRACTS_DIR or run where ../shared exists, as CI does)"
        )
    return load(path)


def keys_of(client_operations: tuple[Operation, ...]) -> set[tuple[str, str]]:
    return {(op.method, op.path) for op in client_operations}


def test_our_callbacks_match_quadcodes_b2b_client_contract() -> None:
    theirs = quadcode_file(QUADCODE_B2B_CLIENT)
    # The wallet serves every operation of this file: all three callbacks.
    assert operation_differences(theirs, load(WALLET_CALLBACKS), operations(theirs)) == []


@pytest.mark.parametrize(
    ("file_name", "client_operations"),
    [(QUADCODE_EXTERNAL, EXTERNAL_OPERATIONS), (QUADCODE_INTERNAL, INTERNAL_OPERATIONS)],
)
def test_our_gateway_calls_match_quadcodes_gateway_contract(
    file_name: str, client_operations: tuple[Operation, ...]
) -> None:
    theirs = quadcode_file(file_name)
    called = keys_of(client_operations)
    # Only what our client calls; a call Quadcode's file lacks is reported too.
    assert operation_differences(theirs, load(QUADCODE_GATEWAY), called) == []


@pytest.mark.parametrize(
    ("file_name", "client_operations"),
    [(QUADCODE_EXTERNAL, EXTERNAL_OPERATIONS), (QUADCODE_INTERNAL, INTERNAL_OPERATIONS)],
)
def test_our_client_calls_every_operation_of_quadcodes_gateway_files(
    file_name: str, client_operations: tuple[Operation, ...]
) -> None:
    """A new operation in Quadcode's files shows up here, not silently."""
    theirs = quadcode_file(file_name)
    assert set(operations(theirs)) - keys_of(client_operations) == set()


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


def test_a_missing_quadcode_directory_skips_with_the_reason(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("QUADCODE_CONTRACTS_DIR", str(tmp_path / "absent"))
    with pytest.raises(pytest.skip.Exception, match="Quadcode's contract files are not at"):
        quadcode_file(QUADCODE_B2B_CLIENT)
