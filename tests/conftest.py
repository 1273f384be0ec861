"""Shared fixtures: the real Postgres and Kafka (started or reused once per session), a database
and a topic namespace per test or per module, and the services as real processes."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
import pytest

from ledger_core.commands import Command, CreateCustomer, MoneyCommand, OpenBalance, SetBlocked
from wallet_platform import topics
from wallet_platform.command_bus import CommandBus
from wallet_platform.kafka import make_consumer, make_producer
from wallet_stack import (
    KAFKA,
    QuadcodeKey,
    Stack,
    create_database,
    create_template,
    create_topics,
    delete_topics,
    drop_database,
    dsn_for,
    ensure_infrastructure,
)


@pytest.fixture(scope="session")
def infrastructure() -> None:
    ensure_infrastructure()


@pytest.fixture(scope="session")
async def pg_template(infrastructure: None) -> AsyncIterator[str]:
    name = f"wallet_template_{os.getpid()}"
    await create_template(name)
    yield name
    await drop_database(name)


@pytest.fixture
async def database(pg_template: str) -> AsyncIterator[str]:
    """A fresh, migrated database of its own for one test; yields its DSN."""
    name = await create_database(pg_template)
    yield dsn_for(name)
    await drop_database(name)


@pytest.fixture
async def topic_prefix(infrastructure: None) -> AsyncIterator[str]:
    """A topic namespace of its own for one test (all project topics created under it)."""
    prefix = f"t{uuid.uuid4().hex[:10]}."
    await create_topics(prefix)
    yield prefix
    await delete_topics(prefix)


@pytest.fixture(scope="session")
def quadcode_key() -> QuadcodeKey:
    return QuadcodeKey.generate()


@pytest.fixture(scope="module")
async def stack(
    pg_template: str, quadcode_key: QuadcodeKey, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    """The three services as processes on a database and topic namespace of their own. Shared by
    the tests of one module; each test uses customer ids of its own."""
    database = await create_database(pg_template)
    prefix = f"s{uuid.uuid4().hex[:10]}."
    await create_topics(prefix)
    s = Stack(database, prefix, tmp_path_factory.mktemp("stack"), quadcode_key)
    try:
        await s.start()
        yield s
    finally:
        s.stop()
        await delete_topics(prefix)
        await drop_database(database)


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


@pytest.fixture(scope="module")
async def operator(stack: Stack) -> AsyncIterator[Operator]:
    producer = make_producer(KAFKA, "test-operator")
    replies = make_consumer(KAFKA, "test-operator")
    await producer.start()
    await replies.start()
    bus = CommandBus(
        producer,
        replies,
        commands_topic=topics.topic_name(topics.COMMANDS, stack.prefix),
        replies_topic=topics.topic_name(topics.REPLIES, stack.prefix),
        reply_partition=7,
    )
    await bus.start()
    yield Operator(bus)
    await bus.stop()
    await replies.stop()
    await producer.stop()


@pytest.fixture(scope="module")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def unique() -> Iterator[str]:
    yield uuid.uuid4().hex[:12]


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

    async def debit(
        self,
        customer: str,
        balance: str,
        amount: str,
        request_id: str | None = None,
        currency: str = "USD",
        comment: str = "option opened",
    ) -> Answer:
        return await self.post(
            "debit",
            customer,
            balance,
            {
                "request_id": request_id or uuid.uuid4().hex,
                "amount": amount,
                "currency_code": currency,
                "comment": comment,
            },
        )

    async def credit(
        self,
        customer: str,
        balance: str,
        amount: str,
        request_id: str | None = None,
        currency: str = "USD",
        comment: str = "option closed",
    ) -> Answer:
        return await self.post(
            "credit",
            customer,
            balance,
            {
                "request_id": request_id or uuid.uuid4().hex,
                "amount": amount,
                "currency_code": currency,
                "comment": comment,
            },
        )


@pytest.fixture(scope="module")
async def wallet(stack: Stack, http: aiohttp.ClientSession, quadcode_key: QuadcodeKey) -> Wallet:
    return Wallet(http, stack.edge.url, quadcode_key)
