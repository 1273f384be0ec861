"""Wiring an :class:`~exchange.orchestrator.Orchestrator` to Postgres, Kafka and Swapgate."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import asyncpg

from exchange.orchestrator import Orchestrator
from exchange.settings import ExchangeSettings
from swapgate import SwapgateClient
from wallet_platform.command_bus import open_command_bus
from wallet_platform.schema import check_schema


@dataclass(slots=True)
class Runtime:
    orchestrator: Orchestrator
    pool: asyncpg.Pool


@asynccontextmanager
async def open_runtime(
    settings: ExchangeSettings, *, reply_partition: int, client_id: str
) -> AsyncIterator[Runtime]:
    """Everything an orchestrator needs, started; stopped (runs cancelled first) on exit.
    Raises :class:`~wallet_platform.schema.SchemaError` on a database that is not current."""
    settings.check()
    pool = await asyncpg.create_pool(settings.pg_dsn, min_size=1, max_size=4)
    try:
        async with pool.acquire() as conn:
            await check_schema(conn)
        async with open_command_bus(
            settings.kafka_bootstrap,
            client_id,
            topic_prefix=settings.topic_prefix,
            reply_partition=reply_partition,
            fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
        ) as bus:
            client = SwapgateClient(
                settings.swapgate_base_url,
                credentials=settings.swapgate_credentials(),
                timeout_s=settings.swapgate_request_timeout,
                markup_policy=settings.markup_policy(),
            )
            orchestrator = Orchestrator(settings, pool, bus, client)
            try:
                yield Runtime(orchestrator, pool)
            finally:
                await orchestrator.close()
                await client.close()
    finally:
        await pool.close()
