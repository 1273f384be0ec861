"""``GET /v1/reconciliation``'s answer from the reconciler's ``/ready``, without I/O: the report
the reconciler itself builds (``Reconciler.ready``) becomes a 200 whether its checks passed or
not, conforming to the operator API's description; anything that is not its report is refused
(the route then answers 503 ``reconciler_unreachable``, see
``tests/integration/test_operator_reconciliation_relay.py``). And ``wallet reconciliation`` sends
that request."""

from __future__ import annotations

from typing import Any, cast

import orjson
import pytest
from click.testing import CliRunner
from openapi_core import OpenAPI
from openapi_core.testing import MockRequest, MockResponse

from api_contract import OPERATOR_API
from ledger_core.errors import ERRORS
from operator_api.reconciliation import (
    NotAReport,
    OperatorReconciliationSettings,
    reconciliation_view,
)
from reconciler.comparison import ABSENT, ERROR, FAILED, OK, Difference, Verdict
from reconciler.readings import TopicReader
from reconciler.rounds import Reconciler
from wallet_cli import main, operator_commands
from wallet_cli.operator_commands import ApiRequest

pytestmark = pytest.mark.unit

INTERVAL = 10.0
SIGNED = {
    "x-api-public-key": "ZgzycV6Sf78BZKuyIAiz+0Bor002+0/rx1gLKsmYCsY=",
    "x-api-timestamp": "1722866058427",
    "x-api-signature": "c2lnbmF0dXJl",
}
DRIFT = Difference(
    "amount_differs",
    {"customer_id": "c-1", "balance_id": "c-1_USD"},
    "10000",
    "10001",
)


def reconciler_answer(verdicts: dict[str, Verdict], *, ran: bool = True) -> tuple[int, bytes]:
    """What the reconciler's /ready answers after a round with these verdicts (its own code)."""
    now = [1000.0]
    reconciler = Reconciler(
        ledger_dsn="postgresql://unused",
        books_dsn="postgresql://unused",
        topic_prefix="",
        kafka=cast(TopicReader, None),  # no check runs here
        stall_seconds=60,
        unpublished_seconds=30,
        clock=lambda: now[0],
    )
    reconciler.verdicts = dict(verdicts)
    if ran:
        reconciler.last_run_at = 1_767_225_600.5
        reconciler.last_run_monotonic = now[0]
    ok, body = reconciler.ready(INTERVAL)
    return (200 if ok else 503), orjson.dumps(body)


ALL_OK = {
    "trial_balance": Verdict(OK, figures={"currencies": 2}),
    "projection": Verdict(OK, figures={"balances": 4, "lagging": 0, "max_lag": 0}),
    "books": Verdict(ABSENT),
    "unpublished": Verdict(OK, figures={"unrecorded": 0, "partitions": 8}),
    "offsets": Verdict(OK, figures={"offsets": 16}),
}


@pytest.fixture(scope="module")
def operator_api() -> OpenAPI:
    return OpenAPI.from_file_path(str(OPERATOR_API))


def conform(operator_api: OpenAPI, status: int, body: bytes) -> None:
    request = MockRequest("http://operator.example", "get", "/v1/reconciliation", headers=SIGNED)
    operator_api.validate_request(request)
    operator_api.validate_response(
        request,
        MockResponse(
            body,
            status_code=status,
            headers={"Cache-Control": "no-store"},
            content_type="application/json",
        ),
    )


def test_a_ready_reconciler_is_answered_ready_with_its_checks_and_details(
    operator_api: OpenAPI,
) -> None:
    view = reconciliation_view(*reconciler_answer(ALL_OK))
    assert view["reachable"] is True and view["ready"] is True
    assert view["checks"] == {"fresh": True, **{name: True for name in ALL_OK}}
    assert view["details"]["projection"] == {
        "status": "ok",
        "balances": 4,
        "lagging": 0,
        "max_lag": 0,
    }
    assert view["details"]["books"] == {"status": "absent"}
    assert view["lastRunAt"] == "2026-01-01T00:00:00.500000+00:00"
    conform(operator_api, 200, orjson.dumps(view))


def test_a_failed_check_is_data_not_ready_with_its_first_difference(
    operator_api: OpenAPI,
) -> None:
    verdicts = ALL_OK | {"projection": Verdict(FAILED, DRIFT, {"balances": 4, "lagging": 0})}
    status, body = reconciler_answer(verdicts)
    assert status == 503  # the reconciler's own answer: a check failed
    view = reconciliation_view(status, body)
    assert view["ready"] is False
    assert view["checks"]["projection"] is False and view["checks"]["trial_balance"] is True
    assert view["details"]["projection"]["status"] == "failed"
    assert view["details"]["projection"]["difference"] == {
        "reason": "amount_differs",
        "customer_id": "c-1",
        "balance_id": "c-1_USD",
        "expected": "10000",
        "found": "10001",
    }
    conform(operator_api, 200, orjson.dumps(view))


