"""The order poller and the status mapping, with a scripted source and a fake clock."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

import pytest

from swapgate import (
    AuthRejected,
    Backoff,
    Completed,
    Failed,
    MalformedResponse,
    OrderNotFinal,
    OrderStatus,
    OrderView,
    Pending,
    SwapgateTimeout,
    await_final,
    status_from_view,
)

pytestmark = pytest.mark.unit

DONE = Completed(
    amount_received=Decimal(1),
    amount_paid_out=Decimal("49590.628689"),
    platform_margin=Decimal("502.43798064469251204"),
    affiliate_margin=None,
    exchange_amount=None,
    payout_rounding_remainder=Decimal("0.000000631150938348"),
)


class FakeTime:
    """A clock that only moves when the poller sleeps; records every sleep."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class ScriptedSource:
    """Answers (or raises) from a script; repeats the last entry once it runs out."""

    def __init__(self, script: Sequence[OrderStatus | Exception]):
        self.script = list(script)
        self.calls = 0

    async def get_status(self, order_id: str) -> OrderStatus:
        entry = self.script[min(self.calls, len(self.script) - 1)]
        self.calls += 1
        if isinstance(entry, Exception):
            raise entry
        return entry


NO_JITTER = Backoff(initial_s=0.5, multiplier=2.0, max_delay_s=4.0, jitter=0.0)


async def test_poller_returns_the_first_final_status() -> None:
    time = FakeTime()
    source = ScriptedSource([Pending("created"), Pending("exchanging"), DONE])
    result = await await_final(source, "o1", clock=time.clock, sleep=time.sleep, backoff=NO_JITTER)
    assert result == DONE
    assert source.calls == 3


async def test_poller_backs_off_exponentially_up_to_the_cap() -> None:
    time = FakeTime()
    source = ScriptedSource([Pending("created")] * 7 + [DONE])
    await await_final(source, "o1", clock=time.clock, sleep=time.sleep, backoff=NO_JITTER)
    assert time.sleeps == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0]


async def test_poller_jitter_only_shortens_each_wait_within_its_fraction() -> None:
    time = FakeTime()
    source = ScriptedSource([Pending("created")] * 3 + [DONE])
    jittered = Backoff(initial_s=1.0, multiplier=2.0, max_delay_s=8.0, jitter=0.5)
    await await_final(
        source, "o1", clock=time.clock, sleep=time.sleep, backoff=jittered, unit_random=lambda: 0.5
    )
    assert time.sleeps == [0.75, 1.5, 3.0]


async def test_poller_never_sleeps_past_its_deadline_and_then_gives_up() -> None:
    time = FakeTime()
    source = ScriptedSource([Pending("exchanging")])
    with pytest.raises(OrderNotFinal) as gave_up:
        await await_final(
            source, "o1", timeout_s=5.0, clock=time.clock, sleep=time.sleep, backoff=NO_JITTER
        )
    assert time.sleeps == [0.5, 1.0, 2.0, 1.5]
    assert time.now == 5.0
    assert gave_up.value.last_status == Pending("exchanging")


async def test_poller_polls_through_retriable_errors() -> None:
    time = FakeTime()
    source = ScriptedSource([SwapgateTimeout("slow"), Pending("created"), DONE])
    assert await await_final(source, "o1", clock=time.clock, sleep=time.sleep) == DONE


async def test_poller_raises_non_retriable_errors_at_once() -> None:
    time = FakeTime()
    source = ScriptedSource([AuthRejected(403, {"message": "bad signature"})])
    with pytest.raises(AuthRejected):
        await await_final(source, "o1", clock=time.clock, sleep=time.sleep)
    assert source.calls == 1


async def test_poller_reports_each_status_change_once() -> None:
    time = FakeTime()
    seen: list[OrderStatus] = []

    async def record(status: OrderStatus) -> None:
        seen.append(status)

    source = ScriptedSource([Pending("created"), Pending("created"), Failed("aml"), DONE])
    await await_final(source, "o1", clock=time.clock, sleep=time.sleep, on_change=record)
    assert seen == [Pending("created"), Failed("aml")]


def view(**fields: object) -> OrderView:
    return OrderView.from_wire({"id": "o1", **fields})


def test_unknown_provider_status_is_treated_as_pending() -> None:
    assert status_from_view(view(status="aml_frozen")) == Pending("aml_frozen")


def test_completed_view_maps_to_completed_with_amounts() -> None:
    status = status_from_view(
        view(
            status="completed",
            amountReceived="1",
            amountPaidOut="49590.628689",
            platformMargin="502.43798064469251204",
            payoutRoundingRemainder="0.000000631150938348",
        )
    )
    assert status == DONE


def test_completed_view_without_amounts_is_malformed() -> None:
    with pytest.raises(MalformedResponse):
        status_from_view(view(status="completed"))
