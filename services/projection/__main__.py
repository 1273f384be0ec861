"""Run the projection: ``python -m projection`` (or ``python -m projection rebuild``)."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

import asyncpg
from aiokafka import TopicPartition

from projection import checkpoint, rebuild
from projection.app import build_app
from projection.follower import Follower
from projection.read_your_writes import AppliedPositions, EndOffsets, ReadYourWrites
from projection.settings import ProjectionSettings
from wallet_platform import topics
from wallet_platform.backoff import Backoff
from wallet_platform.config import load_settings
from wallet_platform.health import kafka_check
from wallet_platform.kafka import make_consumer, wait_for_kafka
from wallet_platform.logging import setup_logging
from wallet_platform.postgres import connect_with_backoff
from wallet_platform.schema import SchemaError, check_schema
from wallet_platform.service import READINESS, install_uvloop, serve_until_signalled


async def run(settings: ProjectionSettings) -> None:
    log = setup_logging("projection", settings.log_level)
    backoff = Backoff(cap=settings.projection_checkpoint_backoff_max_ms / 1000)

    async def open_checkpoint_connection() -> asyncpg.Connection:
        return await checkpoint.connect(settings.pg_dsn)

    # A Postgres that is restarting delays the start instead of failing it.
    conn = await connect_with_backoff(
        settings.pg_dsn,
        max_delay=backoff.cap,
        command_timeout=checkpoint.COMMAND_TIMEOUT,
        server_settings=checkpoint.SERVER_SETTINGS,
    )
    try:
        await check_schema(conn)
    except SchemaError as exc:
        log.error("schema_not_ready", error=str(exc))
        raise SystemExit(2) from None
    model, stored_offsets = await checkpoint.load_checkpoint(conn)
    positions = AppliedPositions(stored_offsets)
    topic = topics.topic_name(topics.EVENTS, settings.topic_prefix)
    consumer = make_consumer(
        settings.kafka_bootstrap,
        "projection",
        group_id=settings.topic_prefix + settings.projection_group,
        max_poll_records=5000,
        fetch_min_bytes=settings.projection_fetch_min_bytes,
        fetch_max_wait_ms=settings.projection_fetch_max_wait_ms,
    )
    # End offsets are asked on a client of their own: on the follower's connection a lookup
    # would queue behind its fetch, which the broker holds for up to the fetch wait.
    offsets_client = make_consumer(settings.kafka_bootstrap, "projection-end-offsets")
    follower = Follower(consumer, topic, model, positions)
    checkpoints = checkpoint.CheckpointWriter(
        follower,
        open_checkpoint_connection,
        interval=settings.projection_flush_ms / 1000,
        backoff=backoff,
        conn=conn,
    )
    consumer.subscribe([topic], listener=follower)
    await wait_for_kafka(settings.kafka_bootstrap)
    await consumer.start()
    await offsets_client.start()

    async def end_offsets_of(partitions: frozenset[int]) -> dict[int, int]:
        found = await offsets_client.end_offsets([TopicPartition(topic, p) for p in partitions])
        return {tp.partition: offset for tp, offset in found.items()}

    try:  # the client learns the topic's leaders now, not during the first read's wait
        await asyncio.wait_for(end_offsets_of(frozenset({0})), 10)
    except Exception as exc:  # reads look up again (and answer 503 while Kafka does not)
        log.warning("end_offsets_not_ready", error=repr(exc))

    read_wait = settings.projection_read_wait_ms / 1000
    end_offsets = EndOffsets(end_offsets_of, timeout=max(read_wait, 0.001))
    read_your_writes = ReadYourWrites(
        end_offsets,
        positions,
        lambda: consumer.partitions_for_topic(topic),
        wait_seconds=read_wait,
    )
    stop = asyncio.Event()
    stop_serving = asyncio.Event()
    tasks = [
        asyncio.create_task(follower.run(stop), name="follower"),
        asyncio.create_task(checkpoints.run(stop), name="checkpoints"),
    ]

    def task_died(t: asyncio.Task[None]) -> None:
        if not t.cancelled() and t.exception() is not None:
            log.error("task_crashed", task=t.get_name(), error=repr(t.exception()))
            stop_serving.set()

    for task in tasks:
        task.add_done_callback(task_died)

    async def shutdown() -> None:
        stop.set()
        for task in tasks:
            try:
                await task
            except Exception:
                log.exception("task_failed", task=task.get_name())
        await end_offsets.close()
        await checkpoints.close()
        await offsets_client.stop()
        await consumer.stop()

    app = build_app(settings, model, read_your_writes)
    app[READINESS].extend([checkpoints.readiness, follower.readiness, kafka_check(consumer)])
    await serve_until_signalled(
        app,
        settings,
        settings.projection_port,
        ops_port=settings.projection_ops_port,
        on_stop=shutdown,
        stop=stop_serving,
    )
    if any(t.done() and not t.cancelled() and t.exception() is not None for t in tasks):
        raise SystemExit(1)


async def _rebuild(settings: ProjectionSettings, rate: float | None) -> int:
    """``python -m projection rebuild``: rebuild from ledger.events with progress lines, store
    the result as the read model, compare it with the ledger; 1 on a difference, 2 refused."""
    conn = await asyncpg.connect(settings.pg_dsn)
    try:
        if await rebuild.live_projection_connected(conn):
            print(
                "refused: a projection is running on this database (its checkpoint connection "
                "is open); stop it first, or use the operator API's projection_rebuild job, "
                "which compares without touching the read model",
                file=sys.stderr,
            )
            return 2
        last = 0.0

        def report(progress: rebuild.RebuildProgress) -> None:
            nonlocal last
            now = time.monotonic()
            if now - last >= 1.0 or progress.done == progress.total:
                last = now
                print(progress.line(), file=sys.stderr, flush=True)

        rebuilt = await rebuild.rebuild_read_model(
            dsn=settings.pg_dsn,
            bootstrap=settings.kafka_bootstrap,
            topic=topics.topic_name(topics.EVENTS, settings.topic_prefix),
            rate=rate,
            progress=report,
        )
        await rebuild.store_rebuilt(conn, rebuilt)
    finally:
        await conn.close()
    comparison = rebuilt.comparison
    print(
        f"read model rebuilt from {rebuilt.facts} facts in {rebuilt.seconds:.1f} s: "
        f"{len(rebuilt.model.balances)} balances, {len(rebuilt.model.customers)} customers; "
        "the next start continues from there"
    )
    if comparison.ok:
        print(f"compared with the ledger: {comparison.balances} balances, no difference")
        return 0
    print(
        f"DIFFERENT from the ledger: {comparison.differing} of {comparison.balances} balances; "
        f"the first: {comparison.differences[0].line()}"
    )
    return 1


def _rebuild_args(argv: list[str]) -> float | None:
    parser = argparse.ArgumentParser(
        prog="python -m projection rebuild",
        description="Rebuild the read model from ledger.events (the projection stopped), "
        "store it, and compare every balance with the ledger's posting at the same sequence.",
    )
    parser.add_argument("--rate", type=float, help="at most this many facts per second")
    rate: float | None = parser.parse_args(argv).rate
    if rate is not None and rate <= 0:
        parser.error("--rate must be positive")
    return rate


def command_parser() -> argparse.ArgumentParser:
    """``python -m projection [run]`` serves; ``rebuild`` has a parser of its own."""
    parser = argparse.ArgumentParser(
        prog="python -m projection",
        description="The projection: follows ledger.events into the read model and answers "
        "balance reads (settings WALLET_PROJECTION_*). Without a command it runs.",
    )
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("run", help="follow ledger.events and serve balance reads (the default)")
    commands.add_parser("rebuild", help="rebuild the read model (python -m projection rebuild -h)")
    return parser


def main() -> None:
    if sys.argv[1:2] != ["rebuild"]:
        # Only no command or `run` serves: --help, or a word that is not a command, must never
        # start the service (it did: `python -m projection --help` started the projection).
        command_parser().parse_args(sys.argv[1:])
    settings = load_settings(ProjectionSettings)
    if sys.argv[1:2] == ["rebuild"]:
        rate = _rebuild_args(sys.argv[2:])
        sys.exit(asyncio.run(_rebuild(settings, rate)))
    install_uvloop()
    asyncio.run(run(settings))


if __name__ == "__main__":
    main()
