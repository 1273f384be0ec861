"""``python -m bench.kafka_floor``: what one Kafka message costs the Python clients alone, with
the services' settings and nothing else.

Issue 14's CPU target meets aiokafka on every hop: a callback is a command (the edge produces,
the ledger consumes), a fact (the ledger produces, the projection consumes) and a share of a
reply message (the ledger produces, the edge consumes). This measures the floor of that: one
process produces ``--rate`` messages per second of a command's size, keyed over many customers,
each send awaited on its own task as the edge does (an idempotent ``acks=all`` producer from
``wallet_platform.kafka.make_producer``, linger 0); another consumes them with ``getmany`` as
the ledger and the projection do (``make_consumer``). Each process's own CPU over the window
(``time.process_time``) is divided by the messages, and the broker's (from ``/proc``, its pid
from the local Kafka's pid file) too.

Uses the local Kafka (``WALLET_KAFKA_BOOTSTRAP``, default ``127.0.0.1:29092``) with a topic of
its own, deleted at the end. A developer tool: the test suite never runs it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
import uuid

from bench.__main__ import infra_groups
from bench.procstat import cpu_seconds
from wallet_platform.kafka import make_consumer, make_producer
from wallet_platform.kafka_admin import delete_topics, ensure_topics
from wallet_platform.topics import TopicSpec

BOOTSTRAP = os.environ.get("WALLET_KAFKA_BOOTSTRAP", "127.0.0.1:29092")
PARTITIONS = 8
# About a debit command as the edge encodes it.
PAYLOAD = b'{"v":1,"type":"debit","customer_id":"c-0000","balance_id":"usd",' + b"x" * 180 + b"}"


async def _produce(topic: str, rate: int, count: int, linger_ms: int, tick_ms: float) -> None:
    producer = make_producer(BOOTSTRAP, "kafka-floor-producer", linger_ms=linger_ms)
    await producer.start()
    print("ready", flush=True)
    sys.stdin.readline()  # go
    cpu = time.process_time()

    async def one(i: int) -> None:
        sent = await producer.send(topic, PAYLOAD, key=f"customer-{i % 10_000}".encode())
        await sent

    tasks: set[asyncio.Task[None]] = set()
    started = time.monotonic()
    i = 0
    while i < count:
        due = min(int((time.monotonic() - started) * rate), count)
        while i < due:
            task = asyncio.create_task(one(i))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            i += 1
        await asyncio.sleep(tick_ms / 1000)
    if tasks:
        await asyncio.gather(*tasks)
    await producer.stop()
    print(i, time.process_time() - cpu, flush=True)


async def _consume(topic: str, expected: int, min_bytes: int, max_wait_ms: int) -> None:
    from aiokafka import TopicPartition

    consumer = make_consumer(
        BOOTSTRAP, "kafka-floor-consumer", fetch_min_bytes=min_bytes, fetch_max_wait_ms=max_wait_ms
    )
    await consumer.start()
    partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    consumer.assign(partitions)
    await consumer.seek_to_beginning(*partitions)
    print("ready", flush=True)
    cpu = time.process_time()
    seen = 0
    deadline = time.monotonic() + 300
    while seen < expected and time.monotonic() < deadline:
        records = await consumer.getmany(timeout_ms=200, max_records=5000)
        seen += sum(len(batch) for batch in records.values())
    await consumer.stop()
    print(seen, time.process_time() - cpu, flush=True)


def _start(role: str, topic: str, extra: list[str]) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.kafka_floor", "--role", role, "--topic", topic, *extra],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    if process.stdout.readline().strip() != "ready":
        raise SystemExit(f"the {role} did not start")
    return process


async def _run(args: argparse.Namespace) -> None:
    topic = f"bench.kafka_floor.{uuid.uuid4().hex[:8]}"
    await ensure_topics(BOOTSTRAP, [TopicSpec(topic, PARTITIONS)])
    expected = int(args.rate * args.seconds)
    started: list[subprocess.Popen[str]] = []
    try:
        fetch = ["--fetch-min-bytes", str(args.fetch_min_bytes)]
        fetch += ["--fetch-max-wait-ms", str(args.fetch_max_wait_ms)]
        consumer = _start("consume", topic, ["--expect", str(expected), *fetch])
        started.append(consumer)
        linger = ["--linger-ms", str(args.linger_ms), "--tick-ms", str(args.tick_ms)]
        producer = _start(
            "produce", topic, ["--rate", str(args.rate), "--expect", str(expected), *linger]
        )
        started.append(producer)
        kafka = next((g for g in infra_groups() if g.name == "kafka"), None)
        broker = kafka.pids[0] if kafka is not None else None
        broker_before = cpu_seconds(broker) if broker is not None else 0.0
        assert producer.stdin is not None
        producer.stdin.write("go\n")
        producer.stdin.flush()
        produced_text, _ = await asyncio.to_thread(producer.communicate, timeout=args.seconds + 60)
        consumed_text, _ = await asyncio.to_thread(consumer.communicate, timeout=120)
        spent = {"producer": float(produced_text.split()[-1])}
        spent["consumer"] = float(consumed_text.split()[-1])
        if broker is not None:
            spent["broker"] = cpu_seconds(broker) - broker_before
        produced, consumed = int(produced_text.split()[-2]), int(consumed_text.split()[-2])
    finally:
        for process in started:
            if process.poll() is None:
                process.kill()
                process.wait()
        await delete_topics(BOOTSTRAP, [topic])
    print(
        f"{produced} messages produced and {consumed} consumed at {args.rate}/s "
        f"(tick {args.tick_ms:g} ms, linger {args.linger_ms} ms, "
        f"fetch min {args.fetch_min_bytes} B / max wait {args.fetch_max_wait_ms} ms)"
    )
    for name, seconds in spent.items():
        print(f"  {name:<9} {seconds / max(produced, 1) * 1e6:7.1f} µs/message")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.kafka_floor", description=__doc__)
    parser.add_argument("--rate", type=int, default=1000, help="messages per second")
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--linger-ms", type=int, default=0, help="the producer's linger")
    parser.add_argument(
        "--tick-ms",
        type=float,
        default=1.0,
        help="the producer sends what is due every this many ms: 1 spreads the messages as "
        "callbacks arrive; 10 or 50 sends them in bursts of rate × tick",
    )
    parser.add_argument("--fetch-min-bytes", type=int, default=1, help="the consumer's")
    parser.add_argument("--fetch-max-wait-ms", type=int, default=100, help="the consumer's")
    parser.add_argument("--role", choices=("produce", "consume"), help=argparse.SUPPRESS)
    parser.add_argument("--topic", help=argparse.SUPPRESS)
    parser.add_argument("--expect", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    import uvloop

    uvloop.install()
    if args.role == "produce":
        asyncio.run(_produce(args.topic, args.rate, args.expect, args.linger_ms, args.tick_ms))
    elif args.role == "consume":
        asyncio.run(_consume(args.topic, args.expect, args.fetch_min_bytes, args.fetch_max_wait_ms))
    else:
        asyncio.run(_run(args))


if __name__ == "__main__":
    main()
