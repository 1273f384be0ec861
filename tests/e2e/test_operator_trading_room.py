"""The operator API as a process, against the Quadcode simulator as a process: the website's
trading-room requests for every use case, bad input that must never reach Quadcode, and the
signed operator API keys in front of it (its key store on a database of its own)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from operator_client import load_credentials
from operator_keys_stack import create_key, write_master_keys
from quadcode_gateway import QuadcodeGatewayClient, TokenSigner, generate_keypair
from quadcode_harness import (
    AUDIENCE,
    ISSUER,
    REPO,
    SimulatorHooks,
    SimulatorProcess,
    launch_simulator,
    stop_simulator,
)
from swapgate.signing import signed_headers
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

ROOM_TIMEOUT = 3.0  # WALLET_OPERATOR_API_TIMEOUT of the process under test
ATTEMPT_TIMEOUT = 4.0  # WALLET_QUADCODE_REQUEST_TIMEOUT, with WALLET_QUADCODE_MAX_ATTEMPTS=2


@dataclass(frozen=True)
class Keys:
    directory: Path

    @property
    def ours_private(self) -> Path:
        return self.directory / "ours-private.pem"

    @property
    def master_keys(self) -> Path:
        return self.directory / "operator-master-keys"

    @property
    def credentials(self) -> Path:
        return self.directory / "operator-credentials.json"


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    directory = tmp_path_factory.mktemp("operator-api")
    for name in ("ours", "qc"):
        generate_keypair(directory / f"{name}-private.pem", directory / f"{name}-public.pem")
    keys = Keys(directory)
    write_master_keys(directory)
    return keys


@pytest.fixture(scope="module")
async def key_store(pg_template: str) -> AsyncIterator[dict[str, str]]:
    """A database for the operator API's keys and audit, and topics for its ledger routes."""
    database = await create_database(pg_template)
    prefix = f"o{uuid.uuid4().hex[:10]}."
    await create_topics(prefix)
    try:
        yield {
            "WALLET_PG_DSN": dsn_for(database),
            "WALLET_KAFKA_BOOTSTRAP": KAFKA,
            "WALLET_TOPIC_PREFIX": prefix,
        }
    finally:
        await delete_topics(prefix)
        await drop_database(database)


@pytest.fixture(scope="module")
def simulator(keys: Keys) -> Iterator[SimulatorProcess]:
    log_path = keys.directory / "simulator.log"
    process, port = launch_simulator(
        log_path,
        client_public_key=keys.directory / "ours-public.pem",
        qc_private_key=keys.directory / "qc-private.pem",
        extra=("--rate-limit", "0"),  # many requests from one test IP; 429s are tested elsewhere
    )
    try:
        yield SimulatorProcess(f"http://127.0.0.1:{port}", port, process.pid, log_path)
    finally:
        stop_simulator(process)


