"""The deployment files: every Kubernetes manifest is valid against the Kubernetes JSON schemas
(kubernetes-validate ships them, so this runs offline), and follows our own rules."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from accounting.settings import AccountingSettings
from edge.settings import EdgeSettings
from exchange.settings import ExchangeSettings
from ledger.republish import RepublishSettings
from ledger.settings import LedgerSettings
from operator_api.key_settings import OperatorKeySettings
from operator_api.settings import OperatorApiSettings
from projection.settings import ProjectionSettings
from reconciler.settings import ReconcilerSettings
from wallet_cli.delegation import SERVICES

pytestmark = pytest.mark.unit

ROOT = Path(__file__).parents[2]
K8S = ROOT / "deploy" / "k8s"
KUBERNETES_VERSION = "1.30"  # the oldest version we support: pod-index labels need 1.28
SETTINGS = {
    f"WALLET_{name.upper()}"
    for cls in (
        EdgeSettings,
        LedgerSettings,
        ProjectionSettings,
        OperatorApiSettings,
        OperatorKeySettings,
        ExchangeSettings,
        AccountingSettings,
        RepublishSettings,
        ReconcilerSettings,
    )
    for name in cls.model_fields
}
WORKLOADS = ("Deployment", "StatefulSet")


def manifests() -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in sorted(K8S.rglob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                yield path, doc


def containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    spec = doc["spec"]["template"]["spec"]
    found: list[dict[str, Any]] = spec["containers"]
    return found


def test_every_manifest_is_valid_against_the_kubernetes_schemas() -> None:
    docs = list(manifests())
    assert len(docs) >= 15
    for path, doc in docs:
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{path.name} {doc['kind']}/{doc['metadata']['name']}: {exc.message}")


def test_a_field_the_schema_does_not_know_is_caught() -> None:
    """The validation can fail: a misspelt field in strict mode is an error."""
    _, doc = next((p, d) for p, d in manifests() if d["kind"] == "Deployment")
    broken = yaml.safe_load(yaml.safe_dump(doc))
    broken["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())
    files = {p.name for p in (K8S / "base").glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files


def test_every_service_runs_from_the_image_with_probes_on_its_operational_port() -> None:
    seen = set()
    for _, doc in manifests():
        if doc["kind"] not in WORKLOADS:
            continue
        (container,) = containers(doc)
        assert container["args"][:1] == ["run"], doc["metadata"]["name"]
        seen.add(container["args"][1])
        ops = {p["name"]: p["containerPort"] for p in container["ports"]}["ops"]
        assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "ops"}
        assert container["livenessProbe"]["httpGet"] == {"path": "/health", "port": "ops"}
        # The port the service binds is the port probed: its ops-port setting says so.
        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        assert str(ops) in env.values(), (doc["metadata"]["name"], env)
        assert container["resources"]["requests"] and container["resources"]["limits"]
        assert doc["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
        # Longer than the server's 10 s drain of in-flight requests plus any preStop pause.
        grace = doc["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        assert grace >= 20 + (5 if "lifecycle" in container else 0)
    assert seen == set(SERVICES)


def test_the_ledger_writers_have_a_disruption_budget() -> None:
    budgets = [d for _, d in manifests() if d["kind"] == "PodDisruptionBudget"]
    ledger = [b for b in budgets if b["metadata"]["name"] == "wallet-ledger"]
    assert ledger and ledger[0]["spec"]["minAvailable"] == 1
    assert ledger[0]["spec"]["selector"]["matchLabels"] == {
        "app.kubernetes.io/name": "wallet-ledger"
    }


def test_every_variable_and_config_key_is_a_real_setting() -> None:
    names: list[str] = []
    for _, doc in manifests():
        if doc["kind"] in ("ConfigMap", "Secret"):
            data = {**doc.get("data", {}), **doc.get("stringData", {})}
            names += [key for key in data if key.startswith("WALLET_")]
        if doc["kind"] in (*WORKLOADS, "Job"):
            names += [e["name"] for c in containers(doc) for e in c.get("env", [])]
    assert names
    assert [n for n in names if n not in SETTINGS] == []


def test_secrets_hold_no_value_and_the_image_bakes_none_in() -> None:
    for _, doc in manifests():
        if doc["kind"] == "Secret":
            assert set(doc.get("stringData", {}).values()) == {""}, doc["metadata"]["name"]
            assert "data" not in doc
    containerfile = (ROOT / "deploy" / "container" / "Containerfile").read_text()
    assert not re.search(r"(SECRET|MASTER_KEYS|PG_DSN|PRIVATE_KEY)", containerfile)
    assert re.search(r"^USER 10001", containerfile, re.M)
    assert re.search(r"^HEALTHCHECK .*?/health", containerfile, re.M | re.S)
    assert re.search(r'^ENTRYPOINT \["wallet"\]', containerfile, re.M)
