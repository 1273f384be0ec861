"""Driving an exchange: quote -> reserve -> create the order -> poll -> settle or void.

The ledger books (``ledger.commands``, like every write); this module only decides what to ask
and when. Its progress is the ``exchanges`` table (see :mod:`exchange.store`), so any process can
pick an exchange up where another stopped. Every step is safe to repeat:

* the three ledger commands are idempotent by the exchange id (the ledger replays their stored
  outcome), so a command whose answer was lost is simply sent again;
* creating the order is the one step that is not: a compare-and-set from ``reserved`` to
  ``ordering`` lets one runner do it, and an order whose creation got no clear answer is never
  created again blindly: the exchange goes to ``attention`` with its hold kept, for a person to
  resolve (``python -m exchange resolve``);
* polling is a read; what the order ended as is recorded before the settle or void is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import asyncpg
import orjson
import structlog
from aiokafka.errors import KafkaError
from prometheus_client import Counter

from exchange import store
from exchange.booking import BookingError, book_completed
from exchange.requests import ExchangeRequest
from exchange.settings import ExchangeSettings
from exchange.store import (
    ATTENTION,
    ORDERED,
    ORDERING,
    REFUSED,
    RESERVED,
    RESERVING,
    SETTLED,
    SETTLING,
    VOIDED,
    VOIDING,
    ExchangeRow,
)
from ledger_core.commands import Command, ExchangeReserve, ExchangeSettle, ExchangeVoid
from ledger_core.errors import ERRORS, error_body
from swapgate import (
    AmountOutOfRange,
    Completed,
    CreateOrderRequest,
    Failed,
    InvalidMarkup,
    InvalidRequest,
    MarkupOutOfBounds,
    OrderNotFinal,
    OrderOutcomeUnknown,
    OrderStatus,
    OrderStatusSource,
    RateMode,
    Refunded,
    RequestRejected,
    SimulatorStatusSource,
    SwapgateClient,
    SwapgateError,
    SwapgateUnavailable,
    await_final,
    decimal_text,
)
from wallet_platform.backoff import Backoff
from wallet_platform.command_bus import CommandBus, OutcomeTimeout
from wallet_platform.postgres import UNAVAILABLE as DATABASE_AWAY

log = structlog.get_logger(__name__)

ENDED = Counter("exchange_ended_total", "Exchanges that reached an end, by state", ["state"])

Key = tuple[str, str]


class Refusal(Exception):
    """An exchange request refused before anything was held; ``code`` is a ledger_core error."""

    def __init__(self, code: str, message: str | None = None, extra: dict[str, Any] | None = None):
        super().__init__(message or ERRORS[code].meaning)
        self.code = code
        self.message = message
        self.extra = extra or {}

    @property
    def status(self) -> int:
        return ERRORS[self.code].status

    def body(self) -> dict[str, Any]:
        return {**orjson_loads(error_body(self.code, self.message)), **self.extra}


def orjson_loads(raw: bytes) -> dict[str, Any]:
    loaded: dict[str, Any] = orjson.loads(raw)
    return loaded


@dataclass(frozen=True, slots=True)
class Answer:
    """What to answer a request to start (or look at) an exchange."""

    status: int
    body: dict[str, Any]


class Orchestrator:
    """Runs exchanges; one per process (the operator API, or the CLI)."""

    def __init__(
        self,
        settings: ExchangeSettings,
        pool: asyncpg.Pool,
        bus: CommandBus,
        client: SwapgateClient,
        *,
        source: OrderStatusSource | None = None,
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.bus = bus
        self.client = client
        self.source = source or SimulatorStatusSource(client)
        self.instruments = settings.instruments()
        self.payout = settings.payout_addresses()
        self.refund = settings.refund_addresses()
        self.markup = settings.swapgate_markup
        self._tasks: dict[Key, asyncio.Task[None]] = {}
        self._closing = False

    # -- starting and looking -----------------------------------------------------------------

    async def start(self, request: ExchangeRequest, *, background: bool = True) -> Answer:
        """Quote and reserve (waiting for the ledger once), then run the rest in the background.

        202 with the exchange while it runs (or once it ran); the ledger's error (402, 404, 451)
        if it refused the reservation; a :class:`Refusal` if nothing could be held.
        """
        existing = await store.get(self.pool, request.customer_id, request.exchange_id)
        if existing is None:
            source, target, payout = self._route(request)
            quote = await self._quote(request, source, target)
            inserted = await store.insert(self.pool, request, RESERVING, quote)
            existing = await store.get(self.pool, request.customer_id, request.exchange_id)
            assert existing is not None
            if inserted:
                log.info("exchange_started", **self._ids(existing), payout_address=payout)
                reserved = await self._reserve(existing, once=True)
                # None: no answer yet, or another runner recorded it first.
                existing = reserved or await store.get(
                    self.pool, request.customer_id, request.exchange_id
                )
                assert existing is not None
        if existing.fingerprint != request.fingerprint():
            raise Refusal(
                "request_id_reused", "exchange_id was already used with a different request"
            )
        if background and existing.state in store.RESUMABLE:
            self.spawn(request.customer_id, request.exchange_id)
        return self.answer(existing)

    def answer(self, row: ExchangeRow) -> Answer:
        if row.state == REFUSED and row.ledger_status is not None:
            body = dict(row.ledger_body or {})
            return Answer(row.ledger_status, {**body, "exchange": row.view()})
        return Answer(202, row.view())

    async def get(self, customer_id: str, exchange_id: str) -> ExchangeRow | None:
        return await store.get(self.pool, customer_id, exchange_id)

    def _route(self, request: ExchangeRequest) -> tuple[Any, Any, str]:
        source = self.instruments.get(request.currency)
        target = self.instruments.get(request.target_currency)
        payout = self.payout.get(request.target_currency)
        if source is None or target is None or payout is None:
            missing = [
                code
                for code, found in (
                    (request.currency, source),
                    (request.target_currency, target and payout),
                )
                if not found
            ]
            raise Refusal(
                "exchange_not_supported", f"no exchange route for {', '.join(missing)} here"
            )
        return source, target, payout

    async def _quote(self, request: ExchangeRequest, source: Any, target: Any) -> dict[str, Any]:
        try:
            quote = await self.client.quote(
                source.currency,
                source.network,
                target.currency,
                target.network,
                Decimal(request.amount),
                RateMode.FLOATING,
                self.markup,
            )
        except AmountOutOfRange as exc:
            limits = {
                "min_amount": decimal_text(exc.minimum),
                "max_amount": None if exc.maximum is None else decimal_text(exc.maximum),
            }
            raise Refusal("amount_out_of_range", str(exc), {"limits": limits}) from exc
        except RequestRejected as exc:
            raise Refusal("exchange_not_supported", f"Swapgate refused the quote: {exc}") from exc
        except SwapgateError as exc:
            log.warning("swapgate_quote_failed", error=repr(exc))
            raise Refusal("unavailable", "Swapgate is not available; retry the request") from exc
        return {
            "amount_to_get": decimal_text(quote.amount_to_get),
            "price": decimal_text(quote.price),
            "markup": decimal_text(quote.markup),
            "network_fee": decimal_text(quote.final_network_fee),
            "rate_mode": quote.rate_mode.value,
            "from": f"{source.currency}/{source.network}",
            "to": f"{target.currency}/{target.network}",
            "quoted_at": quote.updated_at.isoformat(),
        }

    # -- running ----------------------------------------------------------------------------

    def spawn(self, customer_id: str, exchange_id: str) -> None:
        """Drive the exchange in the background, unless this process already does."""
        key = (customer_id, exchange_id)
        task = self._tasks.get(key)
        if self._closing or (task is not None and not task.done()):
            return
        task = asyncio.create_task(self._run(key))
        self._tasks[key] = task

    async def _run(self, key: Key) -> None:
        try:
            await self.drive(*key)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("exchange_run_failed", customer_id=key[0], exchange_id=key[1])
        finally:
            if self._tasks.get(key) is asyncio.current_task():
                del self._tasks[key]

    async def drive(
        self,
        customer_id: str,
        exchange_id: str,
        on_change: Callable[[ExchangeRow], Awaitable[None]] | None = None,
        *,
        follow: bool = False,
    ) -> ExchangeRow:
        """Take the exchange as far as it goes now: to its end, or to a wait (an order still
        pending after the poll timeout, a person to look at it, another runner at work).

        With ``follow`` (the CLI in the foreground) a wait is waited out: the exchange is followed
        to its end or to ``attention``, whoever moves it (another runner may)."""
        row = await store.get(self.pool, customer_id, exchange_id)
        if row is None:
            raise LookupError(f"no exchange {exchange_id!r} for {customer_id!r}")
        steps: dict[str, Callable[[ExchangeRow], Awaitable[ExchangeRow | None]]] = {
            RESERVING: self._reserve,
            RESERVED: self._order,
            ORDERING: self._stale_ordering,
            ORDERED: self._poll,
            SETTLING: self._settle,
            VOIDING: self._void,
        }
        while (step := steps.get(row.state)) is not None:
            moved = await step(row)
            if moved is None:
                # Waiting, or another runner took the step: see where the exchange stands.
                latest = await store.get(self.pool, customer_id, exchange_id) or row
                if not follow:
                    return latest
                if latest.state == row.state:
                    await asyncio.sleep(self.settings.exchange_poll_initial)
                    row = latest
                    continue
                moved = latest
            row = moved
            log.info("exchange_state", **self._ids(row), state=row.state, order_id=row.order_id)
            if row.state in store.FINAL:
                ENDED.labels(row.state).inc()
            if on_change is not None:
                await on_change(row)
        return row

    async def resume_all(self) -> int:
        """Pick up every unfinished exchange (after a restart, or one whose poll timed out)."""
        keys = await store.unfinished(self.pool)
        for key in keys:
            self.spawn(*key)
        return len(keys)

    async def run_resumer(self, stop: asyncio.Event) -> None:
        """Resume unfinished exchanges now and every ``exchange_resume_interval`` seconds, until
        ``stop`` is set: whatever one round meets (Postgres away, anything else) is logged, and
        the next round tries again, so the loop lives as long as the process."""
        while not stop.is_set():
            try:
                count = await self.resume_all()
                if count:
                    log.info("exchanges_resumed", count=count)
            except DATABASE_AWAY as exc:
                log.warning("exchange_resume_failed", error=repr(exc))
            except Exception:
                # E.g. asyncpg's InterfaceError: not a PostgresError, and it used to end the loop
                # silently, leaving every unfinished exchange to wait for a restart.
                log.exception("exchange_resume_failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.settings.exchange_resume_interval)

    async def close(self) -> None:
        """Stop the runs (each is safe to stop anywhere: the next runner continues it)."""
        self._closing = True
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- the steps ---------------------------------------------------------------------------

    @staticmethod
    def _ids(row: ExchangeRow) -> dict[str, str]:
        return {"customer_id": row.request.customer_id, "exchange_id": row.request.exchange_id}

    async def _move(
        self, row: ExchangeRow, expected: tuple[str, ...], state: str, **changes: object
    ) -> ExchangeRow | None:
        r = row.request
        return await store.transition(
            self.pool, r.customer_id, r.exchange_id, expected, state, **changes
        )

    async def _record(
        self, row: ExchangeRow, expected: tuple[str, ...], state: str, **changes: object
    ) -> ExchangeRow | None:
        """:meth:`_move`, retried while the database is away (backing off from 0.2 to 5 s).

        For what Swapgate answered to an order creation: until it is recorded only this run
        knows it, and an order id lost to a Postgres restart would leave the exchange in
        ``ordering`` for a person to resolve, although the order exists and can be polled.
        """
        backoff = Backoff(first=0.2)
        while True:
            try:
                return await self._move(row, expected, state, **changes)
            except DATABASE_AWAY as exc:
                log.warning("exchange_record_retry", **self._ids(row), state=state, error=repr(exc))
            await asyncio.sleep(backoff.next())

    async def _ledger(self, cmd: Command, *, once: bool = False) -> tuple[int, bytes] | None:
        """The ledger's answer to ``cmd``, sending it again until one comes (it is idempotent);
        None if ``once`` and the first wait ran out."""
        backoff = Backoff(first=0.2)
        while True:
            try:
                return await self.bus.submit(cmd, self.settings.exchange_ledger_timeout)
            except (OutcomeTimeout, KafkaError) as exc:
                if once:
                    return None
                log.warning("exchange_ledger_retry", command=cmd.scope, error=repr(exc))
            await asyncio.sleep(backoff.next())

    def _comment(self, row: ExchangeRow) -> str:
        quote = row.quote or {}
        return (
            f"{quote.get('from')} -> {quote.get('to')}, markup {quote.get('markup')}%, "
            f"quoted {quote.get('amount_to_get')} {row.request.target_currency}"
        )

    async def _reserve(self, row: ExchangeRow, *, once: bool = False) -> ExchangeRow | None:
        r = row.request
        cmd = ExchangeReserve(
            r.customer_id,
            r.exchange_id,
            r.source_balance_id,
            r.target_balance_id,
            r.amount,
            r.currency,
            r.target_currency,
            self._comment(row),
        )
        answer = await self._ledger(cmd, once=once)
        if answer is None:
            return None
        status, body = answer
        state = RESERVED if status == 201 else REFUSED
        return await self._move(
            row,
            (RESERVING,),
            state,
            ledger_status=status,
            ledger_body=orjson_loads(body),
            detail=None if status == 201 else "the ledger refused the reservation",
        )

    async def _order(self, row: ExchangeRow) -> ExchangeRow | None:
        claimed = await self._move(row, (RESERVED,), ORDERING)
        if claimed is None:
            return None  # another runner creates it
        r = row.request
        source, target = self.instruments[r.currency], self.instruments[r.target_currency]
        try:
            order = await self.client.create_order(
                CreateOrderRequest(
                    rate_mode=RateMode.FLOATING,
                    instrument_from=source,
                    instrument_to=target,
                    destination_address=self.payout[r.target_currency],
                    claimed_deposit_amount=Decimal(r.amount),
                    markup=self.markup,
                    refund_address=self.refund.get(r.currency),
                )
            )
        except OrderOutcomeUnknown as exc:
            log.error("exchange_order_unknown", **self._ids(row), error=repr(exc))
            return await self._record(
                claimed,
                (ORDERING,),
                ATTENTION,
                detail=f"the order may or may not exist ({exc.cause!r}); "
                "find it at Swapgate, then resolve the exchange",
            )
        except SwapgateUnavailable as exc:  # certainly not sent: try again later
            log.warning("exchange_order_not_sent", **self._ids(row), error=repr(exc))
            await self._record(claimed, (ORDERING,), RESERVED, detail=f"order not sent: {exc}")
            return None
        except (RequestRejected, InvalidRequest, InvalidMarkup, MarkupOutOfBounds) as exc:
            # Refused (or never sent): there is no order, so the hold is released.
            return await self._record(
                claimed,
                (ORDERING,),
                VOIDING,
                settlement={"reason": f"order refused: {exc}"},
                detail=f"order refused: {exc}",
            )
        except SwapgateError as exc:  # e.g. our key refused: nothing was created
            return await self._record(
                claimed,
                (ORDERING,),
                VOIDING,
                settlement={"reason": f"order not created: {exc}"},
                detail=f"order not created: {exc}",
            )
        return await self._record(
            claimed, (ORDERING, ATTENTION), ORDERED, order_id=order.order_id, detail=None
        )

    async def _stale_ordering(self, row: ExchangeRow) -> ExchangeRow | None:
        """Found in ``ordering``: another runner is creating the order, or one died doing it."""
        r = row.request
        return await store.expire_ordering(
            self.pool,
            r.customer_id,
            r.exchange_id,
            self.settings.exchange_order_unknown_after,
            "the order creation got no recorded answer; find the order at Swapgate "
            "(or confirm there is none), then resolve the exchange",
        )

    async def _poll(self, row: ExchangeRow) -> ExchangeRow | None:
        assert row.order_id is not None

        async def changed(status: OrderStatus) -> None:
            log.info("exchange_order_status", **self._ids(row), status=repr(status))

        try:
            final = await await_final(
                self.source,
                row.order_id,
                timeout_s=self.settings.exchange_poll_timeout,
                backoff=self.settings.backoff(),
                on_change=changed,
            )
        except OrderNotFinal:
            return None  # still running: the resumer polls it again later
        except SwapgateError as exc:
            return await self._move(
                row, (ORDERED,), ATTENTION, detail=f"the order can not be read: {exc!r}"
            )
        if isinstance(final, Completed):
            try:
                booking = book_completed(final, self.markup, row.request.target_currency)
            except BookingError as exc:
                return await self._move(
                    row, (ORDERED,), ATTENTION, detail=f"completed, but not bookable: {exc}"
                )
            settlement = {"order_status": "completed", **booking.amounts(), "exact": booking.exact}
            return await self._move(row, (ORDERED,), SETTLING, settlement=settlement)
        kind = "refunded" if isinstance(final, Refunded) else "failed"
        assert isinstance(final, Refunded | Failed)
        reason = f"order {kind}: {final.reason}"
        settlement = {"order_status": kind, "reason": reason}
        if isinstance(final, Refunded) and final.amount_refunded is not None:
            settlement["amount_refunded"] = decimal_text(final.amount_refunded)
        return await self._move(row, (ORDERED,), VOIDING, settlement=settlement, detail=reason)

    async def _settle(self, row: ExchangeRow) -> ExchangeRow | None:
        r, s = row.request, row.settlement or {}
        assert row.order_id is not None
        cmd = ExchangeSettle(
            r.customer_id,
            r.exchange_id,
            row.order_id,
            r.target_currency,
            s["paid"],
            s["markup_revenue"],
            s["affiliate_margin"],
            s["rounding"],
        )
        status, body = await self._ledger(cmd) or (0, b"{}")
        if status == 201:
            return await self._move(
                row, (SETTLING,), SETTLED, ledger_status=status, ledger_body=orjson_loads(body)
            )
        return await self._move(
            row,
            (SETTLING,),
            ATTENTION,
            ledger_status=status,
            ledger_body=orjson_loads(body),
            detail="the ledger refused the settlement",
        )

    async def _void(self, row: ExchangeRow) -> ExchangeRow | None:
        r, s = row.request, row.settlement or {}
        cmd = ExchangeVoid(r.customer_id, r.exchange_id, row.order_id or "", s.get("reason", ""))
        status, body = await self._ledger(cmd) or (0, b"{}")
        state = VOIDED if status == 200 else ATTENTION
        return await self._move(
            row,
            (VOIDING,),
            state,
            ledger_status=status,
            ledger_body=orjson_loads(body),
            **({} if status == 200 else {"detail": "the ledger refused the void"}),
        )

    # -- a person's resolution ---------------------------------------------------------------

    async def resolve(
        self, customer_id: str, exchange_id: str, *, order_id: str | None, void_reason: str | None
    ) -> ExchangeRow:
        """Resolve an exchange in ``attention``: the order found at Swapgate (polled from here
        on), or confirmed absent (the hold is released)."""
        row = await store.get(self.pool, customer_id, exchange_id)
        if row is None:
            raise LookupError(f"no exchange {exchange_id!r} for {customer_id!r}")
        if (order_id is None) == (void_reason is None):
            raise ValueError("give either the order id or the reason to void")
        if order_id is not None:
            moved = await self._move(row, (ATTENTION,), ORDERED, order_id=order_id, detail=None)
        else:
            moved = await self._move(
                row,
                (ATTENTION,),
                VOIDING,
                settlement={"reason": void_reason},
                detail=f"resolved by a person: {void_reason}",
            )
        if moved is None:
            raise ValueError(f"exchange is {row.state!r}, not {ATTENTION!r}")
        return moved
