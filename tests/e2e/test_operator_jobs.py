"""Dead letters and long-running jobs over the operator API, against the stack's ledger,
projection, Postgres and Kafka, with the operator API as a process and signed keys.

Dead letters: a command a database trigger refuses is parked, listed and inspected; its redrive
is refused (the ledger stored its refusal, so a redrive would only repeat it); it is discarded
with a reason, once, audited. A command parked as undecodable by an older ledger (put on the
dead-letter topic here as that ledger would have) is redriven after the "decoder fix" and
applied once, however often its bytes come again. Jobs: a republish, a projection rebuild and a
replay into a fresh database, each polled to its end; a second job of a type is a 409; a job is
cancelled.
"""

from __future__ import annotations

import asyncio
import base64
import re
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest
from aiokafka import TopicPartition
from aiokafka.partitioner import DefaultPartitioner

from ledger_core.commands import Envelope, MoneyCommand, encode
from operator_client import OperatorClient
from operator_keys_stack import clean_env, client_for, create_key, write_master_keys
from quadcode_gateway import generate_keypair
from wallet_clients import Operator
from wallet_platform import topics
from wallet_platform.kafka import make_consumer, make_producer
from wallet_stack import (
    Service,
    Stack,
    create_database,
    drop_database,
    dsn_for,
    free_port,
    wait_ready,
)

pytestmark = pytest.mark.e2e

REFUSE_TRIGGER = """
CREATE FUNCTION refuse_marked_comment() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.comment LIKE 'refuse-me%' THEN
        RAISE EXCEPTION 'refused by the test' USING ERRCODE = '22023';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER refuse_marked_comment BEFORE INSERT ON journal_entries
    FOR EACH ROW EXECUTE FUNCTION refuse_marked_comment();
"""
DROP_TRIGGER = """
DROP TRIGGER IF EXISTS refuse_marked_comment ON journal_entries;
DROP FUNCTION IF EXISTS refuse_marked_comment();
"""


@dataclass
class OperatorApi:
    service: Service
    admin: OperatorClient
    operator: OperatorClient
    reader: OperatorClient


async def new_client(api: Service, admin: OperatorClient, role: str) -> OperatorClient:
    body = {
        "name": f"{role}-{uuid.uuid4().hex[:6]}",
        "whiteListIp": ["127.0.0.1"],
        "settings": {"role": role},
    }
    status, answer = await admin.post("/v1/api-keys", body)
    assert status == 201, answer
    return OperatorClient(api.url, answer["publicKey"], answer["secretKey"])


