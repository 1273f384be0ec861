"""Test clients of the running wallet: operator commands through Kafka, Quadcode's callbacks over
HTTP, and the answers they get."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from ledger_core.commands import Command, CreateCustomer, MoneyCommand, OpenBalance, SetBlocked
from wallet_platform.command_bus import CommandBus
from wallet_stack import QuadcodeKey


@dataclass
class Answer:
    status: int
    body: bytes

    @property
    def json(self) -> Any:
        return orjson.loads(self.body)


class Operator:
    """Sends the operators' commands through ledger.commands, as the CLI does."""

    def __init__(self, bus: CommandBus) -> None:
        self.bus = bus

    async def send(self, cmd: Command) -> Answer:
        status, body = await self.bus.submit(cmd, 15.0)
        return Answer(status, body)

    async def customer_with_balance(
        self, currency: str = "USD", funds: str | None = "100.00", customer_id: str | None = None
    ) -> tuple[str, str]:
        """A new customer with one balance, funded with ``funds``."""
        customer = customer_id or "c-" + uuid.uuid4().hex[:12]
        balance = f"{customer}_{currency}"
        assert (await self.send(CreateCustomer(customer, uuid.uuid4().hex))).status == 201
        assert (
            await self.send(OpenBalance(customer, balance, currency, uuid.uuid4().hex))
        ).status == 201
        if funds is not None:
            await self.deposit(customer, balance, funds, currency)
        return customer, balance

    async def deposit(
        self, customer: str, balance: str, amount: str, currency: str = "USD"
    ) -> Answer:
        answer = await self.send(
            MoneyCommand("deposit", customer, balance, uuid.uuid4().hex, amount, currency, "test")
        )
        assert answer.status == 201, answer
        return answer

    async def block(self, customer: str, blocked: bool = True) -> Answer:
        return await self.send(SetBlocked(customer, blocked, uuid.uuid4().hex))


class Wallet:
    """Quadcode's side of the callbacks, against a running edge."""

    def __init__(self, http: aiohttp.ClientSession, base_url: str, key: QuadcodeKey) -> None:
        self.http = http
        self.base_url = base_url
        self.key = key
        self.default_token = key.token()

    def headers(self, token: str | None = None, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token or self.default_token}", **extra}

    async def post(
        self,
        kind: str,
        customer: str,
        balance: str,
        body: dict[str, Any] | bytes,
        *,
        headers: dict[str, str] | None = None,
        base_url: str | None = None,
    ) -> Answer:
        data = body if isinstance(body, bytes) else orjson.dumps(body)
        url = f"{base_url or self.base_url}/v1/customers/{customer}/balances/{balance}/{kind}"
        async with self.http.post(
            url, data=data, headers=self.headers() if headers is None else headers
        ) as resp:
            return Answer(resp.status, await resp.read())

    async def get(
        self, customer: str, balance: str, *, headers: dict[str, str] | None = None
    ) -> Answer:
        url = f"{self.base_url}/v1/customers/{customer}/balances/{balance}"
        async with self.http.get(
            url, headers=self.headers() if headers is None else headers
        ) as resp:
            return Answer(resp.status, await resp.read())

    async def read_eventually(self, customer: str, balance: str, amount: str) -> Answer:
        """The projection is eventually consistent: poll briefly for the expected amount."""
        answer = await self.get(customer, balance)
        for _ in range(100):
            if answer.status == 200 and answer.json["amount"] == amount:
                break
            await asyncio.sleep(0.05)
            answer = await self.get(customer, balance)
        return answer

    async def move(
        self,
        kind: str,
        customer: str,
        balance: str,
        amount: str,
        request_id: str | None = None,
        currency: str = "USD",
        comment: str = "",
    ) -> Answer:
        """A debit or credit callback with a well-formed body."""
        body = {
            "request_id": request_id or uuid.uuid4().hex,
            "amount": amount,
            "currency_code": currency,
            "comment": comment or f"option {'opened' if kind == 'debit' else 'closed'}",
        }
        return await self.post(kind, customer, balance, body)

    async def debit(
        self,
        customer: str,
        balance: str,
        amount: str,
        request_id: str | None = None,
        currency: str = "USD",
        comment: str = "option opened",
    ) -> Answer:
        return await self.move("debit", customer, balance, amount, request_id, currency, comment)

    async def credit(
        self,
        customer: str,
        balance: str,
        amount: str,
        request_id: str | None = None,
        currency: str = "USD",
        comment: str = "option closed",
    ) -> Answer:
        return await self.move("credit", customer, balance, amount, request_id, currency, comment)
