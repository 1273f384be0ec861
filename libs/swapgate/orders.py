"""An order's life after creation, behind one small interface, and a poller for its end.

Swapgate documents neither order statuses nor webhooks, so the rest of the system only sees
:class:`OrderStatusSource` and our four states: pending, completed (with amounts), failed,
refunded. :class:`SimulatorStatusSource` reads our simulator's status endpoint; an adapter for
the real service replaces it when its status call is known. :func:`await_final` polls with
bounded, jittered exponential backoff; clock, sleep and randomness are injected.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol, TypeAlias

from swapgate.client import SwapgateClient
from swapgate.errors import MalformedResponse, OrderNotFinal, SwapgateError
from swapgate.wire import OrderView


@dataclass(frozen=True, slots=True)
class Pending:
    """Not final yet; ``stage`` is the provider's own status word (e.g. ``exchanging``)."""

    stage: str


@dataclass(frozen=True, slots=True)
class Completed:
    """Paid out. ``amount_received`` is in the source currency, ``amount_paid_out`` and the
    margins in the target currency; ``payout_rounding_remainder`` is what rounding the payout
    down to the currency's precision left over (zero when nothing was cut)."""

    amount_received: Decimal
    amount_paid_out: Decimal
    platform_margin: Decimal
    affiliate_margin: Decimal | None
    exchange_amount: Decimal | None
    payout_rounding_remainder: Decimal


@dataclass(frozen=True, slots=True)
class Failed:
    """Ended without an exchange or a refund."""

    reason: str


@dataclass(frozen=True, slots=True)
class Refunded:
    """The deposit was sent back (``amount_refunded`` in the source currency, if known)."""

    amount_refunded: Decimal | None
    reason: str


FinalStatus: TypeAlias = Completed | Failed | Refunded
OrderStatus: TypeAlias = Pending | FinalStatus


class OrderStatusSource(Protocol):
    """Where an order's current status comes from."""

    async def get_status(self, order_id: str) -> OrderStatus:
        """The order's status now; raises :class:`~swapgate.errors.SwapgateError` on failure."""
        ...


def status_from_view(view: OrderView) -> OrderStatus:
    """Map our simulator's order view onto our four states.

    ``created``, ``deposit_detected`` and ``exchanging`` are pending; so is any status word we do
    not know, so an unknown state is never mistaken for an end (the poller then runs out of time
    and a person reconciles).
    """
    match view.status:
        case "completed":
            if (
                view.amount_received is None
                or view.amount_paid_out is None
                or view.platform_margin is None
            ):
                raise MalformedResponse(f"order {view.order_id}: completed without its amounts")
            return Completed(
                amount_received=view.amount_received,
                amount_paid_out=view.amount_paid_out,
                platform_margin=view.platform_margin,
                affiliate_margin=view.affiliate_margin,
                exchange_amount=view.exchange_amount,
                payout_rounding_remainder=view.payout_rounding_remainder or Decimal(0),
            )
        case "failed":
            return Failed(view.failure_reason or "unspecified")
        case "refunded":
            return Refunded(view.amount_refunded, view.failure_reason or "unspecified")
        case _:
            return Pending(view.status)


class SimulatorStatusSource:
    """:class:`OrderStatusSource` over the simulator's ``GET /api/v2/orders/public/{id}``."""

    def __init__(self, client: SwapgateClient):
        self._client = client

    async def get_status(self, order_id: str) -> OrderStatus:
        """Read the order and map it with :func:`status_from_view`."""
        return status_from_view(await self._client.get_order(order_id))


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff between polls, capped, with a random cut of up to ``jitter``.

    The n-th wait (n from 0) is ``min(max_delay_s, initial_s * multiplier**n)`` times a random
    factor in ``[1 - jitter, 1]``, so many pollers started together spread out.
    """

    initial_s: float = 0.5
    multiplier: float = 2.0
    max_delay_s: float = 30.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if self.initial_s <= 0 or self.max_delay_s < self.initial_s or self.multiplier < 1:
            raise ValueError(f"inconsistent backoff {self}")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"jitter must be in [0, 1], got {self.jitter}")

    def delay(self, attempt: int, unit_random: float) -> float:
        """The wait after poll number ``attempt`` given a random number in [0, 1)."""
        # Capped iteratively: multiplier**attempt could overflow for a long-running poll.
        base = self.initial_s
        for _ in range(attempt):
            base = min(self.max_delay_s, base * self.multiplier)
            if base == self.max_delay_s:
                break
        return base * (1 - self.jitter * unit_random)


async def await_final(
    source: OrderStatusSource,
    order_id: str,
    *,
    timeout_s: float = 900.0,
    backoff: Backoff | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    unit_random: Callable[[], float] = random.random,
    on_change: Callable[[OrderStatus], Awaitable[None]] | None = None,
) -> FinalStatus:
    """Poll ``source`` until the order is completed, failed or refunded.

    Retriable errors (timeouts, 5xx, connection failures) are polled through; any other error is
    raised. ``on_change`` is awaited with every status that differs from the previous one, so each
    transition can be recorded. After ``timeout_s`` (by ``clock``) raises
    :class:`~swapgate.errors.OrderNotFinal` with the last status seen.
    """
    policy = backoff or Backoff()
    deadline = clock() + timeout_s
    last: OrderStatus | None = None
    attempt = 0
    while True:
        try:
            status = await source.get_status(order_id)
        except SwapgateError as exc:
            if not exc.retriable:
                raise
        else:
            if status != last and on_change is not None:
                await on_change(status)
            last = status
            if not isinstance(status, Pending):
                return status
        remaining = deadline - clock()
        if remaining <= 0:
            raise OrderNotFinal(order_id, last)
        # Never sleep past the deadline: one last poll happens right at it.
        await sleep(min(policy.delay(attempt, unit_random()), remaining))
        attempt += 1
