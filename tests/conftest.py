"""Shared fixtures: the real Postgres and Kafka (started or reused once per session), a database
and a topic namespace per test or per module, and the services as real processes."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest

from wallet_clients import Operator, Wallet
from wallet_platform.command_bus import open_command_bus
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
def stack_env() -> dict[str, str]:
    """Extra WALLET_ settings for a module's stack (override in the module)."""
    return {}


@pytest.fixture(scope="module")
async def stack(
    pg_template: str,
    quadcode_key: QuadcodeKey,
    tmp_path_factory: pytest.TempPathFactory,
    stack_env: dict[str, str],
) -> AsyncIterator[Stack]:
    """The three services as processes on a database and topic namespace of their own. Shared by
    the tests of one module; each test uses customer ids of its own."""
    database = await create_database(pg_template)
    prefix = f"s{uuid.uuid4().hex[:10]}."
    await create_topics(prefix)
    s = Stack(database, prefix, tmp_path_factory.mktemp("stack"), quadcode_key, dict(stack_env))
    try:
        await s.start()
        yield s
    finally:
        s.stop()
        await delete_topics(prefix)
        await drop_database(database)


@pytest.fixture(scope="module")
async def operator(stack: Stack) -> AsyncIterator[Operator]:
    async with open_command_bus(
        KAFKA, "test-operator", topic_prefix=stack.prefix, reply_partition=7
    ) as bus:
        yield Operator(bus)


@pytest.fixture(scope="module")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def unique() -> Iterator[str]:
    yield uuid.uuid4().hex[:12]


@pytest.fixture(scope="module")
async def wallet(stack: Stack, http: aiohttp.ClientSession, quadcode_key: QuadcodeKey) -> Wallet:
    return Wallet(http, stack.edge.url, quadcode_key)