def test_a_check_that_could_not_run_is_not_ready_without_a_difference(
    operator_api: OpenAPI,
) -> None:
    verdicts = ALL_OK | {"offsets": Verdict(ERROR, figures={"error": "KafkaConnectionError"})}
    view = reconciliation_view(*reconciler_answer(verdicts))
    assert view["ready"] is False and view["checks"]["offsets"] is False
    assert view["details"]["offsets"] == {"status": "error", "error": "KafkaConnectionError"}
    conform(operator_api, 200, orjson.dumps(view))


def test_before_its_first_round_the_reconciler_is_not_ready_and_has_no_details(
    operator_api: OpenAPI,
) -> None:
    view = reconciliation_view(*reconciler_answer({}, ran=False))
    assert view == {
        "reachable": True,
        "ready": False,
        "checks": {"fresh": False},
        "details": {},
        "lastRunAt": None,
    }
    conform(operator_api, 200, orjson.dumps(view))


def test_the_unreachable_answer_conforms_to_the_description(operator_api: OpenAPI) -> None:
    assert ERRORS["reconciler_unreachable"].status == 503
    body = orjson.dumps({"error": "reconciler_unreachable", "message": "did not answer"})
    conform(operator_api, 503, body)


def test_a_view_without_its_fields_does_not_conform(operator_api: OpenAPI) -> None:
    """The conformance checks above can fail: a view that lost ``lastRunAt``."""
    view = reconciliation_view(*reconciler_answer(ALL_OK))
    del view["lastRunAt"]
    with pytest.raises(Exception, match=r"(?i)valid|required"):
        conform(operator_api, 200, orjson.dumps(view))


def _report(**changes: Any) -> bytes:
    _, body = reconciler_answer(ALL_OK)
    report = orjson.loads(body) | changes
    return orjson.dumps({k: v for k, v in report.items() if v is not ...})


@pytest.mark.parametrize(
    ("status", "body"),
    [
        pytest.param(404, b'{"error": "route_not_found"}', id="another-status"),
        pytest.param(502, b"<html>Bad Gateway</html>", id="a-proxy-page"),
        pytest.param(200, b"<html>ready</html>", id="not-json"),
        pytest.param(200, b"[]", id="not-an-object"),
        pytest.param(200, _report(status="not_ready"), id="200-saying-not-ready"),
        pytest.param(503, _report(), id="503-saying-ready"),
        pytest.param(200, _report(checks=...), id="no-checks"),
        pytest.param(200, _report(checks={"projection": "yes"}), id="checks-not-booleans"),
        pytest.param(200, _report(details=[]), id="details-not-an-object"),
        pytest.param(200, _report(details={"other": {"status": "ok"}}), id="detail-of-no-check"),
        pytest.param(200, _report(details={"projection": {"ok": True}}), id="detail-no-status"),
        pytest.param(200, _report(last_run_at=17), id="last-run-not-a-time"),
    ],
)
def test_an_answer_that_is_not_the_reconcilers_report_is_refused(status: int, body: bytes) -> None:
    with pytest.raises(NotAReport):
        reconciliation_view(status, body)


def test_the_reconciler_url_must_be_http_without_query_or_fragment() -> None:
    settings = OperatorReconciliationSettings(operator_api_reconciler_url="https://recon:8443/")
    assert settings.operator_api_reconciler_url == "https://recon:8443/"
    for wrong in ("recon:18093", "ftp://recon", "http://recon/?x=1", "http://recon/#ready", ""):
        with pytest.raises(ValueError, match="operator_api_reconciler_url"):
            OperatorReconciliationSettings(operator_api_reconciler_url=wrong)


def test_wallet_reconciliation_sends_the_signed_read(monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[ApiRequest] = []

    async def send(credentials: str, request: ApiRequest) -> tuple[int, Any]:
        assert credentials == "/creds.json"
        sent.append(request)
        return 200, {"reachable": True, "ready": True}

    monkeypatch.setattr(operator_commands, "_send", send)
    result = CliRunner().invoke(
        main.cli, ["reconciliation", "--credentials", "/creds.json", "--json"]
    )
    assert result.exit_code == 0, result.output
    assert sent == [ApiRequest("GET", "/v1/reconciliation")]
    assert orjson.loads(result.output)["ready"] is True
