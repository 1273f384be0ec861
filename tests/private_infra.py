"""A private Postgres and Kafka that fault tests may stop, crash and kill.

The shared instances (25432 / 29092) serve every other test running at the same time, so they are
never touched. This pair lives in its own ``WALLET_HOME`` under /tmp (mode 0711: Postgres runs as
the ``postgres`` OS user and must traverse it), on free ports, and is started and stopped by the
project's own ``deploy/local/postgres.sh`` and ``kafka.sh``, as an operator would. The Kafka jars
are shared with the main instance (``WALLET_KAFKA_LIBS``), so no Maven run is needed.

Every script run has a time limit; :meth:`PrivateInfra.remove` stops and deletes everything,
and the fixture that owns the pair calls it even when a test fails.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from wallet_stack import QuadcodeKey, Stack, create_template

REPO = Path(__file__).resolve().parents[1]
POSTGRES_SH = REPO / "deploy" / "local" / "postgres.sh"
KAFKA_SH = REPO / "deploy" / "local" / "kafka.sh"
SHARED_KAFKA_LIBS = REPO / ".run" / "kafka" / "libs"
KAFKA_VERSION = "3.9.1"

START_LIMIT = 240.0  # a first Kafka start may have to fetch the jars with Maven
STOP_LIMIT = 90.0  # kafka.sh itself gives the broker 60 s before SIGKILL


class InfraError(RuntimeError):
    """A script or a process did not do what it should, in time."""


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports that are free right now."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def _pg_bin() -> Path:
    """The newest installed Postgres server binaries (postgres.sh picks them the same way)."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parent.parent.name)
    )
    if not found:
        raise InfraError("no pg_ctl under /usr/lib/postgresql/*/bin")
    return found[-1].parent


def _alive(pid: int) -> bool:
    """True unless the process is gone or a zombie (it exited and waits to be reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@dataclass
class PrivateInfra:
    """One private Postgres and one private Kafka broker, each under the project's scripts."""

    root: Path
    pg_port: int
    kafka_port: int
    controller_port: int
    topic_prefix: str = "fault."

    @classmethod
    def create(cls) -> PrivateInfra:
        """A new state directory and free ports; nothing is started yet."""
        root = Path(tempfile.mkdtemp(prefix="wallet-faults-", dir="/tmp"))
        root.chmod(0o711)
        return cls(root, *free_ports(3))

    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def env(self) -> dict[str, str]:
        """The environment the scripts run with: this pair's home and ports, no other WALLET_."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("WALLET_")}
        env.update(
            WALLET_HOME=str(self.home),
            WALLET_PG_PORT=str(self.pg_port),
            WALLET_KAFKA_PORT=str(self.kafka_port),
            WALLET_KAFKA_CONTROLLER_PORT=str(self.controller_port),
            WALLET_TOPIC_PREFIX=self.topic_prefix,
            PYTHON=sys.executable,
        )
        libs = os.environ.get("WALLET_KAFKA_LIBS")
        if libs:
            env["WALLET_KAFKA_LIBS"] = libs
        elif (SHARED_KAFKA_LIBS / f".fetched-kafka-{KAFKA_VERSION}").exists():
            env["WALLET_KAFKA_LIBS"] = str(SHARED_KAFKA_LIBS)
        return env

    @property
    def admin_dsn(self) -> str:
        return f"postgresql://wallet@127.0.0.1:{self.pg_port}/wallet"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    @property
    def pg_data(self) -> Path:
        return self.home / "postgres" / "data"

    @property
    def kafka_pidfile(self) -> Path:
        return self.home / "kafka" / "kafka.pid"

    async def run(self, *command: str | Path, limit: float = STOP_LIMIT) -> str:
        """Run ``command`` with this pair's environment; its output, or :class:`InfraError`."""
        proc = await asyncio.create_subprocess_exec(
            *map(str, command),
            env=self.env,
            cwd="/",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), limit)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise InfraError(f"{command} did not finish within {limit:g}s") from None
        text = out.decode(errors="replace")
        if proc.returncode != 0:
            raise InfraError(f"{command} failed ({proc.returncode}):\n{text}")
        return text

    # -- Postgres ---------------------------------------------------------------------------

    async def start_postgres(self) -> None:
        """``postgres.sh start``. Right after a crash the old backends may still be on their way
        out, and the script refuses to start over them: it is retried for a few seconds."""
        deadline = time.monotonic() + 30
        while True:
            try:
                await self.run(POSTGRES_SH, "start", limit=START_LIMIT)
                return
            except InfraError as exc:
                if "leftover postgres processes" not in str(exc) or time.monotonic() > deadline:
                    raise
            await asyncio.sleep(0.3)

    async def stop_postgres(self) -> None:
        """A clean stop (``postgres.sh stop``: pg_ctl's fast shutdown)."""
        await self.run(POSTGRES_SH, "stop")

    async def crash_postgres(self) -> None:
        """An immediate stop: the postmaster and its backends quit without a checkpoint, as on a
        crash, and the next start runs crash recovery from the WAL."""
        pg_ctl = _pg_bin() / "pg_ctl"
        stop = [pg_ctl, "-D", self.pg_data, "-m", "immediate", "-w", "-t", "30", "stop"]
        if os.geteuid() == 0:  # Postgres runs as the postgres OS user (postgres.sh's as_pg)
            stop = ["runuser", "-u", "postgres", "--", *stop]
        await self.run(*stop)

    # -- Kafka ------------------------------------------------------------------------------

    async def start_kafka(self) -> None:
        """``kafka.sh start``: returns once the broker answers and the topics exist."""
        await self.run(KAFKA_SH, "start", limit=START_LIMIT)

    async def stop_kafka(self) -> None:
        """A clean stop (``kafka.sh stop``: SIGTERM, the broker's controlled shutdown)."""
        await self.run(KAFKA_SH, "stop")

    def kafka_pid(self) -> int:
        return int(self.kafka_pidfile.read_text().split()[0])

    async def kill_kafka(self) -> None:
        """SIGKILL the broker (the pid in its pid file) and wait until it is gone."""
        pid = self.kafka_pid()
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 20
        while _alive(pid):
            if time.monotonic() > deadline:
                raise InfraError(f"broker {pid} still alive 20 s after SIGKILL")
            await asyncio.sleep(0.05)

    # -- both -------------------------------------------------------------------------------

    async def stack(self, workdir: Path, key: QuadcodeKey) -> Stack:
        """A stack (not started) on a fresh migrated database of this pair's Postgres, in the
        topic namespace kafka.sh makes for it."""
        database = "private_" + uuid.uuid4().hex[:8]
        await create_template(database, self.admin_dsn)
        return Stack(
            database,
            self.topic_prefix,
            workdir,
            key,
            admin_dsn=self.admin_dsn,
            kafka=self.bootstrap,
        )

    async def start(self) -> None:
        """Both, one after the other (in parallel they would only compete for the two cores)."""
        await self.start_postgres()
        await self.start_kafka()

    async def remove(self) -> None:
        """Stop both and delete their state; never raises (it runs in teardown)."""
        for command in ((KAFKA_SH, "reset", "--all"), (POSTGRES_SH, "reset")):
            try:
                await self.run(*command)
            except InfraError as exc:  # shown, so that a leftover process is noticed
                print(f"private infra teardown: {exc}", file=sys.stderr)
        shutil.rmtree(self.root, ignore_errors=True)
