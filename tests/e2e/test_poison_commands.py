"""Commands the ledger can never apply get a final answer, once, and their partition moves on.

The commands here go to ``ledger.commands`` directly (as any producer could send them), so they
test the ledger's own guard, not the edge's input checks: text Postgres can not hold (NUL), a
refusal injected into the database (a trigger), a flood of both among good callbacks, and the
writer's idempotency paths with an outcome cache of one entry and no verify window.
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from collections.abc import AsyncIterator, Awaitable

import aiohttp
import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer

from callback_load import (
    Call,
    call_until_definitive,
    count_entries,
    credit,
    ledger_metric,
    paused_ledger,
    settled_audit,
)
from wallet_clients import Answer, Operator, Wallet
from wallet_platform import topics
from wallet_stack import Stack

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


@pytest.fixture(scope="module")
def stack_env() -> dict[str, str]:
    # The writer's hardest idempotency paths: one remembered outcome per partition, and no
    # look-ups after a takeover (every old request is caught by the primary key).
    return {"WALLET_LEDGER_OUTCOME_CACHE": "1", "WALLET_LEDGER_VERIFY_SECONDS": "0"}


@pytest.fixture
async def refusing_database(stack: Stack) -> AsyncIterator[None]:
    conn = await asyncpg.connect(stack.dsn)
    try:
        await conn.execute(REFUSE_TRIGGER)
        yield
    finally:
        await conn.execute(
            "DROP TRIGGER IF EXISTS refuse_marked_comment ON journal_entries;"
            "DROP FUNCTION IF EXISTS refuse_marked_comment();"
        )
        await conn.close()


def takeovers(stack: Stack) -> int:
    return stack.ledger.log_path.read_text().count('"partition_taken"')


async def dead_letters(stack: Stack) -> list[dict[str, bytes]]:
    """The headers of every record on the dead-letter topic so far."""
    consumer = AIOKafkaConsumer(
        topics.topic_name(topics.DEAD_LETTER, stack.prefix),
        bootstrap_servers=stack.kafka,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        batches = await consumer.getmany(timeout_ms=2000)
        return [dict(m.headers) for msgs in batches.values() for m in msgs]
    finally:
        await consumer.stop()


async def test_an_old_request_after_the_verify_window_is_replayed_without_a_reload(
    operator: Operator, http: aiohttp.ClientSession, stack: Stack
) -> None:
    customer, balance = await operator.customer_with_balance("USD", "10.00")
    first = await operator.send(credit(customer, balance, "first", "old-request"))
    assert first.status == 201
    await operator.send(credit(customer, balance, "evicts the first from the cache"))
    taken, misses = (
        takeovers(stack),
        await ledger_metric(http, stack, "ledger_stored_outcome_misses_total"),
    )

    again = await operator.send(credit(customer, balance, "first", "old-request"))

    assert (again.status, again.body) == (first.status, first.body)
    # Caught by the primary key and decided again with a look-up: no partition was reloaded.
    assert await ledger_metric(http, stack, "ledger_stored_outcome_misses_total") == misses + 1
    assert takeovers(stack) == taken


async def test_credit_with_a_nul_comment_is_refused_and_the_partition_moves_on(
    operator: Operator, http: aiohttp.ClientSession, stack: Stack
) -> None:
    customer, balance = await operator.customer_with_balance("USD", "10.00")
    taken, failures = (
        takeovers(stack),
        await ledger_metric(http, stack, "ledger_batch_failures_total"),
    )
    poison = credit(customer, balance, "a\x00b")

    refused = await operator.send(poison)
    again = await operator.send(poison)
    after = await operator.send(credit(customer, balance, "a good one behind it"))

    assert refused.status == 400 and refused.json["error"] == "command_refused"
    assert "NUL" in refused.json["message"]
    assert (again.status, again.body) == (refused.status, refused.body)
    assert after.status == 201 and after.json["balance_current_amount"] == "11.00"
    assert await count_entries(stack, [poison.request_id]) == {}
    # Refused before the database saw it: no batch failed, nothing was reloaded.
    assert await ledger_metric(http, stack, "ledger_batch_failures_total") == failures
    assert takeovers(stack) == taken
    sources = [h.get("error", b"") for h in await dead_letters(stack)]
    assert any(b"NUL" in s for s in sources)


@pytest.mark.usefixtures("refusing_database")
async def test_a_database_refusal_is_narrowed_down_to_its_command_and_stored(
    operator: Operator, stack: Stack
) -> None:
    customer, balance = await operator.customer_with_balance("USD", "10.00")
    good = [credit(customer, balance, f"good {i}") for i in range(30)]
    poison = credit(customer, balance, "refuse-me")
    batch = [*good[:15], poison, *good[15:]]

    answers = await paused_ledger(stack, [operator.send(cmd) for cmd in batch])

    by_id = {cmd.request_id: a for cmd, a in zip(batch, answers, strict=True)}
    assert by_id[poison.request_id].status == 400
    assert by_id[poison.request_id].json["error"] == "command_refused"
    assert all(by_id[cmd.request_id].status == 201 for cmd in good)
    entries = await count_entries(stack, [cmd.request_id for cmd in batch])
    assert entries == {cmd.request_id: 1 for cmd in good}
    # Stored: the retry gets the same bytes, even once the database would take it.
    conn = await asyncpg.connect(stack.dsn)
    try:
        await conn.execute("DROP TRIGGER refuse_marked_comment ON journal_entries")
    finally:
        await conn.close()
    again = await operator.send(poison)
    assert (again.status, again.body) == (400, by_id[poison.request_id].body)
    assert await settled_audit(stack) == {}


async def test_a_duplicate_in_one_batch_with_a_one_entry_cache_is_answered_once(
    operator: Operator, stack: Stack
) -> None:
    customer, balance = await operator.customer_with_balance("USD", "10.00")
    first = credit(customer, balance, "twice in one batch")
    batch = [first, credit(customer, balance, "b"), credit(customer, balance, "c"), first]

    answers = await paused_ledger(stack, [operator.send(cmd) for cmd in batch])

    assert [a.status for a in answers] == [201, 201, 201, 201]
    assert answers[0].body == answers[3].body
    assert await count_entries(stack, [first.request_id]) == {first.request_id: 1}


@pytest.mark.usefixtures("refusing_database")
async def test_a_flood_of_poison_does_not_hold_up_good_callbacks(
    operator: Operator, wallet: Wallet, stack: Stack
) -> None:
    accounts = [await operator.customer_with_balance("USD", "100.00") for _ in range(6)]
    good = [
        Call("credit" if i % 3 else "debit", *accounts[i % 6], uuid.uuid4().hex, "0.10")
        for i in range(240)
    ]
    # Poison on the same customers as good traffic and on customers of their own: text Postgres
    # can not hold, and rows the database refuses.
    poison = [credit(*accounts[i % 6], "refuse-me" if i % 2 else "nul \x00") for i in range(60)]
    latencies: list[float] = []
    first_tries: list[int] = []

    async def good_call(call: Call) -> Answer:
        started = time.perf_counter()
        answer = await wallet.move(
            call.kind, call.customer, call.balance, call.amount, call.request_id
        )
        first_tries.append(answer.status)
        if answer.status >= 500:
            answer = await call_until_definitive(wallet, call)
        latencies.append(time.perf_counter() - started)
        return answer

    limiter = asyncio.Semaphore(16)

    async def limited(work: Awaitable[Answer]) -> Answer:
        async with limiter:
            return await work

    sends = [limited(good_call(c)) for c in good] + [limited(operator.send(p)) for p in poison]
    answers = await asyncio.gather(*sends)

    assert all(a.status == 201 for a in answers[: len(good)])
    assert all(a.json["error"] == "command_refused" for a in answers[len(good) :])
    # No good callback waited for the poison long enough to see a 503.
    assert all(status == 201 for status in first_tries)
    entries = await count_entries(stack, [c.request_id for c in good])
    assert entries == {c.request_id: 1 for c in good}
    assert await settled_audit(stack) == {}
    latencies.sort()
    print(
        f"good callbacks among poison: p50 {statistics.median(latencies) * 1000:.1f} ms, "
        f"p99 {latencies[int(len(latencies) * 0.99) - 1] * 1000:.1f} ms"
    )
