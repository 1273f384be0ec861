"""The trading-room player: what Quadcode's servers do to our wallet while a customer trades.

For a customer with an open trading room it reads the balance, opens options (``debit`` of the
stake) and closes them (``credit`` of the payout on a win; nothing on a loss), calling the
wallet's callbacks from b2b-client-external-balance-openapi.yaml with JWTs signed by Quadcode's
own key (``iss="qc"``).

Like Quadcode, it never rolls back: when a call gets no answer (timeout, dropped connection) or a
5xx, it sends the *same* request again with the *same* ``request_id``, a bounded number of times,
and reports every attempt.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, Decimal
from typing import Final

import aiohttp
import orjson
import structlog

from quadcode_gateway.tokens import QUADCODE_ISSUER, TokenSigner

log = structlog.get_logger(__name__)

Sleep = Callable[[float], Awaitable[None]]
DEFAULT_PAYOUT_RATIO: Final = Decimal("1.80")


@dataclass(frozen=True, slots=True)
class TradePlan:
    """What to play: ``trades`` options of ``stake`` each; the odd-numbered ones win."""

    customer_id: str
    balance_id: str
    currency_code: str
    trades: int
    stake: Decimal
    payout_ratio: Decimal = DEFAULT_PAYOUT_RATIO

    def __post_init__(self) -> None:
        if not 0 < self.trades <= 1000:
            raise ValueError("trades must be between 1 and 1000")
        if not self.stake.is_finite() or self.stake <= 0:
            raise ValueError("stake must be a positive decimal")
        if not self.payout_ratio.is_finite() or self.payout_ratio <= 0:
            raise ValueError("payout ratio must be a positive decimal")

    def payout(self) -> Decimal:
        """The credit for a winning option, in the stake's precision (rounded down)."""
        exponent = self.stake.as_tuple().exponent
        quantum = Decimal(1).scaleb(exponent if isinstance(exponent, int) else 0)
        return (self.stake * self.payout_ratio).quantize(quantum, rounding=ROUND_DOWN)


@dataclass(slots=True)
class WalletCall:
    """One callback to the wallet and every attempt it took."""

    operation: str
    method: str
    path: str
    request_id: str | None = None
    amount: str | None = None
    attempts: list[int | str] = field(default_factory=list)
    """Per attempt: the HTTP status, or ``"timeout"`` / ``"connection_error"``."""
    status: int | None = None
    body: object = None

    @property
    def answered(self) -> bool:
        """Whether the final attempt got a non-5xx HTTP answer."""
        return self.status is not None and self.status < 500


@dataclass(slots=True)
class TradeRecord:
    """One option: its debit, and its credit when it won."""

    number: int
    outcome: str
    """``win``, ``loss``, ``not_opened`` (debit refused) or ``unknown`` (debit never answered)."""
    debit: WalletCall
    credit: WalletCall | None = None


@dataclass(slots=True)
class TradeReport:
    """Everything the wallet answered during one run."""

    customer_id: str
    balance_id: str
    currency_code: str
    balance_before: str | None
    balance_after: str | None
    before: WalletCall
    after: WalletCall
    trades: list[TradeRecord]

    def to_json(self) -> bytes:
        """The report as JSON (amounts stay strings)."""
        return orjson.dumps(self)


def quadcode_signer(private_key_path: str, audience: str) -> TokenSigner:
    """Quadcode's own signer: ``iss="qc"``, the environment as ``aud``, 10-minute tokens."""
    return TokenSigner.from_pem_file(
        private_key_path, issuer=QUADCODE_ISSUER, audience=audience, lifetime=600
    )


