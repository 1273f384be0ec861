"""``wallet`` as an operator runs it: the installed console script, a migration of an empty
database, and a signed read through a running operator API."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import orjson
import pytest

from operator_keys_stack import create_key, key_env, write_master_keys
from quadcode_gateway import generate_keypair
from wallet_stack import (
    KAFKA,
    REPO,
    Service,
    create_database,
    create_topics,
    delete_topics,
    drop_database,
    dsn_for,
    free_port,
    wait_ready,
)

pytestmark = pytest.mark.e2e

WALLET = Path(sys.executable).with_name("wallet")


def wallet(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(WALLET), *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=120
    )


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("WALLET_")}


def test_the_console_script_prints_help() -> None:
    done = wallet("--help", env=clean_env())
    assert done.returncode == 0, done.stderr
    assert "Commands:" in done.stdout and "migrate" in done.stdout


async def test_migrate_then_a_signed_read_through_the_operator_api(
    infrastructure: None, tmp_path: Path
) -> None:
    database = await create_database("template0")
    prefix = f"w{uuid.uuid4().hex[:10]}."
    service = None
    try:
        env = clean_env() | {"WALLET_PG_DSN": dsn_for(database)}
        done = wallet("migrate", "--json", env=env)
        assert done.returncode == 0, done.stderr
        migrated = orjson.loads(done.stdout)
        assert migrated["applied_now"] == migrated["versions"] != []
        assert migrated["versions"][-1] == migrated["latest"]
        again = orjson.loads(wallet("migrate", "--json", env=env).stdout)
        assert again["applied_now"] == []

        await create_topics(prefix)
        generate_keypair(tmp_path / "ours-private.pem", tmp_path / "ours-public.pem")
        port, ops_port = free_port(), free_port()
        api_env = (
            env
            | key_env(write_master_keys(tmp_path))
            | {
                "WALLET_KAFKA_BOOTSTRAP": KAFKA,
                "WALLET_TOPIC_PREFIX": prefix,
                "WALLET_QUADCODE_BASE_URL": "http://127.0.0.1:9",
                "WALLET_QUADCODE_ISSUER": "test",
                "WALLET_QUADCODE_ENVIRONMENT": "sandbox",
                "WALLET_QUADCODE_PRIVATE_KEY_PATH": str(tmp_path / "ours-private.pem"),
                "WALLET_OPERATOR_API_PORT": str(port),
                "WALLET_OPERATOR_API_OPS_PORT": str(ops_port),
            }
        )
        service = Service("operator_api", port, api_env, tmp_path / "api.log", ops_port=ops_port)
        service.start()
        await wait_ready(service, timeout=60)
        credentials = tmp_path / "admin.json"
        create_key(api_env, credentials, base_url=service.url, role="read_only")

        read = wallet("customers", "show", "nobody", "--json", env=api_env | {
            "WALLET_OPERATOR_CREDENTIALS": str(credentials)
        })  # fmt: skip
        # A signed request that got through authentication and the role check to the route.
        assert read.returncode == 1
        assert orjson.loads(read.stdout)["error"] == "customer_not_found"
        table = wallet("trial-balance", "--credentials", str(credentials), env=api_env)
        assert table.returncode == 0, table.stdout + table.stderr

        unsigned = wallet(
            "trial-balance", "--credentials", str(tmp_path / "none.json"), env=api_env
        )
        assert unsigned.returncode != 0
    finally:
        if service is not None:
            service.stop()
        await delete_topics(prefix)
        await drop_database(database)
