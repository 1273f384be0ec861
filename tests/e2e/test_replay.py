"""Re-running the command log into a fresh database gives the live ledger's state hash.

Live traffic first: deposits, debits and credits through the edge while the ledger is killed
(SIGKILL) and restarted, retried requests, a reused request id, an exchange settled and one
voided, a block, and poison (undecodable bytes, text Postgres can not hold, a command the
database refuses). Then ``python -m ledger.replay`` runs it all again into a fresh database
(the same schema: the refusing trigger is installed there too) and both hashes must match; a
fresh ledger changed by hand, or by a trigger while it is replayed, must not.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import orjson
import pytest

from callback_load import CallbackLoad, assert_booked_exactly_once, plan_calls
from ledger_core.commands import (
    ExchangeReserve,
    ExchangeSettle,
    ExchangeVoid,
    MoneyCommand,
    OpenBalance,
)
from wallet_clients import Operator, Wallet
from wallet_platform import topics
from wallet_platform.kafka import make_producer
from wallet_stack import REPO, Stack, create_database, drop_database, dsn_for

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

# Changes one entry's comment as the replay writes it: the fresh ledger is no longer the live one.
ALTER_TRIGGER = """
CREATE FUNCTION alter_a_comment() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.comment = 'payout' THEN
        NEW.comment := 'payout (altered)';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER alter_a_comment BEFORE INSERT ON journal_entries
    FOR EACH ROW EXECUTE FUNCTION alter_a_comment();
"""

HASH_LINE = re.compile(r"^(live|fresh) ledger:\s+state hash ([0-9a-f]{64}) ", re.M)


@dataclass
class Replayed:
    code: int
    output: str
    hashes: dict[str, str]


def replay(stack: Stack, into: str) -> Replayed:
    code, output = stack.run_tool("ledger.replay", "--into-dsn", into, "--progress-seconds", "1")
    return Replayed(code, output, {m[0]: m[1] for m in HASH_LINE.findall(output)})


def wallet_verify(stack: Stack, dsn: str, expect: str) -> subprocess.CompletedProcess[str]:
    """``wallet verify --dsn DSN --expect HASH --json``, the installed console script."""
    command = ["verify", "--dsn", dsn, "--expect", expect, "--json"]
    return subprocess.run(
        [str(Path(sys.executable).with_name("wallet")), *command],
        env={k: v for k, v in os.environ.items() if not k.startswith("WALLET_")},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def execute(dsn: str, sql: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture
async def fresh(pg_template: str) -> AsyncIterator[str]:
    """An empty database with the live ledger's schema (migrations and the refusing trigger)."""
    name = await create_database(pg_template)
    await execute(dsn_for(name), REFUSE_TRIGGER)
    yield dsn_for(name)
    await drop_database(name)


async def send_garbage(stack: Stack, customer: str) -> None:
    producer = make_producer(stack.kafka, "test-garbage")
    await producer.start()
    try:
        topic = topics.topic_name(topics.COMMANDS, stack.prefix)
        await producer.send_and_wait(topic, b"\xffnot a command", key=customer.encode())
    finally:
        await producer.stop()


async def exchanges(operator: Operator, customer: str, usdt: str) -> None:
    """One exchange settled, one voided: reservations, and an entry in two currencies."""
    btc = f"{customer}_BTC"
    assert (await operator.send(OpenBalance(customer, btc, "BTC", uuid.uuid4().hex))).status == 201
    for exchange_id in ("x-settled", "x-voided"):
        reserve = ExchangeReserve(customer, exchange_id, usdt, btc, "5", "USDT", "BTC", "quote")
        assert (await operator.send(reserve)).status == 201
    settle = ExchangeSettle(
        customer, "x-settled", "order-1", "BTC", "0.00119", "0.00000007", "0.00000024", "0.00000001"
    )
    assert (await operator.send(settle)).status == 201
    void = ExchangeVoid(customer, "x-voided", "order-2", "refunded by Swapgate")
    assert (await operator.send(void)).status == 200


@pytest.fixture(scope="module")
async def live_traffic(stack: Stack, operator: Operator, wallet: Wallet) -> None:
    """Everything the live ledger went through before it is replayed."""
    await execute(stack.dsn, REFUSE_TRIGGER)
    accounts = [await operator.customer_with_balance("USD", "20.00") for _ in range(6)]
    calls = plan_calls(accounts, 300)
    load = CallbackLoad(wallet, calls, concurrency=16)

    async def killer() -> None:
        await load.answered_at_least(100)
        stack.ledger.signal(signal.SIGKILL)
        stack.ledger.wait(10)
        await asyncio.sleep(0.5)
        stack.ledger.start()

    async with asyncio.timeout(180):
        answers, _ = await asyncio.gather(load.run(), killer())
    await assert_booked_exactly_once(stack, calls, answers)

    customer, balance = accounts[0]
    first = await wallet.credit(customer, balance, "1.00", request_id="again", comment="payout")
    again = await wallet.credit(customer, balance, "1.00", request_id="again", comment="payout")
    reused = await wallet.credit(customer, balance, "2.00", request_id="again", comment="payout")
    assert (first.status, again.body, reused.status) == (201, first.body, 409)
    refused = await operator.send(
        MoneyCommand("credit", customer, balance, "poison-1", "1.00", "USD", "refuse-me")
    )
    assert refused.json["error"] == "command_refused"
    nul = await operator.send(
        MoneyCommand("credit", customer, balance, "poison-2", "1.00", "USD", "a\x00b")
    )
    assert nul.json["error"] == "command_refused"
    await send_garbage(stack, customer)
    usdt_customer, usdt = await operator.customer_with_balance("USDT", "100")
    await exchanges(operator, usdt_customer, usdt)
    blocked, blocked_balance = accounts[1]
    assert (await operator.block(blocked)).status == 200
    assert (await wallet.debit(blocked, blocked_balance, "1.00")).status == 451


