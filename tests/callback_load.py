"""Quadcode's traffic while something fails: debits and credits, each retried with its own
request_id until it gets a final answer, and the checks that nothing was lost or doubled.

Shared by the tests that kill our processes (``test_crash_recovery``) and the ones that restart
or crash Postgres and Kafka underneath them (``test_dependency_restarts``).
"""

from __future__ import annotations

import asyncio
import random
import signal
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
import asyncpg

from ledger.audit import audit
from ledger_core.commands import MoneyCommand
from wallet_clients import Answer, Wallet
from wallet_stack import Stack


@dataclass(frozen=True, slots=True)
class Call:
    """One callback as Quadcode would send it (and send again, unchanged, on a retry)."""

    kind: str
    customer: str
    balance: str
    request_id: str
    amount: str


def plan_calls(accounts: list[tuple[str, str]], count: int, seed: int = 7) -> list[Call]:
    """``count`` debits and credits (two to one) of 0.01 to 3.00 over ``accounts``."""
    rng = random.Random(seed)
    return [
        Call(
            rng.choice(["debit", "debit", "credit"]),
            *rng.choice(accounts),
            uuid.uuid4().hex,
            f"{rng.randint(1, 300) / 100:.2f}",
        )
        for _ in range(count)
    ]


def _failure(answer: Answer) -> str:
    try:
        return f"{answer.status} {answer.json['error']}"
    except (ValueError, KeyError, TypeError):
        return f"{answer.status} {answer.body[:80]!r}"


async def call_until_definitive(
    wallet: Wallet,
    call: Call,
    *,
    within: float = 60.0,
    on_retry: Callable[[str], None] | None = None,
) -> Answer:
    """Quadcode's behaviour: send the call again, with the same request_id, until the answer is
    not a 5xx (a 503, or no answer at all), backing off from 0.1 s to 1 s between tries.
    ``on_retry`` hears why each try was not final (``"503 ledger_timeout"``, an exception)."""
    deadline = time.monotonic() + within
    pause = 0.1
    last = "nothing"
    while time.monotonic() < deadline:
        try:
            answer = await wallet.move(
                call.kind, call.customer, call.balance, call.amount, call.request_id
            )
        except (aiohttp.ClientError, OSError) as exc:
            last = type(exc).__name__
        else:
            if answer.status < 500:
                return answer
            last = _failure(answer)
        if on_retry is not None:
            on_retry(last)
        await asyncio.sleep(pause)
        pause = min(pause * 2, 1.0)
    raise AssertionError(f"{call} got no final answer within {within:g}s (last: {last})")


@dataclass
class CallbackLoad:
    """Runs ``calls`` with at most ``concurrency`` in flight; counts the final answers so a test
    can strike while the load runs."""

    wallet: Wallet
    calls: list[Call]
    concurrency: int = 32
    within: float = 60.0
    answered: int = 0
    retries: Counter[str] = field(default_factory=Counter)
    """Why tries were not final, and how often: what callers saw while something failed."""
    _limiter: asyncio.Semaphore = field(init=False)

    def __post_init__(self) -> None:
        self._limiter = asyncio.Semaphore(self.concurrency)

    def _retried(self, reason: str) -> None:
        self.retries[reason] += 1

    async def _one(self, call: Call) -> Answer:
        async with self._limiter:
            answer = await call_until_definitive(
                self.wallet, call, within=self.within, on_retry=self._retried
            )
            self.answered += 1
            return answer

    async def run(self) -> list[Answer]:
        """Every call's final answer, in the order of ``calls``."""
        return list(await asyncio.gather(*(self._one(call) for call in self.calls)))

    async def answered_at_least(self, count: int, timeout: float = 60.0) -> None:
        """Wait until ``count`` calls got their final answer."""
        async with asyncio.timeout(timeout):
            while self.answered < count:
                await asyncio.sleep(0.01)


def credit(
    customer: str, balance: str, comment: str, request_id: str | None = None
) -> MoneyCommand:
    """A credit of 1.00 USD, sent to ``ledger.commands`` as any producer could."""
    return MoneyCommand(
        "credit", customer, balance, request_id or uuid.uuid4().hex, "1.00", "USD", comment
    )


async def ledger_metric(
    http: aiohttp.ClientSession, stack: Stack, name: str, label: str = ""
) -> float:
    """The sum of a ledger counter over its samples (only those with ``label``, e.g.
    ``cause="undecidable"``, when given)."""
    async with http.get(stack.ledger.url + "/metrics") as resp:
        text = await resp.text()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name) and not line.startswith("#") and label in line
    )


async def paused_ledger(stack: Stack, sends: list[Awaitable[Answer]]) -> list[Answer]:
    """Send commands while the writer is stopped, so they reach it as one batch."""
    stack.ledger.signal(signal.SIGSTOP)
    try:
        tasks = [asyncio.ensure_future(s) for s in sends]
        await asyncio.sleep(1.0)  # every command is in Kafka before the writer wakes up
    finally:
        stack.ledger.signal(signal.SIGCONT)
    return list(await asyncio.gather(*tasks))


async def count_entries(stack: Stack, request_ids: list[str]) -> dict[str, int]:
    """Journal entries per request id."""
    conn = await asyncpg.connect(stack.dsn)
    try:
        rows = await conn.fetch(
            "SELECT request_id, count(*) AS n FROM journal_entries WHERE request_id = ANY($1) "
            "GROUP BY request_id",
            request_ids,
        )
    finally:
        await conn.close()
    return {r["request_id"]: r["n"] for r in rows}


async def settled_audit(stack: Stack) -> dict[str, int]:
    """The ledger audit's failures, once the projection has caught up (it is eventually
    consistent); empty when every check passes."""
    conn = await asyncpg.connect(stack.dsn)
    try:
        for _ in range(100):
            result = await audit(conn)
            if result.ok:
                break
            await asyncio.sleep(0.1)
    finally:
        await conn.close()
    return result.failures


async def assert_booked_exactly_once(
    stack: Stack, calls: list[Call], answers: list[Answer]
) -> None:
    """Every call got a final answer (201 or 402), every 201 has exactly one journal entry and
    every 402 none, and the ledger audit passes (sums zero, projection equal to the ledger)."""
    assert {a.status for a in answers} <= {201, 402}, sorted({a.status for a in answers})
    entries = await count_entries(stack, [c.request_id for c in calls])
    for call, answer in zip(calls, answers, strict=True):
        expected = 1 if answer.status == 201 else 0
        assert entries.get(call.request_id, 0) == expected, (call, answer)
    assert await settled_audit(stack) == {}