@pytest.fixture(scope="module")
async def api(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[OperatorApi]:
    directory = tmp_path_factory.mktemp("operator-jobs")
    generate_keypair(directory / "ours-private.pem", directory / "ours-public.pem")
    port, ops_port = free_port(), free_port()
    env = clean_env() | {
        "WALLET_PG_DSN": stack.dsn,
        "WALLET_KAFKA_BOOTSTRAP": stack.kafka,
        "WALLET_TOPIC_PREFIX": stack.prefix,
        "WALLET_OPERATOR_MASTER_KEYS_FILE": str(write_master_keys(directory)),
        "WALLET_QUADCODE_BASE_URL": "http://127.0.0.1:9",
        "WALLET_QUADCODE_ISSUER": "test",
        "WALLET_QUADCODE_ENVIRONMENT": "sandbox",
        "WALLET_QUADCODE_PRIVATE_KEY_PATH": str(directory / "ours-private.pem"),
        "WALLET_OPERATOR_API_PORT": str(port),
        "WALLET_OPERATOR_API_OPS_PORT": str(ops_port),
        # Slow enough that a republish is still running when the second one is asked for.
        "WALLET_OPERATOR_JOB_REPUBLISH_RATE": "2",
    }
    service = Service("operator_api", port, env, directory / "operator_api.log", ops_port=ops_port)
    service.start()
    try:
        await wait_ready(service, timeout=60)
        create_key(env, directory / "admin.json", base_url=service.url)
        admin = client_for(directory / "admin.json")
        operator = await new_client(service, admin, "operator")
        reader = await new_client(service, admin, "read_only")
        yield OperatorApi(service, admin, operator, reader)
        for client in (admin, operator, reader):
            await client.close()
    finally:
        service.stop()


async def until(check: Callable[[], Awaitable[Any]], timeout: float = 30.0) -> Any:
    """Poll ``check`` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        found = await check()
        if found:
            return found
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.2)


async def parked(api: OperatorApi, request_id: str, status: str = "new") -> dict[str, Any] | None:
    """The dead letter of ``request_id`` in the list of ``status``, if there."""
    after = -1
    while True:
        code, page = await api.reader.get(f"/v1/dead-letters?status={status}&after={after}")
        assert code == 200, page
        for letter in page["deadLetters"]:
            if letter.get("requestId") == request_id:
                found: dict[str, Any] = letter
                return found
        if page["nextAfter"] is None:
            return None
        after = page["nextAfter"]


async def entries_of(stack: Stack, request_id: str) -> int:
    conn = await asyncpg.connect(stack.dsn)
    try:
        count: int = await conn.fetchval(
            "SELECT count(*) FROM journal_entries WHERE request_id = $1", request_id
        )
        return count
    finally:
        await conn.close()


async def execute(dsn: str, sql: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def test_a_refused_dead_letter_is_listed_inspected_not_redriven_and_discarded_once(
    api: OperatorApi, operator: Operator, stack: Stack, http: aiohttp.ClientSession
) -> None:
    customer, balance = await operator.customer_with_balance("USD", "10.00")
    request_id = "refused-" + uuid.uuid4().hex[:8]
    await execute(stack.dsn, REFUSE_TRIGGER)
    try:
        cmd = MoneyCommand("credit", customer, balance, request_id, "1.00", "USD", "refuse-me")
        refused = await operator.send(cmd)
    finally:
        await execute(stack.dsn, DROP_TRIGGER)  # the cause is fixed ...
    assert (refused.status, refused.json["error"]) == (400, "command_refused")

    letter = await until(lambda: parked(api, request_id))
    assert (letter["reason"], letter["decodes"], letter["status"]) == ("refused", True, "new")
    assert letter["source"]["topic"] == topics.topic_name(topics.COMMANDS, stack.prefix)
    path = f"/v1/dead-letters/{letter['partition']}/{letter['offset']}"
    status, whole = await api.reader.get(path)
    assert status == 200, whole
    assert whole["command"]["request_id"] == request_id
    assert base64.b64decode(whole["raw"]).startswith(b"{")
    assert whole["storedOutcome"]["status"] == 400
    assert whole["storedOutcome"]["body"]["error"] == "command_refused"

    # A read-only key reads but does not act.
    status, answer = await api.reader.post(path + "/discard", {"reason": "no"})
    assert (status, answer["error"]) == (403, "role_forbidden")
    # ... but the ledger stored its refusal: a redrive would only get it again.
    status, answer = await api.operator.post(path + "/redrive", {})
    assert (status, answer["error"]) == (409, "dead_letter_outcome_stored")
    assert await entries_of(stack, request_id) == 0

    reason = "the credit was booked by hand as request manual-1"
    status, answer = await api.operator.post(path + "/discard", {"reason": reason})
    assert status == 200, answer
    assert (answer["status"], answer["action"]["reason"]) == ("discarded", reason)
    for action in ("/discard", "/redrive"):
        status, answer = await api.operator.post(path + action, {"reason": "again"})
        assert (status, answer["error"]) == (409, "dead_letter_discarded")
    assert await parked(api, request_id, "new") is None
    assert (await parked(api, request_id, "discarded"))["action"]["reason"] == reason

    conn = await asyncpg.connect(stack.dsn)
    try:
        audited = await conn.fetch(
            """SELECT status, outcome, detail FROM operator_audit
                WHERE route = '/v1/dead-letters/{partition}/{offset}/discard' ORDER BY seq"""
        )
    finally:
        await conn.close()
    outcomes = [(r["status"], r["outcome"]) for r in audited]
    assert outcomes[-3:] == [(403, "role_forbidden"), (200, "ok"), (409, "dead_letter_discarded")]
    assert orjson.loads(audited[-2]["detail"])["reason"] == reason

    async def discarded_counted() -> bool:
        async with http.get(api.service.ops_url + "/metrics") as resp:
            text = await resp.text()
        return any(
            line.startswith('operator_dead_letters{state="discarded"}')
            and float(line.rsplit(" ", 1)[1]) >= 1
            for line in text.splitlines()
        )

    await until(discarded_counted)


async def test_an_undecodable_dead_letter_redriven_after_a_decoder_fix_is_applied_once(
    api: OperatorApi, operator: Operator, stack: Stack
) -> None:
    customer, balance = await operator.customer_with_balance("USD", "100.00")
    request_id = "parked-" + uuid.uuid4().hex[:8]
    raw = encode(
        MoneyCommand("deposit", customer, balance, request_id, "50.00", "USD", "late"),
        Envelope(uuid.uuid4().hex, 7),
    )
    # As an older ledger, whose decoder did not know this command, parked it: its bytes and
    # key, reason undecodable, from the customer's partition of the commands topic.
    commands = topics.topic_name(topics.COMMANDS, stack.prefix)
    key = customer.encode()
    partition = DefaultPartitioner()(key, list(range(8)), list(range(8)))
    producer = make_producer(stack.kafka, "test-parker")
    await producer.start()
    try:
        await producer.send_and_wait(
            topics.topic_name(topics.DEAD_LETTER, stack.prefix),
            raw,
            key=key,
            headers=[
                ("reason", b"undecodable"),
                ("error", b"unknown command type 'deposit'"),
                ("source", f"{commands}:{partition}:0".encode()),
            ],
        )
        letter = await until(lambda: parked(api, request_id))
        path = f"/v1/dead-letters/{letter['partition']}/{letter['offset']}"
        status, whole = await api.reader.get(path)
        assert (status, whole["storedOutcome"], whole["decodes"]) == (200, None, True)

        status, answer = await api.operator.post(path + "/redrive", {"reason": "decoder fixed"})
        assert status == 200, answer
        assert answer["action"]["redrivenTo"] == f"{commands}:{partition}"

        async def applied() -> bool:
            status, view = await api.reader.get(f"/v1/customers/{customer}/balances/{balance}")
            return status == 200 and view["total"] == "150.00"

        await until(applied)
        status, answer = await api.operator.post(path + "/redrive", {})
        assert (status, answer["error"]) == (409, "dead_letter_redriven")
        # The same bytes once more, straight to the log (a redrive by hand): the ledger answers
        # the stored outcome and books nothing.
        await producer.send_and_wait(commands, raw, key=key, partition=partition)
        await operator.deposit(customer, balance, "1.00")  # after it in the same partition
    finally:
        await producer.stop()
    assert await entries_of(stack, request_id) == 1
    status, view = await api.reader.get(f"/v1/customers/{customer}/balances/{balance}")
    assert (status, view["total"]) == (200, "151.00")


async def wait_job(api: OperatorApi, job_id: str, seen: list[dict[str, Any]]) -> dict[str, Any]:
    async def finished() -> dict[str, Any] | None:
        status, job = await api.reader.get(f"/v1/jobs/{job_id}")
        assert status == 200, job
        seen.append(job)
        return job if job["status"] not in ("queued", "running") else None

    found: dict[str, Any] = await until(finished, timeout=90)
    return found


async def test_a_republish_job_runs_to_its_end_and_a_second_one_waits_its_turn(
    api: OperatorApi, operator: Operator
) -> None:
    await operator.customer_with_balance("USD", "5.00")
    params = {"partitions": list(range(8)), "fromSeq": 1}
    status, job = await api.operator.post("/v1/jobs", {"type": "republish", "params": params})
    assert (status, job["status"], job["type"]) == (202, "queued", "republish"), job
    status, refused = await api.operator.post("/v1/jobs", {"type": "republish", "params": params})
    assert (status, refused["error"]) == (409, "job_already_active")
    status, answer = await api.reader.post("/v1/jobs", {"type": "projection_rebuild"})
    assert (status, answer["error"]) == (403, "role_forbidden")

    seen: list[dict[str, Any]] = []
    done = await wait_job(api, job["jobId"], seen)
    assert done["status"] == "succeeded", done
    assert any(s["status"] == "running" and s["progress"]["done"] > 0 for s in seen), seen
    assert done["progress"]["done"] == done["progress"]["total"] == done["result"]["sent"] > 0
    status, listed = await api.reader.get("/v1/jobs?limit=5")
    assert status == 200 and listed["jobs"][0]["jobId"] == job["jobId"]


async def test_a_job_is_cancelled_and_its_type_is_free_again(api: OperatorApi) -> None:
    params = {"partitions": list(range(8)), "fromSeq": 1}
    status, job = await api.operator.post("/v1/jobs", {"type": "republish", "params": params})
    assert status == 202, job
    status, cancelled = await api.operator.post(f"/v1/jobs/{job['jobId']}/cancel", {})
    assert (status, cancelled["status"]) == (200, "cancelled")
    status, answer = await api.operator.post(f"/v1/jobs/{job['jobId']}/cancel", {})
    assert (status, answer["error"]) == (409, "job_finished")
    done = await wait_job(api, job["jobId"], [])
    assert done["status"] == "cancelled"
    status, unknown = await api.reader.get(f"/v1/jobs/{uuid.uuid4()}")
    assert (status, unknown["error"]) == (404, "job_not_found")


async def test_a_rebuild_job_compares_every_balance_with_the_ledger(
    api: OperatorApi, operator: Operator, stack: Stack
) -> None:
    await operator.customer_with_balance("EUR", "12.34")
    status, job = await api.operator.post("/v1/jobs", {"type": "projection_rebuild"})
    assert status == 202, job
    done = await wait_job(api, job["jobId"], [])
    assert done["status"] == "succeeded", done
    comparison = done["result"]["comparison"]
    assert comparison["match"] is True, comparison
    conn = await asyncpg.connect(stack.dsn)
    try:
        balances = await conn.fetchval("SELECT count(*) FROM accounts WHERE kind = 'customer'")
    finally:
        await conn.close()
    assert comparison["balancesCompared"] == balances >= 1
    assert done["progress"]["done"] == done["result"]["facts"] > 0
    assert done["result"]["liveReadModelTouched"] is False


@pytest.fixture
async def fresh(pg_template: str) -> AsyncIterator[str]:
    name = await create_database(pg_template)
    try:
        # The live ledger refused a command through this trigger; the replay must too.
        await execute(dsn_for(name), REFUSE_TRIGGER)
        yield name
    finally:
        await drop_database(name)


async def test_a_replay_job_into_a_fresh_database_reports_matching_hashes(
    api: OperatorApi, operator: Operator, fresh: str
) -> None:
    await operator.customer_with_balance("USD", "7.00")
    body = {"type": "replay", "params": {"intoDatabase": fresh}}
    status, job = await api.operator.post("/v1/jobs", body)
    assert status == 202, job
    done = await wait_job(api, job["jobId"], [])
    assert done["status"] == "succeeded", done
    result = done["result"]
    assert (result["match"], result["verdict"]) == (True, "match"), result
    assert result["freshHash"] == result["liveHash"]
    assert done["progress"]["done"] == done["progress"]["total"] == result["commands"] > 0
    # Into the live database itself: refused before anything runs.
    live = Path(api.service.env["WALLET_PG_DSN"]).name
    body = {"type": "replay", "params": {"intoDatabase": live}}
    status, answer = await api.operator.post("/v1/jobs", body)
    assert (status, answer["error"]) == (400, "invalid_field")


def test_the_rebuild_command_refuses_while_the_projection_runs(stack: Stack) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "projection", "rebuild"],
        env=stack.projection.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert "a projection is running on this database" in done.stderr


async def test_the_rebuild_command_stores_the_read_model_and_compares_it(
    stack: Stack, operator: Operator
) -> None:
    customer, balance = await operator.customer_with_balance("USD", "3.00")
    stack.projection.stop()
    try:
        conn = await asyncpg.connect(stack.dsn)
        try:  # a drifted read model, which the rebuild replaces
            await conn.execute("UPDATE balance_view SET amount = amount + 1")
        finally:
            await conn.close()
        done = subprocess.run(
            [sys.executable, "-m", "projection", "rebuild"],
            env=stack.projection.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        stack.projection.start()
        await wait_ready(stack.projection)
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"^rebuilt (\d+)/\1 facts", done.stderr, re.M), done.stderr
    assert "no difference" in done.stdout
    conn = await asyncpg.connect(stack.dsn)
    try:
        stored = await conn.fetchval(
            "SELECT amount FROM balance_view WHERE customer_id = $1 AND balance_id = $2",
            customer,
            balance,
        )
    finally:
        await conn.close()
    assert stored == 300


async def facts_since(stack: Stack, since: datetime) -> list[tuple[bytes, bytes]]:
    """The outbox rows (key, payload) of facts that occurred at or after ``since``."""
    conn = await asyncpg.connect(stack.dsn)
    try:
        rows = await conn.fetch(
            """SELECT key, payload FROM outbox
                WHERE (convert_from(payload, 'UTF8')::jsonb ->> 'occurred_at')::timestamptz >= $1
                ORDER BY partition, seq""",
            since,
        )
    finally:
        await conn.close()
    return sorted((row["key"].encode(), bytes(row["payload"])) for row in rows)


class EventsLog:
    """ledger.events from an offset on: what was sent to it after a point in time."""

    def __init__(self, stack: Stack) -> None:
        self.topic = topics.topic_name(topics.EVENTS, stack.prefix)
        self.consumer = make_consumer(stack.kafka, "test-republished")
        self.start: dict[TopicPartition, int] = {}

    async def __aenter__(self) -> EventsLog:
        await self.consumer.start()
        (spec,) = [t for t in topics.TOPICS if t.name == topics.EVENTS]
        assigned = [TopicPartition(self.topic, p) for p in range(spec.partitions)]
        self.consumer.assign(assigned)
        self.start = await self.consumer.end_offsets(assigned)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.consumer.stop()

    async def sent_since_start(self) -> list[tuple[bytes, bytes]]:
        """Every message (key, value) sent after the start: up to the end offsets now."""
        end = await self.consumer.end_offsets(list(self.start))
        got: list[tuple[bytes, bytes]] = []
        for tp, offset in self.start.items():
            self.consumer.seek(tp, offset)
        async with asyncio.timeout(30):
            while len(got) < sum(end[tp] - self.start[tp] for tp in self.start):
                batches = await self.consumer.getmany(timeout_ms=500)
                for tp, messages in batches.items():
                    got += [(m.key or b"", m.value or b"") for m in messages if m.offset < end[tp]]
        return sorted(got)


async def two_moments_of_facts(operator: Operator) -> datetime:
    """Facts before and after a moment (returned): the moment splits the outbox."""
    await operator.customer_with_balance("USD", "1.00")
    await asyncio.sleep(0.05)  # facts are stamped in milliseconds
    since = datetime.now(UTC)
    await asyncio.sleep(0.05)
    await operator.customer_with_balance("USD", "2.00")
    return since


async def test_the_republish_command_since_a_time_resends_exactly_the_facts_from_then(
    stack: Stack, operator: Operator
) -> None:
    since = await two_moments_of_facts(operator)
    expected = await facts_since(stack, since)
    assert expected, "no fact after the moment"
    async with EventsLog(stack) as events:
        done = subprocess.run(
            [sys.executable, "-m", "ledger.republish", "--since", since.isoformat()],
            env=stack.ledger.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        # The same bytes under the same keys, so the same event ids; nothing older, nothing more.
        assert await events.sent_since_start() == expected


async def test_a_republish_job_since_a_time_resends_exactly_the_facts_from_then(
    api: OperatorApi, stack: Stack, operator: Operator
) -> None:
    since = await two_moments_of_facts(operator)
    expected = await facts_since(stack, since)
    async with EventsLog(stack) as events:
        params = {"since": since.isoformat()}
        status, job = await api.operator.post("/v1/jobs", {"type": "republish", "params": params})
        assert status == 202, job
        done = await wait_job(api, job["jobId"], [])
        assert done["status"] == "succeeded", done
        assert done["result"]["sent"] == len(expected)
        assert await events.sent_since_start() == expected


def wallet(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """The installed ``wallet`` console script, as an operator runs it."""
    return subprocess.run(
        [str(Path(sys.executable).with_name("wallet")), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_the_wallet_cli_republishes_runs_a_job_and_lists_dead_letters_through_the_api(
    api: OperatorApi, stack: Stack, operator: Operator, tmp_path: Path
) -> None:
    credentials = tmp_path / "cli.json"
    create_key(api.service.env, credentials, base_url=api.service.url, name="cli", role="operator")
    env = api.service.env | {"WALLET_OPERATOR_CREDENTIALS": str(credentials)}
    since = await two_moments_of_facts(operator)
    expected = await facts_since(stack, since)

    async with EventsLog(stack) as events:
        done = wallet(env, "republish", "--since", since.isoformat(), "--json")
        assert done.returncode == 0, done.stdout + done.stderr
        assert orjson.loads(done.stdout)["republished"] == len(expected)
        assert await events.sent_since_start() == expected

    params = orjson.dumps({"since": since.isoformat()}).decode()
    started = wallet(env, "jobs", "start", "republish", params, "--json")
    assert started.returncode == 0, started.stdout + started.stderr
    job = orjson.loads(started.stdout)
    assert (job["type"], job["status"]) == ("republish", "queued")
    assert (await wait_job(api, job["jobId"], []))["status"] == "succeeded"
    shown = wallet(env, "jobs", "show", job["jobId"], "--json")
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert orjson.loads(shown.stdout)["result"]["sent"] == len(expected)

    listed = wallet(env, "dead-letters", "list", "--json")
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert orjson.loads(listed.stdout) == (await api.reader.get("/v1/dead-letters"))[1]
    nobody = env | {"WALLET_OPERATOR_CREDENTIALS": str(tmp_path / "none.json")}
    unsigned = wallet(nobody, "dead-letters", "list")
    assert unsigned.returncode != 0