async def test_the_replayed_ledger_has_the_live_ledgers_state_hash(
    live_traffic: None, stack: Stack, fresh: str
) -> None:
    result = replay(stack, fresh)

    assert result.code == 0, result.output
    assert "MATCH: same commands, same ledger" in result.output
    assert result.hashes["live"] == result.hashes["fresh"]
    assert re.search(r"replayed \d+ commands in [\d.]+ s: [\d,]+ commands/s", result.output)


async def test_a_fresh_ledger_changed_after_the_replay_no_longer_hashes_the_same(
    live_traffic: None, stack: Stack, fresh: str
) -> None:
    result = replay(stack, fresh)
    assert result.code == 0, result.output
    intact = wallet_verify(stack, fresh, result.hashes["live"])
    assert intact.returncode == 0, intact.stdout + intact.stderr
    assert orjson.loads(intact.stdout)["journal_chain"]["intact"] is True
    await execute(
        fresh,
        "ALTER TABLE postings DISABLE TRIGGER USER;"
        "UPDATE postings SET amount = amount + 1, balance_after = balance_after + 1"
        " WHERE (account_id, seq) = (SELECT account_id, seq FROM postings LIMIT 1)",
    )

    code, output = stack.run_tool(
        "ledger.state_hash", "--dsn", fresh, "--expect", result.hashes["live"]
    )

    assert code == 1, output
    assert "MISMATCH" in output
    assert result.hashes["live"] not in output.split("MISMATCH")[0]
    # ``wallet verify`` finds the altered posting in the journal's hash chain too.
    altered = wallet_verify(stack, fresh, result.hashes["live"])
    assert altered.returncode == 1, altered.stdout + altered.stderr
    report = orjson.loads(altered.stdout)
    assert report["state_hash_matches"] is False
    assert report["journal_chain"]["intact"] is False


async def test_a_replay_that_writes_something_else_exits_with_a_mismatch(
    live_traffic: None, stack: Stack, fresh: str
) -> None:
    await execute(fresh, ALTER_TRIGGER)

    result = replay(stack, fresh)

    assert result.code == 1, result.output
    assert "MISMATCH" in result.output
    assert result.hashes["live"] != result.hashes["fresh"]


async def test_a_replay_refuses_a_database_that_is_not_empty(
    live_traffic: None, stack: Stack
) -> None:
    code, output = stack.run_tool("ledger.replay", "--into-dsn", dsn_for(stack.database + "?"))
    # The live ledger itself, named differently: refused for its rows, never written to.
    assert code == 2, output
    assert "not empty" in output


async def live_offsets(dsn: str) -> dict[int, int]:
    """The offsets the live ledger has applied, per partition of the command log."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT partition, next_offset FROM ledger_partitions")
    finally:
        await conn.close()
    return {row["partition"]: row["next_offset"] for row in rows}


def live_hash(stack: Stack) -> str:
    """The live ledger's state hash, as ``python -m ledger.state_hash`` prints it."""
    code, output = stack.run_tool("ledger.state_hash")
    found = re.search(r"^state hash ([0-9a-f]{64}) ", output, re.M)
    assert code == 0 and found is not None, output
    return found[1]


async def test_a_capped_uncompared_replay_to_the_logs_end_hashes_as_the_quiet_live_ledger(
    live_traffic: None, stack: Stack, fresh: str
) -> None:
    code, output = stack.run_tool(
        "ledger.replay",
        "--into-dsn",
        fresh,
        "--until-offsets",
        "end",
        "--no-compare",
        "--max-rate",
        "5000",
        "--progress-seconds",
        "1",
    )
    hashes = {m[0]: m[1] for m in HASH_LINE.findall(output)}

    assert code == 0, output
    assert set(hashes) == {"fresh"}, output  # not compared: the live ledger is not hashed
    # The live ledger is quiet after its traffic, so it sits at the log's end: the same ledger.
    expected = live_hash(stack)
    assert hashes["fresh"] == expected
    code, checked = stack.run_tool("ledger.state_hash", "--dsn", fresh, "--expect", expected)
    assert code == 0, checked
    assert "MISMATCH" not in checked


async def test_a_replay_to_an_offsets_file_is_compared_only_at_the_live_ledgers_offsets(
    live_traffic: None, stack: Stack, fresh: str, pg_template: str, tmp_path: Path
) -> None:
    at_live = tmp_path / "live-offsets.json"
    at_live.write_bytes(
        orjson.dumps({str(p): o for p, o in (await live_offsets(stack.dsn)).items()})
    )

    result = replay_until(stack, fresh, at_live)

    assert result.code == 0, result.output
    assert "MATCH: same commands, same ledger" in result.output
    assert result.hashes["live"] == result.hashes["fresh"]

    # Offsets the live ledger has moved past: the replay runs, but is compared with nothing.
    at_start = tmp_path / "start-offsets.json"
    at_start.write_bytes(orjson.dumps({str(p): 0 for p in await live_offsets(stack.dsn)}))
    name = await create_database(pg_template)
    try:
        earlier = replay_until(stack, dsn_for(name), at_start)
    finally:
        await drop_database(name)
    assert earlier.code == 3, earlier.output
    assert "NOT COMPARED" in earlier.output


def replay_until(stack: Stack, into: str, offsets: Path) -> Replayed:
    """``ledger.replay`` up to the offsets in the file ``offsets``."""
    code, output = stack.run_tool(
        "ledger.replay", "--into-dsn", into, "--until-offsets", str(offsets)
    )
    return Replayed(code, output, {m[0]: m[1] for m in HASH_LINE.findall(output)})
