"""Kafka plumbing: producers and consumers configured the one way this project uses them.

Producers are idempotent with ``acks=all``: a command is accepted only when it is durable in the
broker, and retries inside the client can not duplicate or reorder it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaError

from wallet_platform.backoff import Backoff

log = structlog.get_logger()


def make_producer(
    bootstrap: str, client_id: str, *, linger_ms: int = 0, **extra: Any
) -> AIOKafkaProducer:
    """An idempotent, acks=all producer. ``linger_ms`` 0 sends as soon as the event loop yields;
    batching still happens naturally for everything queued in the same loop iteration."""
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        client_id=client_id,
        acks="all",
        enable_idempotence=True,
        linger_ms=linger_ms,
        request_timeout_ms=10_000,
        **extra,
    )


def make_consumer(
    bootstrap: str,
    client_id: str,
    *,
    group_id: str | None = None,
    fetch_max_wait_ms: int = 100,
    **extra: Any,
) -> AIOKafkaConsumer:
    """A consumer that never commits offsets to Kafka on its own: every service stores its
    offsets itself (in Postgres, with its output) or reads from a known position."""
    params: dict[str, Any] = {
        "bootstrap_servers": bootstrap,
        "client_id": client_id,
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "fetch_max_wait_ms": fetch_max_wait_ms,
        "max_partition_fetch_bytes": 4 * 1024 * 1024,
    }
    params.update(extra)
    return AIOKafkaConsumer(**params)


async def wait_for_kafka(bootstrap: str, *, max_delay: float = 5.0) -> None:
    """Return once a broker of ``bootstrap`` answers a metadata request, retrying with backoff
    (0.1 s doubling to ``max_delay``) while none does: a service started before Kafka waits for
    it, as it waits for Postgres, instead of exiting. Each try uses a client of its own (an
    aiokafka client whose start failed is not fit to start again)."""
    backoff = Backoff(cap=max_delay)
    while True:
        client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=5_000)
        try:
            await client.bootstrap()
            return
        except KafkaError as exc:
            delay = backoff.next()
            log.warning("kafka_unavailable", error=repr(exc), retry_in=round(delay, 2))
        finally:
            await client.close()
        await asyncio.sleep(delay)
