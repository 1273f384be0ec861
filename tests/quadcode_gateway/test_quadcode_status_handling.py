"""Every status the contracts document maps to a typed error; retry timing is bounded."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from quadcode_gateway import (
    AccessRestricted,
    BadRequest,
    BalanceCurrencyMismatch,
    CountryRestricted,
    CurrencyRestricted,
    CustomerAlreadyExists,
    CustomerBlocked,
    CustomerNotFound,
    Forbidden,
    InsufficientFunds,
    RateLimited,
    RetryPolicy,
    ServerError,
    Unauthorized,
    UnexpectedResponse,
    UnprocessableEntity,
    UserAlreadyExists,
    UserNotFound,
)
from quadcode_gateway.client import (
    CREATE_CUSTOMER,
    CREATE_LOGIN_URL,
    EXTERNAL_OPERATIONS,
)
from quadcode_gateway.errors import STATUS_HANDLING, FieldError
from quadcode_gateway.internal import CREATE_USER, INTERNAL_OPERATIONS, WITHDRAW
from quadcode_gateway.transport import Operation, error_for_status, parse_retry_after

REPO = Path(__file__).resolve().parents[2]


def documented(spec_path: Path, tag: str) -> list[tuple[str, str, int]]:
    spec = yaml.safe_load(spec_path.read_text())
    found = []
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if method == "parameters" or tag not in operation["tags"]:
                continue
            for status in operation["responses"]:
                found.append((method.upper(), path, int(status)))
    return found


def operation_for(operations: tuple[Operation, ...], method: str, path: str) -> Operation:
    matches = [op for op in operations if op.method == method and op.path == path]
    assert len(matches) == 1, f"no single client operation for {method} {path}"
    return matches[0]


@pytest.mark.unit
@pytest.mark.parametrize(
    ("tag", "operations"),
    [
        ("external balances", EXTERNAL_OPERATIONS),
        ("internal balances", INTERNAL_OPERATIONS),
    ],
)
def test_every_documented_operation_and_status_is_handled(
    gateway_description: Path, tag: str, operations: tuple[Operation, ...]
) -> None:
    entries = documented(gateway_description, tag)
    covered = {(method, path) for method, path, _ in entries}
    assert covered == {(op.method, op.path) for op in operations}
    for method, path, status in entries:
        operation = operation_for(operations, method, path)
        if status == operation.success:
            continue
        assert status < 200 or status >= 300, f"{method} {path}: second success status {status}"
        error = error_for_status(operation, status, b"")
        assert not isinstance(error, UnexpectedResponse), (method, path, status)
        assert error.operation == operation.name


@pytest.mark.unit
@pytest.mark.parametrize(
    ("operation", "status", "body", "expected"),
    [
        (CREATE_LOGIN_URL, 400, b"", BadRequest),
        (CREATE_LOGIN_URL, 401, b"", Unauthorized),
        (CREATE_LOGIN_URL, 403, b"", Forbidden),
        (CREATE_LOGIN_URL, 404, b"", CustomerNotFound),
        (CREATE_LOGIN_URL, 409, b"", BalanceCurrencyMismatch),
        (CREATE_CUSTOMER, 409, b"", CustomerAlreadyExists),
        (CREATE_USER, 409, b"", UserAlreadyExists),
        (WITHDRAW, 404, b"", UserNotFound),
        (WITHDRAW, 402, b"", InsufficientFunds),
        (CREATE_LOGIN_URL, 418, b"", CustomerBlocked),
        (CREATE_LOGIN_URL, 429, b"", RateLimited),
        (CREATE_LOGIN_URL, 500, b"oops", ServerError),
        (CREATE_LOGIN_URL, 503, b"", ServerError),
        (CREATE_LOGIN_URL, 302, b"", UnexpectedResponse),
    ],
)
def test_status_maps_to_its_error(
    operation: Operation, status: int, body: bytes, expected: type[Exception]
) -> None:
    error = error_for_status(operation, status, body)
    assert type(error) is expected
    assert error.status == status


@pytest.mark.unit
@pytest.mark.parametrize(
    ("body", "expected", "reason"),
    [
        (
            {"error": "customer_country_restriction", "message": "m"},
            CountryRestricted,
            "customer_country_restriction",
        ),
        (
            {"error": "customer_currency_restriction", "message": "m"},
            CurrencyRestricted,
            "customer_currency_restriction",
        ),
        (
            {"error": "user_country_restriction", "message": "m"},
            CountryRestricted,
            "user_country_restriction",
        ),
        ({"error": "something_new"}, AccessRestricted, "something_new"),
        (None, AccessRestricted, "unknown"),
    ],
)
def test_451_reason_picks_country_or_currency(
    body: Any, expected: type[AccessRestricted], reason: str
) -> None:
    raw = orjson.dumps(body) if body is not None else b""
    error = error_for_status(CREATE_LOGIN_URL, 451, raw)
    assert type(error) is expected
    assert isinstance(error, AccessRestricted) and error.reason == reason


@pytest.mark.unit
def test_422_field_errors_are_parsed() -> None:
    body = {
        "country_code": {"code": "unknown_country_code", "message": "Unknown."},
        "ip": {"code": "invalid_ip_format", "message": "Bad IP."},
        "junk": "not an entry",
    }
    error = error_for_status(CREATE_LOGIN_URL, 422, orjson.dumps(body))
    assert isinstance(error, UnprocessableEntity)
    assert error.field_errors == {
        "country_code": FieldError("unknown_country_code", "Unknown."),
        "ip": FieldError("invalid_ip_format", "Bad IP."),
    }


@pytest.mark.unit
def test_backoff_grows_is_capped_and_jittered() -> None:
    policy = RetryPolicy(max_attempts=6, base_delay=0.2, max_delay=1.0)
    assert policy.backoff(1, 0.0) == pytest.approx(0.1)
    assert policy.backoff(1, 1.0) == pytest.approx(0.2)
    assert policy.backoff(2, 0.5) == pytest.approx(0.3)
    assert all(0.5 <= policy.backoff(n, j) <= 1.0 for n in (4, 5, 30) for j in (0.0, 0.3, 1.0))


@pytest.mark.unit
def test_retry_policy_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError):
        RetryPolicy(base_delay=2.0, max_delay=1.0)


@pytest.mark.unit
def test_retry_after_reads_seconds_and_http_dates() -> None:
    now = 1_700_000_000.0
    in_five = format_datetime(datetime.fromtimestamp(now + 5, tz=UTC), usegmt=True)
    past = format_datetime(datetime.fromtimestamp(now - 60, tz=UTC), usegmt=True)
    assert parse_retry_after("3", now) == 3.0
    assert parse_retry_after(" 0 ", now) == 0.0
    assert parse_retry_after(in_five, now) == pytest.approx(5.0)
    assert parse_retry_after(past, now) == 0.0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after("-1", now) is None
    assert parse_retry_after(None, now) is None


@pytest.mark.unit
def test_integration_doc_lists_every_status_the_client_handles() -> None:
    doc = (REPO / "docs" / "quadcode-integration.md").read_text()
    rows = {
        match.group(1).strip()
        for match in re.finditer(r"^\|\s*`?([^|`]+?)`?\s*\|", doc, flags=re.MULTILINE)
    }
    missing = [entry.status for entry in STATUS_HANDLING if entry.status not in rows]
    assert not missing, f"docs/quadcode-integration.md lacks rows for {missing}"
