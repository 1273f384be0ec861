"""Run the ledger writer: ``python -m ledger``."""

from __future__ import annotations

import asyncio

import asyncpg
from aiohttp import web

from ledger import store
from ledger.settings import LedgerSettings
from ledger.writer import Topics, Writer
from wallet_platform import topics
from wallet_platform.config import load_settings
from wallet_platform.health import kafka_check, postgres_check
from wallet_platform.kafka import make_consumer, wait_for_kafka
from wallet_platform.logging import setup_logging
from wallet_platform.postgres import connect_with_backoff
from wallet_platform.producer import renewing_producer
from wallet_platform.schema import SchemaError, check_schema
from wallet_platform.service import (
    READINESS,
    add_operational_routes,
    install_uvloop,
    serve_until_signalled,
)


async def run(settings: LedgerSettings) -> None:
    log = setup_logging("ledger", settings.log_level)

    async def connect() -> asyncpg.Connection:
        return await connect_with_backoff(settings.pg_dsn)

    conn = await connect()
    try:
        await check_schema(conn)
    except SchemaError as exc:
        log.error("schema_not_ready", error=str(exc))
        await conn.close()
        raise SystemExit(2) from None
    await store.ensure_currencies(conn)
    second = await connect()
    pool = await asyncpg.create_pool(settings.pg_dsn, min_size=0, max_size=1)
    names = Topics(
        commands=topics.topic_name(topics.COMMANDS, settings.topic_prefix),
        events=topics.topic_name(topics.EVENTS, settings.topic_prefix),
        replies=topics.topic_name(topics.REPLIES, settings.topic_prefix),
        dead_letter=topics.topic_name(topics.DEAD_LETTER, settings.topic_prefix),
    )

    producer = renewing_producer(
        settings.kafka_producer,
        settings.kafka_bootstrap,
        "ledger",
        linger_ms=settings.ledger_producer_linger_ms,
    )

    consumer = make_consumer(
        settings.kafka_bootstrap,
        "ledger",
        group_id=settings.topic_prefix + settings.ledger_group,
        max_poll_records=settings.ledger_max_batch,
        fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
    )
    await wait_for_kafka(settings.kafka_bootstrap)
    await producer.start()
    writer = Writer(
        [conn, second],
        consumer,
        producer,
        names,
        max_batch=settings.ledger_max_batch,
        outcome_cache=settings.ledger_outcome_cache,
        verify_seconds=settings.ledger_verify_seconds,
        pipeline_depth=settings.ledger_pipeline_depth,
        # One attempt per recovery: the writer's own backoff paces the retries.
        connect=lambda: asyncpg.connect(settings.pg_dsn, timeout=5),
    )
    consumer.subscribe([names.commands], listener=writer)
    await consumer.start()

    stop = asyncio.Event()
    loop_task = asyncio.create_task(writer.run(stop))

    async def shutdown() -> None:
        # Finish the batch in flight (it commits or rolls back as a whole), then let go.
        stop.set()
        try:
            await loop_task
        except Exception:
            log.exception("writer_loop_failed")
        await writer.close()
        await consumer.stop()
        await producer.stop()
        await pool.close()
        for connection in writer.conns:
            try:
                await asyncio.wait_for(connection.close(), timeout=5)
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError):
                connection.terminate()

    stop_serving = asyncio.Event()

    def loop_died(task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            # A writer that can not write must not look alive: exit non-zero and let the
            # supervisor restart it. What it applied is durable; the rest is still in Kafka.
            log.error("writer_loop_crashed", error=repr(task.exception()))
            stop_serving.set()

    loop_task.add_done_callback(loop_died)

    app = web.Application()
    add_operational_routes(app)

    async def writer_check() -> dict[str, bool]:
        return {"writer": writer.ready}

    app[READINESS].extend([writer_check, postgres_check(pool), kafka_check(producer)])
    await serve_until_signalled(
        app, settings, settings.ledger_port, on_stop=shutdown, stop=stop_serving
    )
    if loop_task.done() and not loop_task.cancelled() and loop_task.exception() is not None:
        raise SystemExit(1)


def main() -> None:
    settings = load_settings(LedgerSettings)
    install_uvloop()
    asyncio.run(run(settings))


if __name__ == "__main__":
    main()
