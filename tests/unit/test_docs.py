"""The README documents every error code and every setting (one place for each fact)."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.settings import EdgeSettings
from ledger.settings import LedgerSettings
from ledger_core.errors import ERRORS
from operator_api.settings import OperatorApiSettings
from projection.settings import ProjectionSettings

pytestmark = pytest.mark.unit

README = (Path(__file__).parents[2] / "README.md").read_text()


def test_every_error_code_is_in_the_readme_table_with_its_status() -> None:
    for err in ERRORS.values():
        assert f"| {err.status} | `{err.code}` |" in README, err.code


def test_every_setting_is_documented() -> None:
    for cls in (EdgeSettings, LedgerSettings, ProjectionSettings, OperatorApiSettings):
        for name in cls.model_fields:
            assert f"`WALLET_{name.upper()}`" in README, name
