"""Kafka administration the local scripts and the tests need: wait for a broker, create topics.

Built on aiokafka's ``AIOKafkaAdminClient``. That client returns raw protocol responses (per-topic
error codes instead of exceptions), so this module turns them into plain results and clear errors.

Command line (used by ``deploy/local/kafka.sh``)::

    python -m wallet_platform.kafka_admin wait --bootstrap 127.0.0.1:29092 --timeout 90
    python -m wallet_platform.kafka_admin ensure-topics --bootstrap 127.0.0.1:29092 [--prefix P]
    python -m wallet_platform.kafka_admin delete-topics --bootstrap ... (--prefix P | NAME ...)

``--bootstrap`` defaults to ``$WALLET_KAFKA_BOOTSTRAP``, ``--prefix`` to ``$WALLET_TOPIC_PREFIX``.
Exit status: 0 success, 1 failure (message on stderr), 2 usage error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    KafkaError,
    TopicAlreadyExistsError,
    UnknownTopicOrPartitionError,
    for_code,
)

from wallet_platform.topics import TopicSpec, topics

DEFAULT_BOOTSTRAP = "127.0.0.1:29092"

# Per-request timeout for admin calls. Short, because a local broker either answers quickly or is
# not up yet; wait_until_ready does the patient retrying.
_REQUEST_TIMEOUT_MS = 10_000
_RETRY_PAUSE_S = 0.5
# How long ensure_topics waits for freshly created partitions to get a leader.
_LEADER_TIMEOUT_S = 30.0

_NO_ERROR = 0


def _error_name(code: int) -> str:
    # A readable name for a Kafka protocol error code, e.g. "INVALID_CONFIG (40)".
    return f"{for_code(code).message} ({code})"


class TopicMismatchError(RuntimeError):
    """An existing topic does not match its spec in a way Kafka cannot fix in place."""


class KafkaAdminError(RuntimeError):
    """The broker refused an admin request."""


class BrokerExitedError(RuntimeError):
    """The broker process being waited for exited."""


@asynccontextmanager
async def _admin(
    bootstrap: str, request_timeout_ms: int = _REQUEST_TIMEOUT_MS
) -> AsyncIterator[Any]:
    # The client must be created inside the running loop, and closed even when start() fails
    # half-way, or it leaks its connections (and a ResourceWarning, which pytest turns into errors).
    client = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap,
        client_id="wallet-kafka-admin",
        request_timeout_ms=request_timeout_ms,
    )
    try:
        await client.start()
        yield client
    finally:
        await client.close()


async def _partition_table(client: Any) -> dict[str, list[dict[str, Any]]]:
    # describe_topics(None) asks for *all* topics: asking for specific names goes through a
    # MetadataRequest with allow_auto_topic_creation=True in aiokafka, which would create topics
    # as a side effect on a broker that allows it. Listing everything has no side effects.
    described: list[dict[str, Any]] = await client.describe_topics()
    return {
        str(t["topic"]): list(t["partitions"]) for t in described if t["error_code"] == _NO_ERROR
    }


# The timeout is a parameter on purpose (ASYNC109 prefers asyncio.timeout around the call): each
# attempt is bounded separately and the final error must name the address and the last failure.
async def wait_until_ready(bootstrap: str, timeout: float) -> None:  # noqa: ASYNC109
    """Return once the broker at ``bootstrap`` answers a metadata request listing a live broker.

    Retries connection errors and empty answers until ``timeout`` seconds have passed, then raises
    :class:`TimeoutError` naming the bootstrap address and the last error seen.
    """
    deadline = time.monotonic() + timeout
    last_error = "no attempt made"
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(
                f"Kafka at {bootstrap} did not become ready within {timeout:g}s "
                f"(last error: {last_error})"
            )
        try:
            # Bound each attempt too: a half-open broker can accept the TCP connection and then
            # never answer, and the client's own timeout is longer than what is left.
            async with asyncio.timeout(min(remaining, _REQUEST_TIMEOUT_MS / 1000)):
                async with _admin(bootstrap) as client:
                    cluster: dict[str, Any] = await client.describe_cluster()
            brokers = cluster.get("brokers") or []
            if brokers:
                return
            last_error = "metadata answer lists no brokers yet"
        except (KafkaError, OSError, TimeoutError) as exc:
            # aiokafka's errors already start with their class name; OSError's do not.
            text, kind = str(exc), type(exc).__name__
            last_error = text if text.startswith(kind) else f"{kind}: {text}"
        await asyncio.sleep(min(_RETRY_PAUSE_S, max(0.0, deadline - time.monotonic())))


async def partition_counts(bootstrap: str) -> dict[str, int]:
    """The partition count of every topic in the cluster, by name (internal topics included)."""
    async with _admin(bootstrap) as client:
        table = await _partition_table(client)
    return {name: len(parts) for name, parts in table.items()}


def _check_partitions(specs: Sequence[TopicSpec], existing: dict[str, int]) -> None:
    wrong = [
        f"{s.name}: has {existing[s.name]} partitions, the project expects {s.partitions}"
        for s in specs
        if s.name in existing and existing[s.name] != s.partitions
    ]
    if wrong:
        # Never "fix" this automatically: adding partitions re-maps keys (customer ids) to
        # partitions, and removing them is impossible. A human must decide (usually: reset).
        raise TopicMismatchError(
            "existing topics do not match the project's partition counts:\n  " + "\n  ".join(wrong)
        )


async def _wait_for_leaders(client: Any, names: Sequence[str], within: float) -> None:
    # CreateTopics returns once the controller has accepted the topics, a moment before their
    # partitions have leaders; a producer started right away would get LEADER_NOT_AVAILABLE.
    deadline = time.monotonic() + within
    while True:
        table = await _partition_table(client)
        pending = [
            n
            for n in names
            if n not in table or any(p["leader"] < 0 or p["error_code"] for p in table[n])
        ]
        if not pending:
            return
        if time.monotonic() >= deadline:
            raise TimeoutError(f"topics have no partition leader after {within:g}s: {pending}")
        await asyncio.sleep(0.2)


async def ensure_topics(
    bootstrap: str,
    specs: Iterable[TopicSpec],
    *,
    replication_factor: int = 1,
) -> list[str]:
    """Create the topics of ``specs`` that do not exist yet; return the names created.

    Idempotent: existing topics are left alone, and a topic created concurrently by someone else
    (TOPIC_ALREADY_EXISTS) counts as existing. An existing topic whose partition count differs
    from its spec raises :class:`TopicMismatchError` (nothing is created in that case). Topic
    configs of existing topics are not compared or altered. Returns after every created topic's
    partitions have a leader.
    """
    wanted = list(specs)
    async with _admin(bootstrap) as client:
        existing = {n: len(p) for n, p in (await _partition_table(client)).items()}
        _check_partitions(wanted, existing)
        missing = [s for s in wanted if s.name not in existing]
        if not missing:
            return []
        response = await client.create_topics(
            [
                # aiokafka's NewTopic rejects replication_factor=-1 ("broker default") unless a
                # replica assignment is given, so the factor is always explicit.
                NewTopic(
                    name=s.name,
                    num_partitions=s.partitions,
                    replication_factor=replication_factor,
                    topic_configs=dict(s.config),
                )
                for s in missing
            ],
            timeout_ms=_REQUEST_TIMEOUT_MS,
        )
        created: list[str] = []
        failures: list[str] = []
        # create_topics does not raise on per-topic errors: each topic has its own error code.
        for entry in response.topic_errors:
            name, code = str(entry[0]), int(entry[1])
            message = entry[2] if len(entry) > 2 else None
            if code == _NO_ERROR:
                created.append(name)
            elif code != TopicAlreadyExistsError.errno:
                failures.append(f"{name}: {_error_name(code)}{f' ({message})' if message else ''}")
        if failures:
            raise KafkaAdminError("could not create topics:\n  " + "\n  ".join(failures))
        # Someone may have created a topic between our listing and our request, with other
        # settings: re-check against the cluster's real state.
        now = {n: len(p) for n, p in (await _partition_table(client)).items()}
        _check_partitions(wanted, now)
        await _wait_for_leaders(client, created, _LEADER_TIMEOUT_S)
    return created


async def delete_topics(bootstrap: str, names: Iterable[str]) -> list[str]:
    """Delete the topics ``names``; return those actually deleted (unknown topics are skipped).

    Meant for test cleanup. Deletion is asynchronous on the broker side: a topic of the same name
    can be re-created only once the broker has finished removing it.
    """
    wanted = sorted(set(names))
    if not wanted:
        return []
    async with _admin(bootstrap) as client:
        response = await client.delete_topics(wanted, timeout_ms=_REQUEST_TIMEOUT_MS)
    deleted: list[str] = []
    failures: list[str] = []
    for entry in response.topic_error_codes:
        name, code = str(entry[0]), int(entry[1])
        if code == _NO_ERROR:
            deleted.append(name)
        elif code != UnknownTopicOrPartitionError.errno:
            failures.append(f"{name}: {_error_name(code)}")
    if failures:
        raise KafkaAdminError("could not delete topics:\n  " + "\n  ".join(failures))
    return sorted(deleted)


# --- command line ---------------------------------------------------------------------------


def _process_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            stat = fh.read()
    except FileNotFoundError:
        return False
    # A zombie has exited already; it only waits for its parent (often init) to reap it.
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


async def _process_exit(pid: int) -> None:
    while True:
        if not _process_alive(pid):
            return
        await asyncio.sleep(0.5)


async def _wait_while_alive(bootstrap: str, within: float, pid: int) -> None:
    # kafka.sh passes the broker's pid: a broker that crashes on start-up (bad config, port
    # taken, corrupt log dir) then fails the wait at once instead of after the full timeout.
    waiter = asyncio.create_task(wait_until_ready(bootstrap, within))
    watcher = asyncio.create_task(_process_exit(pid))
    done, _ = await asyncio.wait({waiter, watcher}, return_when=asyncio.FIRST_COMPLETED)
    loser = watcher if waiter in done else waiter
    loser.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await loser
    if waiter in done:
        waiter.result()  # re-raises TimeoutError if the broker never answered
        return
    raise BrokerExitedError(f"process {pid} exited before Kafka at {bootstrap} answered")


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--bootstrap",
        default=os.environ.get("WALLET_KAFKA_BOOTSTRAP", DEFAULT_BOOTSTRAP),
        help="bootstrap servers, host:port[,host:port] (default: $WALLET_KAFKA_BOOTSTRAP or "
        f"{DEFAULT_BOOTSTRAP})",
    )
    common.add_argument(
        "--timeout",
        type=float,
        default=90.0,
        help="seconds to wait for the broker to answer (default: 90)",
    )
    common.add_argument(
        "--prefix",
        default=os.environ.get("WALLET_TOPIC_PREFIX", ""),
        help="topic name prefix (default: $WALLET_TOPIC_PREFIX or none)",
    )
    common.add_argument(
        "--pid",
        type=int,
        default=None,
        help="stop waiting as soon as this process (the broker) exits",
    )
    common.add_argument("-v", "--verbose", action="store_true", help="show aiokafka's own logs")

    parser = argparse.ArgumentParser(
        prog="python -m wallet_platform.kafka_admin",
        description="Wait for a Kafka broker and manage the project's topics.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("wait", parents=[common], help="wait until the broker answers metadata")
    sub.add_parser(
        "ensure-topics", parents=[common], help="create the project's topics that are missing"
    )
    delete = sub.add_parser(
        "delete-topics",
        parents=[common],
        help="delete the named topics, or all project topics under a non-empty --prefix",
    )
    delete.add_argument("names", nargs="*", help="topic names (default: the project's topics)")
    return parser


async def _run(args: argparse.Namespace) -> int:
    # Every command first waits for the broker, so ensure-topics right after a start just works.
    if args.pid is not None:
        await _wait_while_alive(args.bootstrap, args.timeout, args.pid)
    else:
        await wait_until_ready(args.bootstrap, args.timeout)
    if args.command == "wait":
        print(f"kafka ready at {args.bootstrap}")
    elif args.command == "ensure-topics":
        specs = topics(args.prefix)
        created = await ensure_topics(args.bootstrap, specs)
        for spec in specs:
            state = "created" if spec.name in created else "exists"
            print(f"topic {spec.name}: {spec.partitions} partitions ({state})")
    elif args.command == "delete-topics":
        names: list[str] = list(args.names)
        if not names:
            if not args.prefix:
                # Refuse to wipe the un-prefixed dev topics by accident.
                print(
                    "delete-topics: name topics explicitly or give a non-empty --prefix",
                    file=sys.stderr,
                )
                return 2
            names = [s.name for s in topics(args.prefix)]
        deleted = await delete_topics(args.bootstrap, names)
        for name in deleted:
            print(f"topic {name}: deleted")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m wallet_platform.kafka_admin``; returns the exit status."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not args.verbose:
        # While the broker is still starting aiokafka logs every refused connection at ERROR;
        # wait_until_ready expects those and reports the last one itself if it gives up.
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    try:
        return asyncio.run(_run(args))
    except (
        TimeoutError,
        TopicMismatchError,
        KafkaAdminError,
        BrokerExitedError,
        KafkaError,
        OSError,
    ) as exc:
        print(f"kafka_admin {args.command}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
