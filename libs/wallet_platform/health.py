"""Readiness checks shared by the services: can we reach Postgres, can we reach Kafka?"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer


def postgres_check(pool: asyncpg.Pool) -> Callable[[], Awaitable[dict[str, bool]]]:
    async def postgres() -> dict[str, bool]:
        async with pool.acquire() as conn:
            return {"postgres": await conn.fetchval("SELECT 1") == 1}

    return postgres


def kafka_check(
    client: AIOKafkaProducer | AIOKafkaConsumer,
) -> Callable[[], Awaitable[dict[str, bool]]]:
    """A real metadata round trip to the broker (not the client's cached view)."""

    async def kafka() -> dict[str, bool]:
        if isinstance(client, AIOKafkaProducer):
            await client.client.fetch_all_metadata()
        else:
            await client.topics()
        return {"kafka": True}

    return kafka
