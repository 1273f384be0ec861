"""The dashboard and the alert rules name only metrics the code exports, and the rules load
and fire as meant in the real promtool (Debian's prometheus package; .ci/run installs it)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.unit

ROOT = Path(__file__).parents[2]
OBSERVABILITY = ROOT / "deploy" / "observability"
ALERTS = OBSERVABILITY / "prometheus" / "alerts.yml"
DASHBOARD = OBSERVABILITY / "grafana" / "wallet.json"
DEFINITION = re.compile(r"\b(?:Counter|Gauge|Histogram|Summary)\(\s*\"([a-z_:][a-z0-9_:]*)\"")
NOT_OURS = {"up", "kube_pod_status_ready"}
"""Prometheus's own scrape health, and kube-state-metrics' pod readiness."""
PROMQL_WORDS = {
    "sum", "by", "max", "min", "rate", "increase", "histogram_quantile", "time", "ignoring",
    "group_left", "min_over_time", "le", "bool", "on", "without", "avg",
}  # fmt: skip


def defined_metrics() -> set[str]:
    names = set()
    for path in [*ROOT.glob("libs/**/*.py"), *ROOT.glob("services/**/*.py")]:
        names.update(DEFINITION.findall(path.read_text()))
    return names


def exposed(name: str, defined: set[str]) -> bool:
    """Whether ``name`` is a series a defined metric exposes (``_total`` of a counter,
    ``_bucket``/``_sum``/``_count`` of a histogram)."""
    if name in defined:
        return True
    for suffix in ("_total", "_bucket", "_sum", "_count", "_created"):
        if name.endswith(suffix) and name.removesuffix(suffix) in defined:
            return True
    return False


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (labels, strings and functions left out)."""
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges
    expr = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", expr)  # grouping labels
    words = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr))
    return {w for w in words if w not in PROMQL_WORDS and not w.startswith("__")}


def alert_expressions() -> Iterator[str]:
    for group in yaml.safe_load(ALERTS.read_text())["groups"]:
        for rule in group["rules"]:
            yield rule["expr"]


def dashboard_expressions() -> Iterator[str]:
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        for target in panel.get("targets", []):
            yield target["expr"].replace("$__rate_interval", "5m")


def test_the_definitions_are_found() -> None:
    defined = defined_metrics()
    assert {"ledger_batch_commands", "edge_command_seconds", "reconciler_check_ok"} <= defined


@pytest.mark.parametrize("source", ["alerts", "dashboard"])
def test_every_metric_used_exists_in_the_code(source: str) -> None:
    defined = defined_metrics()
    exprs = list(alert_expressions() if source == "alerts" else dashboard_expressions())
    used = set().union(*(metric_names(e) for e in exprs))
    assert len(used) >= 8
    assert sorted(n for n in used - NOT_OURS if not exposed(n, defined)) == []


def test_a_misspelt_metric_would_be_caught() -> None:
    defined = defined_metrics()
    names = metric_names('sum by (status) (rate(ledger_outcome_total{status="201"}[5m]))')
    assert names == {"ledger_outcome_total"}
    assert not exposed("ledger_outcome_total", defined)


def test_the_dashboard_shows_what_operators_watch() -> None:
    text = DASHBOARD.read_text()
    for metric in (
        "ledger_outcomes_total",
        "edge_command_seconds",
        "ledger_batch_commands",
        "ledger_batch_seconds",
        "accounting_lag_facts",
        "projection_lag_seconds",
        "ledger_dead_letters_total",
        "reconciler_check_ok",
    ):
        assert metric in text, metric


def promtool() -> str:
    found = shutil.which("promtool")
    assert found, "promtool is missing: apt-get install prometheus (.ci/run does)"
    return found


def test_promtool_accepts_the_rules() -> None:
    done = subprocess.run(
        [promtool(), "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 11 rules found" in done.stdout


def test_the_rules_fire_as_their_unit_tests_say() -> None:
    done = subprocess.run(
        [promtool(), "test", "rules", "alerts.test.yml"],
        cwd=ALERTS.parent,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
