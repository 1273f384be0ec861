"""Operator API keys in tests: a master key, the bootstrap CLI, and the operator API as a
process whose callers sign with keys made by that CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
from cryptography.fernet import Fernet

from operator_client import OperatorClient, load_credentials
from wallet_stack import REPO


def write_master_keys(directory: Path, *keys: str) -> Path:
    """A master keys file (mode 0600) holding ``keys``, first one encrypting."""
    path = directory / "operator-master-keys"
    path.write_text("\n".join(keys or (Fernet.generate_key().decode(),)) + "\n")
    path.chmod(0o600)
    return path


def operator_cli(
    env: dict[str, str], *args: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """``python -m operator_api ARGS`` with ``env``."""
    return subprocess.run(
        [sys.executable, "-m", "operator_api", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=check,
    )


def create_key(
    env: dict[str, str],
    credentials: Path,
    *,
    base_url: str,
    name: str = "admin",
    role: str = "admin",
    whitelist: str = "127.0.0.1/32",
) -> dict[str, Any]:
    """A key made with the bootstrap CLI, its credentials written to ``credentials``."""
    done = operator_cli(
        env, "keys", "create", "--name", name, "--role", role, "--whitelist", whitelist,
        "--json", "--credentials", str(credentials), "--base-url", base_url,
    )  # fmt: skip
    answer: dict[str, Any] = orjson.loads(done.stdout)
    return answer


def client_for(credentials: Path) -> OperatorClient:
    """A signing client with the credentials file's key."""
    return OperatorClient.from_credentials(load_credentials(credentials))


def key_env(master_keys: Path) -> dict[str, str]:
    """What the CLI and the service need beyond the stack's settings."""
    return {"WALLET_OPERATOR_MASTER_KEYS_FILE": str(master_keys)}


def clean_env() -> dict[str, str]:
    """The test process's environment without any WALLET_ setting."""
    return {k: v for k, v in os.environ.items() if not k.startswith("WALLET_")}
