"""The README documents every error code and every setting (one place for each fact)."""

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

README = (Path(__file__).parents[2] / "README.md").read_text()


def test_every_error_code_is_in_the_readme_table_with_its_status() -> None:
    for err in ERRORS.values():
        assert f"| {err.status} | `{err.code}` |" in README, err.code


def test_every_setting_is_documented() -> None:
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
            assert f"`WALLET_{name.upper()}`" in README, name


def test_the_consumer_contract_explains_every_fact_type_and_entry_kind() -> None:
    docs = Path(__file__).parents[2] / "docs" / "events"
    schema = orjson.loads((docs / "ledger-event-v1.schema.json").read_bytes())
    contract = (docs / "consumer-contract.md").read_text()
    headings = [line for line in contract.splitlines() if line.startswith("### ")]
    for fact_type in schema["properties"]["type"]["enum"]:
        assert any(f"`{fact_type}`" in h for h in headings), fact_type
    for kind in ("debit", "credit", "deposit", "withdrawal"):
        assert f"| `{kind}` |" in contract, kind
    for system_kind in SYSTEM_KINDS:
        assert f"| `{system_kind}` |" in contract, system_kind
