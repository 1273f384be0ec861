"""Run the projection: ``python -m projection`` (or ``python -m projection rebuild``)."""

from __future__ import annotations

import asyncio
import sys

import asyncpg

from projection.app import build_app
from projection.follower import Follower, load_model, rebuild
from projection.settings import ProjectionSettings
from wallet_platform import topics
from wallet_platform.config import load_settings
from wallet_platform.health import kafka_check, postgres_check
from wallet_platform.kafka import make_consumer
from wallet_platform.logging import setup_logging
from wallet_platform.schema import SchemaError, check_schema
from wallet_platform.service import READINESS, install_uvloop, serve_until_signalled


async def run(settings: ProjectionSettings) -> None:
    log = setup_logging("projection", settings.log_level)
    # The read model is rebuildable from ledger.events and stores its offsets with its rows, so
    # its commits need not wait for the WAL flush: a crash loses at most the last moments, which
    # are replayed. It also keeps the projection's fsyncs off the ledger writer's critical path.
    conn = await asyncpg.connect(settings.pg_dsn, server_settings={"synchronous_commit": "off"})
    try:
        await check_schema(conn)
    except SchemaError as exc:
        log.error("schema_not_ready", error=str(exc))
        raise SystemExit(2) from None
    model = await load_model(conn)
    pool = await asyncpg.create_pool(settings.pg_dsn, min_size=1, max_size=2)
    topic = topics.topic_name(topics.EVENTS, settings.topic_prefix)
    consumer = make_consumer(
        settings.kafka_bootstrap,
        "projection",
        group_id=settings.topic_prefix + settings.projection_group,
        max_poll_records=5000,
        fetch_min_bytes=settings.projection_fetch_min_bytes,
        fetch_max_wait_ms=settings.projection_fetch_max_wait_ms,
    )
    follower = Follower(
        conn, consumer, topic, model, flush_seconds=settings.projection_flush_ms / 1000
    )
    consumer.subscribe([topic], listener=follower)
    await consumer.start()
    stop = asyncio.Event()
    stop_serving = asyncio.Event()
    task = asyncio.create_task(follower.run(stop))

    def follower_died(t: asyncio.Task[None]) -> None:
        if not t.cancelled() and t.exception() is not None:
            log.error("follower_crashed", error=repr(t.exception()))
            stop_serving.set()

    task.add_done_callback(follower_died)

    async def shutdown() -> None:
        stop.set()
        try:
            await task
        except Exception:
            log.exception("follower_failed")
        await follower.flush()
        await consumer.stop()
        await pool.close()
        await conn.close()

    app = build_app(settings, model)
    app[READINESS].extend([postgres_check(pool), kafka_check(consumer)])
    await serve_until_signalled(
        app, settings.host, settings.projection_port, on_stop=shutdown, stop=stop_serving
    )
    if task.done() and not task.cancelled() and task.exception() is not None:
        raise SystemExit(1)


async def _rebuild(settings: ProjectionSettings) -> None:
    conn = await asyncpg.connect(settings.pg_dsn)
    try:
        await rebuild(conn)
    finally:
        await conn.close()
    print("read model cleared: the next start replays ledger.events from the beginning")


def main() -> None:
    settings = load_settings(ProjectionSettings)
    if sys.argv[1:] == ["rebuild"]:
        asyncio.run(_rebuild(settings))
        return
    install_uvloop()
    asyncio.run(run(settings))


if __name__ == "__main__":
    main()
