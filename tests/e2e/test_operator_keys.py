"""Operator API keys end to end: the operator API as a process on real Postgres (and Kafka for
its ledger routes), keys made by the bootstrap CLI and the key routes, and requests signed as
Swapgate's API v2 requests are. Every refusal with its code, roles, a key deactivated or
re-whitelisted mid-use, Swapgate's published example code, master key rotation, and the audit
chain catching a record altered by hand."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
import uuid
from base64 import b64encode
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest
from cryptography.fernet import Fernet

from operator_client import OperatorClient
from operator_keys_stack import (
    clean_env,
    client_for,
    create_key,
    operator_cli,
    write_master_keys,
)
from quadcode_gateway import generate_keypair
from swapgate.signing import sign
from wallet_stack import (
    KAFKA,
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

CACHE_TTL_MS = 1000
# Any route a read_only key may read: exchanges are off here, so it answers 503 once authorised.
READ_PATH = "/v1/customers/c-1/exchanges/x-1"


@dataclass
class KeyedApi:
    service: Service
    env: dict[str, str]
    directory: Path
    dsn: str
    admin: OperatorClient

    async def new_key(self, role: str, **body: Any) -> tuple[dict[str, Any], OperatorClient]:
        request = {"name": f"{role}-{uuid.uuid4().hex[:6]}", "whiteListIp": ["127.0.0.1"]}
        request["settings"] = {"role": role}
        request.update(body)
        status, answer = await self.admin.post("/v1/api-keys", request)
        assert status == 201, answer
        client = OperatorClient(self.service.url, answer["publicKey"], answer["secretKey"])
        return answer, client


def api_env(directory: Path, dsn: str, prefix: str, master_keys: Path) -> dict[str, str]:
    generate_keypair(directory / "ours-private.pem", directory / "ours-public.pem")
    return clean_env() | {
        "WALLET_PG_DSN": dsn,
        "WALLET_KAFKA_BOOTSTRAP": KAFKA,
        "WALLET_TOPIC_PREFIX": prefix,
        "WALLET_OPERATOR_MASTER_KEYS_FILE": str(master_keys),
        "WALLET_OPERATOR_KEY_CACHE_TTL_MS": str(CACHE_TTL_MS),
        "WALLET_QUADCODE_BASE_URL": "http://127.0.0.1:9",
        "WALLET_QUADCODE_ISSUER": "test",
        "WALLET_QUADCODE_ENVIRONMENT": "sandbox",
        "WALLET_QUADCODE_PRIVATE_KEY_PATH": str(directory / "ours-private.pem"),
    }


async def start_api(directory: Path, env: dict[str, str], name: str = "operator_api") -> Service:
    port, ops_port = free_port(), free_port()
    full = env | {
        "WALLET_OPERATOR_API_PORT": str(port),
        "WALLET_OPERATOR_API_OPS_PORT": str(ops_port),
    }
    service = Service("operator_api", port, full, directory / f"{name}.log", ops_port=ops_port)
    service.start()
    await wait_ready(service, timeout=60)
    return service


@pytest.fixture(scope="module")
async def keyed(
    pg_template: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[KeyedApi]:
    directory = tmp_path_factory.mktemp("operator-keys")
    database = await create_database(pg_template)
    prefix = f"k{uuid.uuid4().hex[:10]}."
    await create_topics(prefix)
    env = api_env(directory, dsn_for(database), prefix, write_master_keys(directory))
    service = await start_api(directory, env)
    create_key(env, directory / "admin.json", base_url=service.url)
    admin = client_for(directory / "admin.json")
    try:
        yield KeyedApi(service, env, directory, dsn_for(database), admin)
    finally:
        await admin.close()
        service.stop()
        await delete_topics(prefix)
        await drop_database(database)


async def raw(
    http: aiohttp.ClientSession,
    url: str,
    method: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any]]:
    async with http.request(method, url, data=body or None, headers=headers or {}) as response:
        return response.status, orjson.loads(await response.read())


def signed_headers(
    key: dict[str, Any], body: bytes, timestamp: int | None = None
) -> dict[str, str]:
    ts = time.time_ns() // 1_000_000 if timestamp is None else timestamp
    return {
        "x-api-public-key": key["publicKey"],
        "x-api-timestamp": str(ts),
        "x-api-signature": sign(key["secretKey"], ts, body, key["publicKey"]),
    }


async def test_an_admin_creates_a_key_whose_secret_is_shown_once(keyed: KeyedApi) -> None:
    status, made = await keyed.admin.post(
        "/v1/api-keys",
        {
            "name": "back office",
            "whiteListIp": ["127.0.0.1", "10.0.0.0/8"],
            "isActive": True,
            "settings": {"role": "operator", "minMarkup": "0.1", "maxMarkup": "0.5"},
        },
    )
    assert status == 201, made
    assert set(made) >= {"apiId", "name", "isActive", "publicKey", "secretKey", "whiteListIp"}
    assert len(bytes.fromhex(made["secretKey"])) == 32
    assert made["whiteListIp"] == ["127.0.0.1/32", "10.0.0.0/8"]
    status, listed = await keyed.admin.get("/v1/api-keys")
    assert status == 200
    mine = [key for key in listed if key["apiId"] == made["apiId"]]
    assert mine and "secretKey" not in mine[0] and mine[0]["settings"]["maxMarkup"] == "0.5"
    assert made["secretKey"] not in orjson.dumps(listed).decode()
    status, one = await keyed.admin.get(f"/v1/api-keys/{made['apiId']}")
    assert status == 200 and "secretKey" not in one and one["name"] == "back office"
    assert (await keyed.admin.get(f"/v1/api-keys/{uuid.uuid4()}"))[0] == 404
    status, refused = await keyed.admin.post("/v1/api-keys", {"name": "x", "whiteListIp": []})
    assert (status, refused["error"]) == (400, "invalid_field")
    # The database holds the secret encrypted only.
    conn = await asyncpg.connect(keyed.dsn)
    try:
        stored = await conn.fetchval(
            "SELECT secret FROM operator_api_keys WHERE api_id = $1", uuid.UUID(made["apiId"])
        )
    finally:
        await conn.close()
    assert made["secretKey"].encode() not in bytes(stored)


async def test_every_refusal_has_its_own_code(keyed: KeyedApi, http: aiohttp.ClientSession) -> None:
    url = keyed.service.url + "/v1/api-keys"
    admin, _ = await keyed.new_key("admin")
    inactive, _ = await keyed.new_key("admin", isActive=False)
    elsewhere, _ = await keyed.new_key("admin", whiteListIp=["10.0.0.0/8"])

    async def refused_with(headers: dict[str, str], body: bytes = b"") -> str:
        status, answer = await raw(http, url, "GET", body, headers)
        assert status == 403, answer
        return str(answer["error"])

    assert await refused_with({}) == "malformed_signature_headers"
    partial = signed_headers(admin, b"")
    del partial["x-api-signature"]
    assert await refused_with(partial) == "malformed_signature_headers"
    stranger = {"publicKey": b64encode(b"s" * 32).decode(), "secretKey": "00" * 32}
    assert await refused_with(signed_headers(stranger, b"")) == "unknown_api_key"
    assert await refused_with(signed_headers(inactive, b"")) == "api_key_inactive"
    assert await refused_with(signed_headers(elsewhere, b"")) == "ip_not_whitelisted"
    old = time.time_ns() // 1_000_000 - 31_000
    assert await refused_with(signed_headers(admin, b"", old)) == "timestamp_out_of_window"
    future = time.time_ns() // 1_000_000 + 31_000
    assert await refused_with(signed_headers(admin, b"", future)) == "timestamp_out_of_window"
    wrong_secret = dict(admin, secretKey="11" * 32)
    assert await refused_with(signed_headers(wrong_secret, b"")) == "signature_mismatch"
    # A signed body altered on the way: the bytes received are not the bytes signed.
    body = b'{"name":"a","whiteListIp":["127.0.0.1"]}'
    altered = b'{"name":"b","whiteListIp":["127.0.0.1"]}'
    status, answer = await raw(http, url, "POST", altered, signed_headers(admin, body))
    assert (status, answer["error"]) == (403, "signature_mismatch")
    # The very same signed request twice: the second is a replay.
    replayed = signed_headers(admin, b"")
    assert (await raw(http, url, "GET", b"", replayed))[0] == 200
    assert await refused_with(replayed) == "signature_replayed"


async def test_roles_decide_what_a_key_may_do(keyed: KeyedApi) -> None:
    _, reader = await keyed.new_key("read_only")
    _, operator = await keyed.new_key("operator")
    new_key = {"name": "x", "whiteListIp": ["127.0.0.1"]}
    try:
        status, answer = await reader.get(READ_PATH)
        assert status != 403, answer  # authorised; exchanges are off here (503)
        for client in (reader, operator):
            for status, answer in (
                await client.get("/v1/api-keys"),
                await client.post("/v1/api-keys", new_key),
            ):
                assert (status, answer["error"]) == (403, "role_forbidden")
        status, answer = await reader.post("/v1/customers/c-1/exchanges", {})
        assert (status, answer["error"]) == (403, "role_forbidden")
        status, answer = await operator.post("/v1/customers/c-1/exchanges", {})
        assert status != 403, answer  # an operator may write outside key management
    finally:
        await reader.close()
        await operator.close()


async def refused_within(client: OperatorClient, code: str, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        status, answer = await client.get(READ_PATH)
        if status == 403 and answer["error"] == code:
            return True
        await asyncio.sleep(0.05)
    return False


async def test_a_key_deactivated_mid_use_is_refused_within_the_cache_ttl(keyed: KeyedApi) -> None:
    made, client = await keyed.new_key("operator")
    try:
        assert (await client.get(READ_PATH))[0] != 403  # in use, so cached by the server
        status, changed = await keyed.admin.patch(
            f"/v1/api-keys/{made['apiId']}", {"isActive": False}
        )
        assert status == 200 and changed["isActive"] is False
        # Refused once the cached key expires (the TTL, plus a margin for a loaded machine).
        assert await refused_within(client, "api_key_inactive", CACHE_TTL_MS / 1000 + 4)
        await keyed.admin.patch(f"/v1/api-keys/{made['apiId']}", {"isActive": True})
        assert await refused_within(client, "no refusal", 0) is False
    finally:
        await client.close()


async def test_a_whitelist_change_takes_effect(keyed: KeyedApi) -> None:
    made, client = await keyed.new_key("operator")
    path = f"/v1/api-keys/{made['apiId']}"
    try:
        assert (await client.get(READ_PATH))[0] != 403
        assert (await keyed.admin.patch(path, {"whiteListIp": ["10.0.0.0/8"]}))[0] == 200
        assert await refused_within(client, "ip_not_whitelisted", CACHE_TTL_MS / 1000 + 4)
        assert (await keyed.admin.patch(path, {"whiteListIp": ["127.0.0.0/8"]}))[0] == 200
        deadline = time.monotonic() + CACHE_TTL_MS / 1000 + 4
        while (await client.get(READ_PATH))[0] == 403:
            assert time.monotonic() < deadline, "the whitelist change never took effect"
            await asyncio.sleep(0.05)
    finally:
        await client.close()


def swapgate_example_sign(request_body: object, timestamp: int, public: str, private: str) -> str:
    """Swapgate's published ``signRequest`` (API v2), line for line: TextEncoder-encode
    ``timestamp + JSON.stringify(requestBody) + PUBKEY``, HMAC-SHA256 keyed with PRIVKEY (its
    text), digest base64."""
    data = (str(timestamp) + json.dumps(request_body, separators=(",", ":")) + public).encode()
    return b64encode(hmac.new(private.encode(), data, hashlib.sha256).digest()).decode()


async def test_a_request_signed_by_swapgates_example_code_is_accepted(
    keyed: KeyedApi, http: aiohttp.ClientSession
) -> None:
    made, _ = await keyed.new_key("admin")
    body = {"name": "from the example", "whiteListIp": ["127.0.0.1"], "isActive": False}
    timestamp = time.time_ns() // 1_000_000
    headers = {
        "x-api-public-key": made["publicKey"],
        "x-api-timestamp": str(timestamp),
        "x-api-signature": swapgate_example_sign(
            body, timestamp, made["publicKey"], made["secretKey"]
        ),
        "content-type": "application/json; charset=utf-8",
    }
    status, answer = await raw(
        http,
        keyed.service.url + "/v1/api-keys",
        "POST",
        json.dumps(body, separators=(",", ":")).encode(),  # the body as JSON.stringify sends it
        headers,
    )
    assert status == 201, answer
    assert answer["name"] == "from the example"


async def test_key_changes_are_audited_with_who_and_what(keyed: KeyedApi) -> None:
    made, client = await keyed.new_key("read_only")
    await client.close()
    path = f"/v1/api-keys/{made['apiId']}"
    assert (await keyed.admin.patch(path, {"settings": {"role": "operator"}}))[0] == 200
    conn = await asyncpg.connect(keyed.dsn)
    try:
        row = await conn.fetchrow(
            """SELECT a.*, a.detail::text AS detail_text, k.name AS who FROM operator_audit a
               JOIN operator_api_keys k ON k.api_id = a.api_id
               WHERE a.method = 'PATCH' AND a.path = $1 ORDER BY seq DESC LIMIT 1""",
            path,
        )
        created = await conn.fetchval(
            """SELECT detail::text FROM operator_audit WHERE method = 'POST'
               AND detail->'created'->>'apiId' = $1""",
            made["apiId"],
        )
        cli_record = await conn.fetchrow(
            "SELECT * FROM operator_audit WHERE method = 'CLI' ORDER BY seq LIMIT 1"
        )
    finally:
        await conn.close()
    assert row is not None and row["who"] == "admin" and row["status"] == 200
    assert row["route"] == "/v1/api-keys/{api_id}" and row["outcome"] == "ok"
    detail = orjson.loads(row["detail_text"])
    assert detail["changed"] == {
        "settings": {"from": {"role": "read_only"}, "to": {"role": "operator"}}
    }
    assert row["body_sha256"] == hashlib.sha256(b'{"settings":{"role":"operator"}}').digest()
    assert created is not None and made["secretKey"] not in created
    assert cli_record is not None and cli_record["route"] == "keys create"


async def test_the_operator_api_answers_health_on_its_operational_port_only(
    keyed: KeyedApi, http: aiohttp.ClientSession
) -> None:
    status, answer = await raw(http, keyed.service.ops_url + "/health", "GET")
    assert (status, answer) == (200, {"status": "ok"})
    status, answer = await raw(http, keyed.service.url + "/health", "GET")
    assert (status, answer["error"]) == (404, "route_not_found")


async def test_the_keys_cli_lists_without_secrets_and_a_deactivated_key_is_refused(
    keyed: KeyedApi,
) -> None:
    made, client = await keyed.new_key("operator")
    try:
        assert (await client.get(READ_PATH))[0] != 403
        listed = orjson.loads(operator_cli(keyed.env, "keys", "list", "--json").stdout)
        mine = [key for key in listed if key["apiId"] == made["apiId"]]
        assert mine and mine[0]["isActive"] is True and mine[0]["settings"]["role"] == "operator"
        assert "secretKey" not in mine[0] and made["secretKey"] not in orjson.dumps(listed).decode()
        table = operator_cli(keyed.env, "keys", "list").stdout
        assert made["apiId"] in table and made["secretKey"] not in table

        done = operator_cli(keyed.env, "keys", "deactivate", made["apiId"])
        assert done.stdout.strip() == f"deactivated {made['apiId']}"
        assert await refused_within(client, "api_key_inactive", CACHE_TTL_MS / 1000 + 4)
        listed = orjson.loads(operator_cli(keyed.env, "keys", "list", "--json").stdout)
        assert [k["isActive"] for k in listed if k["apiId"] == made["apiId"]] == [False]
        unknown = operator_cli(keyed.env, "keys", "deactivate", str(uuid.uuid4()), check=False)
        assert unknown.returncode == 1
    finally:
        await client.close()


async def test_the_audit_verify_command_finds_a_record_altered_by_hand(keyed: KeyedApi) -> None:
    # Last in this module: it breaks the chain on purpose.
    for _ in range(3):
        assert (await keyed.admin.get("/v1/api-keys"))[0] == 200
    done = operator_cli(keyed.env, "audit", "verify")
    assert done.returncode == 0 and "intact" in done.stdout
    conn = await asyncpg.connect(keyed.dsn)
    try:
        target = await conn.fetchval(
            "SELECT seq FROM operator_audit WHERE method = 'GET' ORDER BY seq LIMIT 1"
        )
        assert target is not None
        with pytest.raises(asyncpg.PostgresError, match="append-only"):
            await conn.execute("UPDATE operator_audit SET status = 500 WHERE seq = $1", target)
        await conn.execute("ALTER TABLE operator_audit DISABLE TRIGGER operator_audit_append_only")
        await conn.execute("UPDATE operator_audit SET status = 500 WHERE seq = $1", target)
    finally:
        await conn.close()
    done = operator_cli(keyed.env, "audit", "verify", check=False)
    assert done.returncode == 1
    assert f"broken at record {target}:" in done.stdout


async def test_an_old_secret_verifies_after_master_key_rotation(
    pg_template: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    directory = tmp_path_factory.mktemp("operator-rotation")
    database = await create_database(pg_template)
    prefix = f"r{uuid.uuid4().hex[:10]}."
    await create_topics(prefix)
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    env = api_env(directory, dsn_for(database), prefix, write_master_keys(directory, old))
    service: Service | None = None
    try:
        create_key(env, directory / "admin.json", base_url="http://unused")
        # Rotation: the new key first, rotate, then the old key dropped.
        write_master_keys(directory, new, old)
        assert "re-encrypted 1 secrets" in operator_cli(env, "master", "rotate").stdout
        write_master_keys(directory, new)
        assert operator_cli(env, "keys", "check", str(directory / "admin.json")).returncode == 0
        service = await start_api(directory, env)
        credentials = orjson.loads((directory / "admin.json").read_bytes())
        async with OperatorClient(
            service.url, credentials["publicKey"], credentials["secretKey"]
        ) as admin:
            status, listed = await admin.get("/v1/api-keys")
        assert status == 200 and len(listed) == 1
        # With only the old master key, nothing decrypts any more: the CLI says so.
        write_master_keys(directory, old)
        refused = operator_cli(env, "keys", "check", str(directory / "admin.json"), check=False)
        assert refused.returncode == 1
    finally:
        if service is not None:
            service.stop()
        await delete_topics(prefix)
        await drop_database(database)