def operator_api_env(
    keys: Keys, simulator: SimulatorProcess, key_store: dict[str, str], **overrides: str
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WALLET_")}
    env.update(key_store)
    env.update(
        WALLET_OPERATOR_MASTER_KEYS_FILE=str(keys.master_keys),
        WALLET_OPERATOR_CREDENTIALS=str(keys.credentials),
        WALLET_QUADCODE_BASE_URL=simulator.base_url,
        WALLET_QUADCODE_ISSUER=ISSUER,
        WALLET_QUADCODE_ENVIRONMENT=AUDIENCE,
        WALLET_QUADCODE_PRIVATE_KEY_PATH=str(keys.ours_private),
        WALLET_QUADCODE_REQUEST_TIMEOUT=str(ATTEMPT_TIMEOUT),
        WALLET_QUADCODE_MAX_ATTEMPTS="2",
        WALLET_OPERATOR_API_TIMEOUT=str(ROOM_TIMEOUT),
    )
    env.update(overrides)
    return env


@pytest.fixture(scope="module")
async def api(
    keys: Keys, simulator: SimulatorProcess, key_store: dict[str, str]
) -> AsyncIterator[Service]:
    port, ops_port = free_port(), free_port()
    env = operator_api_env(
        keys,
        simulator,
        key_store,
        WALLET_OPERATOR_API_PORT=str(port),
        WALLET_OPERATOR_API_OPS_PORT=str(ops_port),
    )
    service = Service(
        "operator_api", port, env, keys.directory / "operator_api.log", ops_port=ops_port
    )
    create_key(env, keys.credentials, base_url=service.url, name="website", role="operator")
    service.start()
    try:
        await wait_ready(service, timeout=30)
        yield service
    finally:
        service.stop()


@pytest.fixture
async def sim(simulator: SimulatorProcess, http: aiohttp.ClientSession) -> SimulatorHooks:
    hooks = SimulatorHooks(simulator, http)
    await hooks.reset()
    return hooks


@pytest.fixture
def customer() -> str:
    return "cust-" + uuid.uuid4().hex[:12]


def room_request(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "balance_id": "b-1_USD",
        "balance_currency_code": "USD",
        "country_code": "DE",
        "ip": "203.0.113.7",
        "locale": "en_US",
        "site_domain": "trade.example.com",
        "email": "anna@example.com",
        "first_name": "Anna",
        "date_of_birth": "1990-04-01",
    }
    body.update(changes)
    return {key: value for key, value in body.items() if value is not None}


@dataclass
class Reply:
    status: int
    body: Any
    headers: dict[str, str]


async def post_room(
    http: aiohttp.ClientSession,
    api: Service,
    customer: str,
    body: dict[str, Any] | bytes | None = None,
    *,
    auth: dict[str, str] | None = None,
    method: str = "POST",
) -> Reply:
    """A trading-room request, signed with the website's key unless ``auth`` gives the
    authentication headers to send instead."""
    data = (
        body if isinstance(body, bytes) else orjson.dumps(room_request() if body is None else body)
    )
    headers = {"Content-Type": "application/json"}
    headers.update(signed_by_website(api, data) if auth is None else auth)
    async with http.request(
        method,
        f"{api.url}/v1/customers/{customer}/trading-room",
        data=data,
        headers=headers,
        timeout=aiohttp.ClientTimeout(total=30),
    ) as response:
        return Reply(response.status, orjson.loads(await response.read()), dict(response.headers))


def quadcode_calls(exchanges: list[dict[str, Any]]) -> list[tuple[str, int]]:
    return [(e["path"].removeprefix("/v1/b2b-gateway"), e["status"]) for e in exchanges]


# -- the use cases ---------------------------------------------------------------------------------


async def test_first_open_registers_the_customer_at_quadcode_and_answers_the_iframe_url(
    api: Service, sim: SimulatorHooks, http: aiohttp.ClientSession, customer: str
) -> None:
    reply = await post_room(http, api, customer)

    assert reply.status == 200, reply.body
    assert reply.body["outcome"] == "url"
    assert reply.body["customer_created"] is True
    assert reply.body["message"] == ""
    assert reply.body["url"].startswith(f"{sim.base_url}/traderoom?token=")
    assert reply.headers["Cache-Control"] == "no-store"  # a one-time URL must not be cached
    assert quadcode_calls(await sim.exchanges()) == [
        (f"/customers/{customer}/session", 404),
        ("/customers", 201),
        (f"/customers/{customer}/session", 201),
    ]
    registered = await sim.customer(customer)
    assert registered is not None
    assert (registered["country_code"], registered["ip"], registered["email"]) == (
        "DE",
        "203.0.113.7",
        "anna@example.com",
    )
    assert registered["profile"] == {"first_name": "Anna", "date_of_birth": "1990-04-01"}
    assert registered["balances"] == {"b-1_USD": "USD"}
    async with http.get(reply.body["url"]) as page:
        assert page.status == 200


async def test_repeat_open_asks_quadcode_for_a_url_only(
    api: Service, sim: SimulatorHooks, http: aiohttp.ClientSession, customer: str
) -> None:
    first = await post_room(http, api, customer)
    again = await post_room(http, api, customer)

    assert again.status == 200, again.body
    assert (again.body["outcome"], again.body["customer_created"]) == ("url", False)
    assert again.body["url"] != first.body["url"]  # each URL opens the room once
    assert quadcode_calls(await sim.exchanges())[3:] == [(f"/customers/{customer}/session", 201)]


@pytest.mark.parametrize("registered", [True, False], ids=["registered", "new"])
async def test_a_customer_in_a_restricted_country_gets_a_message_to_show(
    api: Service, sim: SimulatorHooks, http: aiohttp.ClientSession, customer: str, registered: bool
) -> None:
    if registered:
        assert (await post_room(http, api, customer)).body["outcome"] == "url"

    reply = await post_room(http, api, customer, room_request(country_code="US"))

    assert reply.status == 200, reply.body
    assert reply.body == {
        "outcome": "country_restricted",
        "message": "Sorry. Your current country is not allowed access.",
        "customer_created": False,
    }
    assert "url" not in reply.body
    assert quadcode_calls(await sim.exchanges())[-1][1] == 451


async def test_a_restricted_currency_gets_its_own_message(
    api: Service, sim: SimulatorHooks, http: aiohttp.ClientSession, customer: str
) -> None:
    reply = await post_room(
        http, api, customer, room_request(balance_id="b-1_JPY", balance_currency_code="JPY")
    )

    assert reply.status == 200, reply.body
    assert reply.body["outcome"] == "currency_restricted"
    assert reply.body["message"] == "Sorry. Trading is not available for this currency."


async def test_a_blocked_customer_is_told_the_account_is_blocked(
    api: Service, sim: SimulatorHooks, http: aiohttp.ClientSession, customer: str, keys: Keys
) -> None:
    assert (await post_room(http, api, customer)).body["outcome"] == "url"
    signer = TokenSigner.from_pem_file(keys.ours_private, issuer=ISSUER, audience=AUDIENCE)
    async with QuadcodeGatewayClient.create(base_url=sim.base_url, signer=signer) as gateway:
        await gateway.block_customer(customer)

    reply = await post_room(http, api, customer)

    assert reply.status == 200, reply.body
    assert reply.body["outcome"] == "blocked"
    assert reply.body["message"] == "Sorry. Your account is blocked."
    assert quadcode_calls(await sim.exchanges())[-1] == (f"/customers/{customer}/session", 418)


async def test_quadcode_failing_is_503_unavailable_with_a_message_to_show(
    api: Service, sim: SimulatorHooks, http: aiohttp.ClientSession, customer: str
) -> None:
    await sim.force(status=500, path=f"/v1/b2b-gateway/customers/{customer}/session", times=10)

    reply = await post_room(http, api, customer)

    assert reply.status == 503, reply.body
    assert reply.body == {
        "error": "unavailable",
        "outcome": "unavailable",
        "message": "Sorry. The trading room is not available right now; please try again later.",
    }
    # Bounded: WALLET_QUADCODE_MAX_ATTEMPTS=2, and a 5xx never leads to a registration.
    assert [status for _, status in quadcode_calls(await sim.exchanges())] == [500, 500]


async def test_a_quadcode_that_does_not_answer_is_503_within_the_deadline(
    api: Service, sim: SimulatorHooks, http: aiohttp.ClientSession, customer: str
) -> None:
    # Two attempts that each time out after 4 s would keep the website waiting more than 8 s;
    # the operator API gives up after its own 3 s.
    await sim.force(delay=6, path=f"/v1/b2b-gateway/customers/{customer}/session", times=5)

    started = time.monotonic()
    reply = await post_room(http, api, customer)
    elapsed = time.monotonic() - started

    assert reply.status == 503, reply.body
    assert reply.body["outcome"] == "unavailable"
    assert ROOM_TIMEOUT <= elapsed < ATTEMPT_TIMEOUT


# -- bad input: 400, and nothing reaches Quadcode --------------------------------------------------

BAD_BODIES = {
    "not_json": (b'{"balance_id": ', "malformed_json", "JSON"),
    "not_an_object": (b'["b-1_USD"]', "malformed_json", "object"),
    "missing_email": (room_request(email=None), "invalid_field", "email: is required"),
    "number_for_id": (room_request(balance_id=42), "invalid_field", "balance_id: must be a string"),
    "unexpected_field": (
        room_request(password="x"),
        "invalid_field",
        "Unexpected field(s): password",
    ),
    "email_too_long": (
        room_request(email="a" * 60 + "@" + "b" * 250 + ".com"),
        "invalid_field",
        "email: is longer than 254",
    ),
    "name_too_long": (
        room_request(first_name="A" * 256),
        "invalid_field",
        "first_name: is longer than 255",
    ),
    "balance_id_too_long": (
        room_request(balance_id="b" * 65),
        "invalid_field",
        "balance_id: is longer than 64",
    ),
    "unknown_country": (room_request(country_code="XX"), "invalid_field", "country_code:"),
    "bad_ip": (room_request(ip="999.0.0.1"), "invalid_field", "ip: is not an IPv4 or IPv6 address"),
    "url_as_domain": (
        room_request(site_domain="https://trade.example.com/"),
        "invalid_field",
        "site_domain:",
    ),
    "bad_locale": (room_request(locale="english"), "invalid_field", "locale:"),
    "bad_currency": (
        room_request(balance_currency_code="usd"),
        "invalid_field",
        "balance_currency_code:",
    ),
    "bad_birth_date": (room_request(date_of_birth="31/12/1990"), "invalid_field", "date_of_birth:"),
    "bad_balance_type": (room_request(balance_type="play"), "invalid_field", "balance_type:"),
    "too_large": (b'{"email": "' + b"a" * 9000 + b'"}', "body_too_large", ""),
}


@pytest.mark.parametrize(("body", "code", "says"), BAD_BODIES.values(), ids=BAD_BODIES.keys())
async def test_bad_input_is_400_and_nothing_is_sent_to_quadcode(
    api: Service,
    sim: SimulatorHooks,
    http: aiohttp.ClientSession,
    customer: str,
    body: dict[str, Any] | bytes,
    code: str,
    says: str,
) -> None:
    reply = await post_room(http, api, customer, body)

    assert reply.status == 400, reply.body
    assert reply.body["error"] == code
    assert says in reply.body["message"]
    assert await sim.exchanges() == []


async def test_every_bad_field_is_named_in_one_answer(
    api: Service, sim: SimulatorHooks, http: aiohttp.ClientSession, customer: str
) -> None:
    reply = await post_room(http, api, customer, room_request(ip="nope", email="nope", locale="x"))

    assert reply.status == 400
    assert reply.body["message"] == (
        "email: is not an e-mail address; ip: is not an IPv4 or IPv6 address; "
        "locale: must be a locale name such as 'en_US'."
    )
    assert await sim.exchanges() == []


@pytest.mark.parametrize("path_id", ["bad$id", ".hidden", "a%2Fb", "c" * 65])
async def test_a_malformed_customer_id_is_400_invalid_id(
    api: Service, sim: SimulatorHooks, http: aiohttp.ClientSession, path_id: str
) -> None:
    reply = await post_room(http, api, path_id)

    assert (reply.status, reply.body["error"]) == (400, "invalid_id")
    assert await sim.exchanges() == []


# -- the signed keys ------------------------------------------------------------------------------


_LAST_MS = [0]


def signed_by_website(api: Service, body: bytes, secret: str | None = None) -> dict[str, str]:
    """The authentication headers of the website's key (from the bootstrap CLI's credentials
    file) for this raw body; ``secret`` signs with another secret instead."""
    credentials = load_credentials(api.env["WALLET_OPERATOR_CREDENTIALS"])
    # Never the same millisecond twice: the same body again would sign alike (a replay).
    timestamp = _LAST_MS[0] = max(time.time_ns() // 1_000_000, _LAST_MS[0] + 1)
    return signed_headers(secret or credentials.secret_key, credentials.public_key, timestamp, body)


@pytest.mark.parametrize(
    ("auth", "code"),
    [
        ({}, "malformed_signature_headers"),
        ({"x-api-public-key": "a2V5", "x-api-timestamp": "1", "x-api-signature": "c2ln"},
         "unknown_api_key"),
        ("wrong_secret", "signature_mismatch"),
    ],
    ids=["none", "unknown_key", "wrong_secret"],
)  # fmt: skip
async def test_without_a_valid_signature_it_is_403_and_nothing_is_sent(
    api: Service,
    sim: SimulatorHooks,
    http: aiohttp.ClientSession,
    customer: str,
    auth: dict[str, str] | str,
    code: str,
) -> None:
    if auth == "wrong_secret":
        auth = signed_by_website(api, orjson.dumps(room_request()), secret="00" * 32)
    assert isinstance(auth, dict)
    reply = await post_room(http, api, customer, auth=auth)

    assert (reply.status, reply.body["error"]) == (403, code)
    assert await sim.exchanges() == []


async def test_the_signature_is_checked_before_the_body_or_the_route(
    api: Service, http: aiohttp.ClientSession
) -> None:
    bad_body = await post_room(
        http, api, "c-1", b"{", auth=signed_by_website(api, b"{", secret="00" * 32)
    )
    async with http.get(f"{api.url}/v1/elsewhere") as unknown_route:
        unknown = orjson.loads(await unknown_route.read())

    assert (bad_body.status, bad_body.body["error"]) == (403, "signature_mismatch")
    assert (unknown_route.status, unknown["error"]) == (403, "malformed_signature_headers")


async def test_other_methods_are_405_json(
    api: Service, http: aiohttp.ClientSession, customer: str
) -> None:
    reply = await post_room(http, api, customer, method="GET")

    assert (reply.status, reply.body["error"]) == (405, "method_not_allowed")


async def test_operational_routes_need_no_secret(api: Service, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{api.ops_url}/ready") as ready:
        assert ready.status == 200
        checks = orjson.loads(await ready.read())["checks"]
        # The key store's Postgres is checked too; nothing calls Quadcode.
        assert checks["listening"] and checks["quadcode_signer"] and checks["postgres"]
    async with http.get(f"{api.ops_url}/metrics") as metrics:
        assert "operator_api_trading_room_total" in await metrics.text()


@pytest.mark.parametrize("path", ["/metrics", "/ready", "/health"])
async def test_operational_routes_are_not_on_the_public_port(
    api: Service, http: aiohttp.ClientSession, path: str
) -> None:
    async with http.get(api.url + path) as resp:
        assert resp.status == 404
        assert orjson.loads(await resp.read())["error"] == "route_not_found"


# -- start-up refuses what cannot work --------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"WALLET_OPERATOR_MASTER_KEYS_FILE": ""}, "WALLET_OPERATOR_MASTER_KEYS"),
        (
            {"WALLET_OPERATOR_MASTER_KEYS_FILE": "", "WALLET_OPERATOR_MASTER_KEYS": "short"},
            "must be a Fernet key",
        ),
        ({"WALLET_OPERATOR_MASTER_KEYS_FILE": "/nonexistent/keys"}, "/nonexistent/keys"),
        (
            {"WALLET_QUADCODE_PRIVATE_KEY_PATH": "/nonexistent/key.pem"},
            "WALLET_QUADCODE_PRIVATE_KEY_PATH",
        ),
        ({"WALLET_QUADCODE_ISSUER": ""}, "WALLET_QUADCODE_ISSUER"),
    ],
    ids=[
        "no_master_key",
        "bad_master_key",
        "unreadable_master_keys",
        "unreadable_key",
        "no_issuer",
    ],
)
async def test_start_up_refuses_bad_settings_with_a_message_naming_them(
    keys: Keys,
    simulator: SimulatorProcess,
    key_store: dict[str, str],
    overrides: dict[str, str],
    named: str,
) -> None:
    env = operator_api_env(
        keys, simulator, key_store, WALLET_OPERATOR_API_PORT=str(free_port()), **overrides
    )
    env = {name: value for name, value in env.items() if value != ""}

    def run() -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [sys.executable, "-m", "operator_api"],
            env=env,
            cwd=REPO,
            capture_output=True,
            timeout=30,
            check=False,
        )

    result = await asyncio.to_thread(run)

    assert result.returncode != 0
    assert named in result.stderr.decode(), result.stderr.decode()
