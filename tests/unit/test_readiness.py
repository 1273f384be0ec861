"""/ready's rounds of checks: one round at a time, shared by its callers, reused for an interval."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from wallet_platform.service import Readiness, ReadinessCheck

pytestmark = pytest.mark.unit


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def counting_check(calls: list[int], *, ok: bool = True, delay: float = 0.01) -> ReadinessCheck:
    async def kafka() -> dict[str, bool]:
        calls.append(1)
        await asyncio.sleep(delay)  # long enough for every concurrent caller to arrive
        return {"kafka": ok}

    return kafka


async def test_fifty_concurrent_callers_share_one_round_of_checks() -> None:
    calls: list[int] = []
    readiness = Readiness([counting_check(calls)], clock=Clock())

    answers = await asyncio.gather(*(readiness.answer() for _ in range(50)))

    assert len(calls) == 1
    assert {status for status, _ in answers} == {200}
    assert orjson.loads(answers[0][1]) == {"status": "ready", "checks": {"kafka": True}}


async def test_an_answer_is_reused_within_the_interval_and_renewed_after_it() -> None:
    calls: list[int] = []
    clock = Clock()
    readiness = Readiness([counting_check(calls)], interval=1.0, clock=clock)

    await readiness.answer()
    clock.now += 0.9
    await readiness.answer()
    assert len(calls) == 1
    clock.now += 0.2
    await readiness.answer()
    assert len(calls) == 2


async def test_a_failed_answer_is_reused_too() -> None:
    calls: list[int] = []
    readiness = Readiness([counting_check(calls, ok=False)], clock=Clock())

    first = await readiness.answer()
    second = await readiness.answer()

    assert first[0] == second[0] == 503
    assert len(calls) == 1


async def test_a_check_that_raises_or_hangs_means_not_ready() -> None:
    async def postgres() -> dict[str, bool]:
        raise ConnectionRefusedError

    async def projection() -> dict[str, bool]:
        await asyncio.sleep(10)
        return {"projection": True}

    readiness = Readiness([postgres, projection], timeout=0.05, clock=Clock())

    status, body = await readiness.answer()

    assert status == 503
    assert orjson.loads(body)["checks"] == {"postgres": False, "projection": False}


async def test_a_caller_that_goes_away_does_not_cancel_the_round_of_the_others() -> None:
    calls: list[int] = []
    readiness = Readiness([counting_check(calls, delay=0.05)], clock=Clock())
    first = asyncio.ensure_future(readiness.answer())
    second = asyncio.ensure_future(readiness.answer())
    await asyncio.sleep(0.01)

    first.cancel()

    assert (await second)[0] == 200
    assert len(calls) == 1


async def test_no_checks_yet_means_not_ready() -> None:
    checks: list[ReadinessCheck] = []
    clock = Clock()
    readiness = Readiness(checks, clock=clock)

    assert (await readiness.answer())[0] == 503
    checks.append(counting_check([]))  # a resource opened meanwhile
    clock.now += 1.0
    assert (await readiness.answer())[0] == 200