class TradingRoomPlayer:
    """Calls one wallet's balance callbacks as Quadcode does."""

    def __init__(
        self,
        *,
        wallet_base_url: str,
        signer: TokenSigner,
        session: aiohttp.ClientSession,
        timeout: float = 2.0,
        max_attempts: int = 4,
        retry_delay: float = 0.1,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self._base_url = wallet_base_url.rstrip("/")
        self._signer = signer
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._max_attempts = max_attempts
        self._retry_delay = retry_delay
        self._sleep = sleep

    async def _call(self, call: WalletCall, payload: dict[str, str] | None) -> WalletCall:
        data = orjson.dumps(payload) if payload is not None else None
        for attempt in range(1, self._max_attempts + 1):
            headers = {"Authorization": self._signer.authorization()}
            if data is not None:
                headers["Content-Type"] = "application/json"
            try:
                async with self._session.request(
                    call.method,
                    self._base_url + call.path,
                    data=data,
                    headers=headers,
                    timeout=self._timeout,
                ) as response:
                    raw = await response.read()
                    call.status = response.status
            except TimeoutError:
                call.attempts.append("timeout")
                call.status = None
            except aiohttp.ClientError:
                call.attempts.append("connection_error")
                call.status = None
            else:
                call.attempts.append(response.status)
                try:
                    call.body = orjson.loads(raw) if raw else None
                except orjson.JSONDecodeError:
                    call.body = raw[:500].decode("utf-8", "replace")
                if response.status < 500:
                    return call
            log.info(
                "wallet_call_retry",
                operation=call.operation,
                request_id=call.request_id,
                attempt=attempt,
                result=call.attempts[-1],
            )
            if attempt < self._max_attempts:
                await self._sleep(self._retry_delay * attempt)
        return call

    async def balance(self, customer_id: str, balance_id: str) -> WalletCall:
        """``GET /v1/customers/{customer_id}/balances/{balance_id}``."""
        path = f"/v1/customers/{customer_id}/balances/{balance_id}"
        return await self._call(WalletCall("balance", "GET", path), None)

    async def move(
        self,
        operation: str,
        plan: TradePlan,
        amount: Decimal,
        comment: str,
        request_id: str | None = None,
    ) -> WalletCall:
        """``POST .../debit`` or ``.../credit`` with one ``request_id`` for every attempt."""
        if operation not in ("debit", "credit"):
            raise ValueError("operation must be debit or credit")
        request_id = request_id or str(uuid.uuid4())
        path = f"/v1/customers/{plan.customer_id}/balances/{plan.balance_id}/{operation}"
        amount_text = format(amount, "f")
        call = WalletCall(operation, "POST", path, request_id=request_id, amount=amount_text)
        payload = {
            "request_id": request_id,
            "amount": amount_text,
            "currency_code": plan.currency_code,
            "comment": comment,
        }
        return await self._call(call, payload)

    async def play(self, plan: TradePlan) -> TradeReport:
        """Read the balance, trade ``plan.trades`` options, read the balance again."""
        before = await self.balance(plan.customer_id, plan.balance_id)
        records = []
        for number in range(1, plan.trades + 1):
            debit = await self.move("debit", plan, plan.stake, f"option {number} opened")
            if debit.status == 201:
                won = number % 2 == 1
                credit = None
                if won:
                    credit = await self.move(
                        "credit", plan, plan.payout(), f"option {number} closed with profit"
                    )
                records.append(TradeRecord(number, "win" if won else "loss", debit, credit))
            elif debit.answered:
                records.append(TradeRecord(number, "not_opened", debit))
            else:
                records.append(TradeRecord(number, "unknown", debit))
        after = await self.balance(plan.customer_id, plan.balance_id)
        report = TradeReport(
            customer_id=plan.customer_id,
            balance_id=plan.balance_id,
            currency_code=plan.currency_code,
            balance_before=_amount(before),
            balance_after=_amount(after),
            before=before,
            after=after,
            trades=records,
        )
        log.info(
            "trades_played",
            customer_id=plan.customer_id,
            balance_id=plan.balance_id,
            trades=len(records),
            balance_before=report.balance_before,
            balance_after=report.balance_after,
        )
        return report


def _amount(call: WalletCall) -> str | None:
    if call.status == 200 and isinstance(call.body, dict):
        amount = call.body.get("amount")
        return amount if isinstance(amount, str) else None
    return None
