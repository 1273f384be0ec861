"""The project's own OpenAPI descriptions (docs/api/), and their comparison with Quadcode's.

Tests validate traffic against these files, never against Quadcode's, so a clone of the
repository has everything it needs. Quadcode's files, where they are at hand (CI has them),
are compared with ours by ``python -m api_contract DIR`` (``.ci/run`` does it).

The comparison is deliberately narrow: for each operation of Quadcode's that we serve or call,
ours has the same path, method and parameters, every status Quadcode lists, and, wherever
Quadcode gives a JSON schema, the same required fields and the same property types (recursively).
Ours may add statuses, error bodies and optional properties Quadcode leaves open.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
API_DIR = REPO / "docs" / "api"
WALLET_CALLBACKS = API_DIR / "wallet-callbacks.yaml"
OPERATOR_API = API_DIR / "operator-api.yaml"
QUADCODE_GATEWAY = API_DIR / "quadcode-gateway.yaml"
DESCRIPTIONS = (WALLET_CALLBACKS, OPERATOR_API, QUADCODE_GATEWAY)

# Quadcode's contract files, by name.
QUADCODE_B2B_CLIENT = "b2b-client-external-balance-openapi.yaml"
QUADCODE_EXTERNAL = "quadcode-external-balance-openapi.yaml"
QUADCODE_INTERNAL = "quadcode-internal-balance-openapi.yaml"

METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")
JSON = "application/json"

Spec = dict[str, Any]
OperationKey = tuple[str, str]  # (METHOD, path template)


def load(path: Path) -> Spec:
    """A YAML description as a dict."""
    loaded: Spec = yaml.safe_load(path.read_text())
    return loaded


def resolve(spec: Spec, node: Any) -> Any:
    """``node`` with local ``$ref``s followed (``#/components/...``)."""
    while isinstance(node, dict) and "$ref" in node:
        reference = node["$ref"]
        assert reference.startswith("#/"), f"only local references are used: {reference}"
        node = spec
        for part in reference[2:].split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def operations(spec: Spec) -> dict[OperationKey, Spec]:
    """Every operation, keyed by (METHOD, path template)."""
    found = {}
    for path, item in spec["paths"].items():
        item = resolve(spec, item)
        for method in METHODS:
            if method in item:
                found[(method.upper(), path)] = item[method]
    return found


def parameters(spec: Spec, key: OperationKey) -> dict[tuple[str, str], Spec]:
    """An operation's parameters (path level and operation level), keyed by (name, in)."""
    method, path = key
    item = resolve(spec, spec["paths"][path])
    found = {}
    for parameter in [*item.get("parameters", []), *item[method.lower()].get("parameters", [])]:
        parameter = resolve(spec, parameter)
        found[(parameter["name"], parameter["in"])] = parameter
    return found


def json_schema(spec: Spec, holder: Any) -> Any:
    """The JSON schema of a request body or response, or None if it declares none."""
    content = resolve(spec, holder).get("content") or {}
    media = content.get(JSON)
    return None if media is None else media.get("schema")


def security_schemes(spec: Spec, operation: Spec) -> set[tuple[str, str]]:
    """(type, scheme) of the schemes an operation requires (its own, else the global ones)."""
    requirements: list[dict[str, Any]] = (
        operation["security"] if "security" in operation else spec.get("security", [])
    )
    schemes: dict[str, Any] = spec.get("components", {}).get("securitySchemes", {})
    found = set()
    for requirement in requirements:
        for name in requirement:
            scheme = schemes[name]
            found.add((scheme.get("type", ""), scheme.get("scheme", "").lower()))
    return found


def schema_differences(
    where: str, theirs_spec: Spec, theirs: Any, ours_spec: Spec, ours: Any
) -> list[str]:
    """Where ``ours`` lacks a property of ``theirs``, types one differently, or requires other
    fields (recursively through properties and array items)."""
    t, o = resolve(theirs_spec, theirs), resolve(ours_spec, ours)
    found = []
    if t.get("type") != o.get("type"):
        found.append(f"{where}: type {t.get('type')!r}, ours {o.get('type')!r}")
    if "format" in t and t["format"] != o.get("format"):
        found.append(f"{where}: format {t['format']!r}, ours {o.get('format')!r}")
    if sorted(t.get("required", [])) != sorted(o.get("required", [])):
        found.append(
            f"{where}: required {sorted(t.get('required', []))}, "
            f"ours {sorted(o.get('required', []))}"
        )
    ours_properties = o.get("properties", {})
    for name, prop in t.get("properties", {}).items():
        if name not in ours_properties:
            found.append(f"{where}.{name}: missing")
        else:
            found += schema_differences(
                f"{where}.{name}", theirs_spec, prop, ours_spec, ours_properties[name]
            )
    if "items" in t:
        if "items" not in o:
            found.append(f"{where}[]: items missing")
        else:
            found += schema_differences(
                f"{where}[]", theirs_spec, t["items"], ours_spec, o["items"]
            )
    return found


def operation_differences(
    theirs_spec: Spec, ours_spec: Spec, keys: Iterable[OperationKey]
) -> list[str]:
    """How our description departs from Quadcode's, for the operations ``keys``."""
    theirs_ops, ours_ops = operations(theirs_spec), operations(ours_spec)
    found: list[str] = []
    for key in sorted(keys):
        where = f"{key[0]} {key[1]}"
        if key not in theirs_ops:
            found.append(f"{where}: not in Quadcode's file")
            continue
        if key not in ours_ops:
            found.append(f"{where}: missing")
            continue
        theirs, ours = theirs_ops[key], ours_ops[key]
        theirs_params, ours_params = parameters(theirs_spec, key), parameters(ours_spec, key)
        if set(theirs_params) != set(ours_params):
            found.append(f"{where}: parameters {sorted(theirs_params)}, ours {sorted(ours_params)}")
        for name in set(theirs_params) & set(ours_params):
            t, o = theirs_params[name], ours_params[name]
            if bool(t.get("required")) != bool(o.get("required")):
                found.append(f"{where} parameter {name[0]}: required differs")
            found += schema_differences(
                f"{where} parameter {name[0]}", theirs_spec, t["schema"], ours_spec, o["schema"]
            )
        # A call Quadcode secures must be secured the same way; ours may secure more.
        missing_security = security_schemes(theirs_spec, theirs) - security_schemes(ours_spec, ours)
        if missing_security:
            found.append(f"{where}: security {sorted(missing_security)} missing")
        theirs_body = (
            json_schema(theirs_spec, theirs["requestBody"]) if "requestBody" in theirs else None
        )
        ours_body = json_schema(ours_spec, ours["requestBody"]) if "requestBody" in ours else None
        if (theirs_body is None) != (ours_body is None):
            found.append(f"{where}: request body {'missing' if ours_body is None else 'added'}")
        elif theirs_body is not None:
            found += schema_differences(
                f"{where} request", theirs_spec, theirs_body, ours_spec, ours_body
            )
        ours_responses = ours.get("responses", {})
        for status, response in theirs.get("responses", {}).items():
            if str(status) not in {str(s) for s in ours_responses}:
                found.append(f"{where}: status {status} missing")
                continue
            theirs_schema = json_schema(theirs_spec, response)
            if theirs_schema is None:
                continue  # Quadcode leaves the body open; ours may describe one
            ours_response = next(r for s, r in ours_responses.items() if str(s) == str(status))
            ours_schema = json_schema(ours_spec, ours_response)
            if ours_schema is None:
                found.append(f"{where} {status}: body schema missing")
            else:
                found += schema_differences(
                    f"{where} {status}", theirs_spec, theirs_schema, ours_spec, ours_schema
                )
    return found
