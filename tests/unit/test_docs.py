"""docs/ documents every error code and every setting, each in one table (one place for each fact):
docs/errors.md and docs/configuration.md, which the README links to."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from accounting.settings import AccountingSettings
from edge.settings import EdgeSettings
from ledger.republish import RepublishSettings
from ledger.settings import LedgerSettings
from ledger_core.errors import ERRORS
from ledger_core.state import SYSTEM_KINDS
from operator_api.settings import OperatorApiSettings
from projection.settings import ProjectionSettings
from reconciler.settings import ReconcilerSettings

pytestmark = pytest.mark.unit

ROOT = Path(__file__).parents[2]
ERRORS_DOC = (ROOT / "docs" / "errors.md").read_text()
CONFIGURATION_DOC = (ROOT / "docs" / "configuration.md").read_text()
README = (ROOT / "README.md").read_text()


def test_every_error_code_is_in_the_error_table_with_its_status() -> None:
    for err in ERRORS.values():
        assert f"| {err.status} | `{err.code}` |" in ERRORS_DOC, err.code


def test_the_error_table_holds_no_code_the_code_does_not_have() -> None:
    table = ERRORS_DOC.split("<!-- errors:start -->")[1].split("<!-- errors:end -->")[0]
    rows = [
        line.split("|")
        for line in table.splitlines()
        if line.startswith("| 4") or line.startswith("| 5")
    ]
    listed = {row[2].strip().strip("`"): int(row[1]) for row in rows}
    assert listed == {err.code: err.status for err in ERRORS.values()}


def test_every_setting_is_in_the_configuration_table() -> None:
    for cls in (
        EdgeSettings,
        LedgerSettings,
        ProjectionSettings,
        OperatorApiSettings,
        AccountingSettings,
        RepublishSettings,
        ReconcilerSettings,
    ):
        for name in cls.model_fields:
            assert f"| `WALLET_{name.upper()}` |" in CONFIGURATION_DOC, name


def test_the_consumer_contract_explains_every_fact_type_and_entry_kind() -> None:
    docs = ROOT / "docs" / "events"
    schema = orjson.loads((docs / "ledger-event-v1.schema.json").read_bytes())
    contract = (docs / "consumer-contract.md").read_text()
    headings = [line for line in contract.splitlines() if line.startswith("### ")]
    for fact_type in schema["properties"]["type"]["enum"]:
        assert any(f"`{fact_type}`" in h for h in headings), fact_type
    for kind in ("debit", "credit", "deposit", "withdrawal"):
        assert f"| `{kind}` |" in contract, kind
    for system_kind in SYSTEM_KINDS:
        assert f"| `{system_kind}` |" in contract, system_kind


def test_the_readme_links_to_the_error_and_configuration_tables() -> None:
    # The tables moved out of the README; a reader must still find them from it.
    assert "(docs/errors.md)" in README
    assert "(docs/configuration.md)" in README


def test_the_readme_orients_in_at_most_200_lines() -> None:
    assert len(README.splitlines()) <= 200
