"""Postgres connections that wait for the database instead of failing a service's start."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import structlog

log = structlog.get_logger()

# What a database that is restarting, recovering or not yet up answers with.
UNAVAILABLE = (OSError, asyncpg.PostgresConnectionError, asyncpg.CannotConnectNowError)


async def connect_with_backoff(
    dsn: str, *, max_delay: float = 5.0, attempts: int | None = None, **kwargs: Any
) -> asyncpg.Connection:
    """Connect to ``dsn``, retrying with exponential backoff (0.1 s doubling to ``max_delay``)
    while Postgres is unreachable or starting; ``attempts`` bounds the tries (None: forever)."""
    delay = 0.1
    tried = 0
    while True:
        tried += 1
        try:
            return await asyncpg.connect(dsn, timeout=10, **kwargs)
        except (*UNAVAILABLE, TimeoutError) as exc:
            if attempts is not None and tried >= attempts:
                raise
            log.warning("postgres_unavailable", error=repr(exc), retry_in=round(delay, 2))
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_delay)
