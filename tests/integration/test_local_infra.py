"""The local infrastructure scripts (deploy/local/postgres.sh, kafka.sh) really do what they say.

Runs a SEPARATE Postgres and Kafka (own temporary WALLET_HOME under /tmp, own ports) so it never
disturbs the developer's main instance on 55432/59092. Kafka jars are shared with the main
instance when it has already fetched them (WALLET_KAFKA_LIBS), so no Maven run is needed.

Every subprocess has a timeout; the module fixture stops and deletes everything it started, even
when a test fails.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

from private_infra import free_ports
from wallet_platform import kafka_admin
from wallet_platform.topics import TopicSpec, topics

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
POSTGRES_SH = REPO / "deploy" / "local" / "postgres.sh"
KAFKA_SH = REPO / "deploy" / "local" / "kafka.sh"
KAFKA_VERSION = "3.9.1"

# Deliberately not the dev defaults (55432 / 59092 / 59093).


PG_PORT, KAFKA_PORT, KAFKA_CONTROLLER_PORT = free_ports(3)
PREFIX = "itest."

START_TIMEOUT = 240.0  # a first Kafka start may have to fetch the jars with Maven
STOP_TIMEOUT = 90.0  # kafka.sh itself gives the broker 60 s before SIGKILL
QUICK_TIMEOUT = 30.0

STOPPED = 3  # status exit code of both scripts when the service is not running


@dataclass(frozen=True)
class Infra:
    """The isolated instance under test."""

    home: Path
    env: dict[str, str]

    @property
    def pg_data(self) -> Path:
        return self.home / "postgres" / "data"

    @property
    def kafka_pidfile(self) -> Path:
        return self.home / "kafka" / "kafka.pid"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{KAFKA_PORT}"


@dataclass(frozen=True)
class Result:
    returncode: int
    out: str
    err: str


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _shared_kafka_libs() -> str | None:
    given = os.environ.get("WALLET_KAFKA_LIBS")
    if given:
        return given
    main_libs = REPO / ".run" / "kafka" / "libs"
    if (main_libs / f".fetched-kafka-{KAFKA_VERSION}").exists():
        return str(main_libs)
    return None  # the test instance fetches its own copy (slower, still correct)


def _run_sync(script: Path, args: list[str], env: dict[str, str], timeout: float) -> None:
    subprocess.run([str(script), *args], env=env, timeout=timeout, check=False, capture_output=True)


@pytest.fixture(scope="module")
def infra() -> Iterator[Infra]:
    for port in (PG_PORT, KAFKA_PORT, KAFKA_CONTROLLER_PORT):
        if _port_open(port):
            pytest.fail(f"port {port} is already in use; the isolated test instance needs it")
    root = Path(tempfile.mkdtemp(prefix="wallet-infra-", dir="/tmp"))
    # mkdtemp makes the dir 0700; Postgres runs as the 'postgres' OS user and must traverse it.
    root.chmod(0o711)
    env = {k: v for k, v in os.environ.items() if not k.startswith("WALLET_")}
    env.update(
        WALLET_HOME=str(root / "home"),
        WALLET_PG_PORT=str(PG_PORT),
        WALLET_KAFKA_PORT=str(KAFKA_PORT),
        WALLET_KAFKA_CONTROLLER_PORT=str(KAFKA_CONTROLLER_PORT),
        WALLET_TOPIC_PREFIX=PREFIX,
        PYTHON=sys.executable,
    )
    libs = _shared_kafka_libs()
    if libs:
        env["WALLET_KAFKA_LIBS"] = libs
    try:
        yield Infra(home=root / "home", env=env)
    finally:
        # reset = stop + delete state; --all also drops a privately fetched jar dir (a shared
        # WALLET_KAFKA_LIBS lives outside the state dir and is left alone).
        _run_sync(KAFKA_SH, ["reset", "--all"], env, STOP_TIMEOUT)
        _run_sync(POSTGRES_SH, ["reset"], env, STOP_TIMEOUT)
        shutil.rmtree(root, ignore_errors=True)


async def sh(infra: Infra, script: Path, *args: str, limit: float = QUICK_TIMEOUT) -> Result:
    """Run one of the scripts against the isolated instance, killed after ``limit`` seconds."""
    proc = await asyncio.create_subprocess_exec(
        str(script),
        *args,
        env=infra.env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), limit)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        pytest.fail(f"{script.name} {' '.join(args)} did not finish within {limit:g}s")
    return Result(proc.returncode or 0, out.decode(), err.decode())


def _ok(result: Result, what: str) -> str:
    assert result.returncode == 0, f"{what} failed ({result.returncode}):\n{result.out}{result.err}"
    return result.out


def _pid_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    # A zombie has exited already; it only waits for its parent (often init) to reap it.
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


async def _assert_gone(pid: int, *ports: int) -> None:
    for _ in range(100):  # up to 10 s for the exit to be observable
        if not _pid_alive(pid):
            break
        await asyncio.sleep(0.1)
    assert not _pid_alive(pid), f"process {pid} is still alive after stop"
    for port in ports:
        assert not _port_open(port), f"port {port} still accepts connections after stop"


def _pid_from(text: str, marker: str) -> int:
    # "postgres started (pid 123)" / "kafka already running (pid 123)" / "... running (pid 123)"
    for line in text.splitlines():
        if marker in line and "(pid " in line:
            return int(line.split("(pid ", 1)[1].split(")", 1)[0])
    raise AssertionError(f"no {marker!r} line with a pid in:\n{text}")


async def _pg_status_pid(infra: Infra) -> int:
    return _pid_from(_ok(await sh(infra, POSTGRES_SH, "status"), "postgres status"), "running")


async def _kafka_status_pid(infra: Infra) -> int:
    return _pid_from(_ok(await sh(infra, KAFKA_SH, "status"), "kafka status"), "running")


async def test_postgres_lifecycle(infra: Infra) -> None:
    assert (await sh(infra, POSTGRES_SH, "status")).returncode == STOPPED

    first = _ok(await sh(infra, POSTGRES_SH, "start", limit=START_TIMEOUT), "postgres start")
    dsn = f"postgresql://wallet@127.0.0.1:{PG_PORT}/wallet"
    assert dsn in first
    pid = await _pg_status_pid(infra)

    second = _ok(await sh(infra, POSTGRES_SH, "start", limit=START_TIMEOUT), "second start")
    assert f"postgres already running (pid {pid})" in second
    assert await _pg_status_pid(infra) == pid

    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        assert await conn.fetchval("SELECT current_user") == "wallet"
        # Durability is a hard requirement of the dev cluster too.
        assert await conn.fetchval("SHOW fsync") == "on"
        assert await conn.fetchval("SHOW synchronous_commit") == "on"
        assert await conn.fetchval("SHOW max_connections") == "200"
    finally:
        await conn.close()

    _ok(await sh(infra, POSTGRES_SH, "stop", limit=STOP_TIMEOUT), "postgres stop")
    await _assert_gone(pid, PG_PORT)
    assert (await sh(infra, POSTGRES_SH, "status")).returncode == STOPPED
    assert "not running" in _ok(await sh(infra, POSTGRES_SH, "stop"), "second stop")

    # A machine restart leaves postmaster.pid behind, and its pid may by now belong to some other
    # live process: use our own pid, the worst case (Postgres alone would refuse to start).
    (infra.pg_data / "postmaster.pid").write_text(f"{os.getpid()}\n{infra.pg_data}\n")
    assert (await sh(infra, POSTGRES_SH, "status")).returncode == STOPPED
    _ok(await sh(infra, POSTGRES_SH, "start", limit=START_TIMEOUT), "start over stale pid")
    new_pid = await _pg_status_pid(infra)
    assert new_pid != os.getpid()
    _ok(await sh(infra, POSTGRES_SH, "stop", limit=STOP_TIMEOUT), "postgres stop")
    await _assert_gone(new_pid, PG_PORT)


async def test_kafka_lifecycle(infra: Infra) -> None:
    assert (await sh(infra, KAFKA_SH, "status")).returncode == STOPPED

    _ok(await sh(infra, KAFKA_SH, "start", limit=START_TIMEOUT), "kafka start")
    pid = await _kafka_status_pid(infra)

    second = _ok(await sh(infra, KAFKA_SH, "start", limit=START_TIMEOUT), "second start")
    assert f"kafka already running (pid {pid})" in second
    assert await _kafka_status_pid(infra) == pid

    # The project's topics exist under WALLET_TOPIC_PREFIX with the right partition counts, and
    # nothing was created without the prefix.
    counts = await kafka_admin.partition_counts(infra.bootstrap)
    for spec in topics(PREFIX):
        assert counts.get(spec.name) == spec.partitions, (spec, counts)
    assert not {s.name for s in topics()} & counts.keys()

    # ensure_topics is idempotent, refuses a partition mismatch, and delete_topics cleans up.
    assert await kafka_admin.ensure_topics(infra.bootstrap, topics(PREFIX)) == []
    wrong = TopicSpec(topics(PREFIX)[0].name, 3)
    with pytest.raises(kafka_admin.TopicMismatchError, match="expects 3"):
        await kafka_admin.ensure_topics(infra.bootstrap, [wrong])
    scratch = TopicSpec(f"{PREFIX}scratch", 2, {"retention.ms": "60000"})
    assert await kafka_admin.ensure_topics(infra.bootstrap, [scratch]) == [scratch.name]
    assert (await kafka_admin.partition_counts(infra.bootstrap))[scratch.name] == 2
    assert await kafka_admin.delete_topics(infra.bootstrap, [scratch.name]) == [scratch.name]
    assert await kafka_admin.delete_topics(infra.bootstrap, [scratch.name]) == []

    _ok(await sh(infra, KAFKA_SH, "stop", limit=STOP_TIMEOUT), "kafka stop")
    await _assert_gone(pid, KAFKA_PORT, KAFKA_CONTROLLER_PORT)
    assert not infra.kafka_pidfile.exists()
    assert (await sh(infra, KAFKA_SH, "status")).returncode == STOPPED
    assert "not running" in _ok(await sh(infra, KAFKA_SH, "stop"), "second stop")

    # A stale pid file naming a live, unrelated process (ours): stop must not touch it, and start
    # must not be blocked by it.
    infra.kafka_pidfile.write_text(f"{os.getpid()}\n")
    assert (await sh(infra, KAFKA_SH, "status")).returncode == STOPPED
    assert "not running" in _ok(await sh(infra, KAFKA_SH, "stop"), "stop over stale pid")
    infra.kafka_pidfile.write_text(f"{os.getpid()}\n")
    _ok(await sh(infra, KAFKA_SH, "start", limit=START_TIMEOUT), "start over stale pid")
    new_pid = await _kafka_status_pid(infra)
    assert new_pid != os.getpid()
    _ok(await sh(infra, KAFKA_SH, "stop", limit=STOP_TIMEOUT), "kafka stop")
    await _assert_gone(new_pid, KAFKA_PORT, KAFKA_CONTROLLER_PORT)
