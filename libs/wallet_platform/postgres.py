"""Postgres connections that wait for the database instead of failing a service's start."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import structlog

from wallet_platform.backoff import Backoff

log = structlog.get_logger()

# What a database that is restarting, recovering or not yet up answers with.
UNAVAILABLE = (OSError, asyncpg.PostgresConnectionError, asyncpg.CannotConnectNowError)


async def connect_with_backoff(
    dsn: str, *, max_delay: float = 5.0, **kwargs: Any
) -> asyncpg.Connection:
    """Connect to ``dsn``, retrying with backoff (0.1 s doubling to ``max_delay``) while
    Postgres is unreachable or starting."""
    backoff = Backoff(cap=max_delay)
    while True:
        try:
            return await asyncpg.connect(dsn, timeout=10, **kwargs)
        except (*UNAVAILABLE, TimeoutError) as exc:
            delay = backoff.next()
            log.warning("postgres_unavailable", error=repr(exc), retry_in=round(delay, 2))
            await asyncio.sleep(delay)
