"""Readiness checks shared by the services: can we reach Postgres, can we reach Kafka?"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from wallet_platform.command_bus import CommandBus
from wallet_platform.producer import Producer


def postgres_check(pool: asyncpg.Pool) -> Callable[[], Awaitable[dict[str, bool]]]:
    async def postgres() -> dict[str, bool]:
        async with pool.acquire() as conn:
            return {"postgres": await conn.fetchval("SELECT 1") == 1}

    return postgres


def kafka_check(
    client: AIOKafkaProducer | AIOKafkaConsumer | Producer,
) -> Callable[[], Awaitable[dict[str, bool]]]:
    """A real metadata round trip to the broker (not the client's cached view); a renewing
    producer also counts as not ready while it replaces a broken producer."""

    async def kafka() -> dict[str, bool]:
        if isinstance(client, AIOKafkaProducer):
            await client.client.fetch_all_metadata()
        elif isinstance(client, AIOKafkaConsumer):
            await client.topics()
        else:  # a renewing producer, of either kind
            await client.check_broker()
            return {"kafka": not client.renewing}
        return {"kafka": True}

    return kafka


def command_bus_check(bus: CommandBus) -> Callable[[], Awaitable[dict[str, bool]]]:
    """Kafka answers (a metadata round trip through the bus's producer), the producer can send
    (it is not being replaced after aiokafka stopped it) and the bus still reads its replies: a
    sender whose reply reader stopped would only ever time out."""

    broker = kafka_check(bus.producer)

    async def kafka() -> dict[str, bool]:
        return await broker() | {"replies": bus.reading_replies}

    return kafka


def task_check(name: str, task: asyncio.Task[Any]) -> Callable[[], Awaitable[dict[str, bool]]]:
    """A background task that must run as long as the service does (e.g. a resume loop)."""

    async def running() -> dict[str, bool]:
        return {name: not task.done()}

    return running
