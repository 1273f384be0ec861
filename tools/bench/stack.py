"""The services under test, started as separate processes on a database and topics of their own."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import asyncpg

from wallet_platform import kafka_admin, topics
from wallet_platform.schema import migrate


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Proc:
    name: str
    port: int
    env: dict[str, str]
    log: Path
    popen: subprocess.Popen[bytes] | None = None
    ops_port: int | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ops_url(self) -> str:
        """Where /health, /ready and /metrics are: the operational port, or the only port."""
        return f"http://127.0.0.1:{self.ops_port or self.port}"

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", self.name.split("#")[0]],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def stop(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(30)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)


@dataclass
class BenchStack:
    pg_admin_dsn: str
    kafka: str
    workdir: Path
    quadcode_public_key: Path
    writers: int = 1
    edges: int = 1
    extra_env: dict[str, str] = field(default_factory=dict)
    downstream: bool = False
    """Also run the reference accounting consumer and the reconciler (``--with-downstream``)."""
    database: str = field(default_factory=lambda: "bench_" + uuid.uuid4().hex[:8])
    prefix: str = field(default_factory=lambda: f"b{uuid.uuid4().hex[:8]}.")
    procs: list[Proc] = field(default_factory=list)
    edge_port: int = 0

    @property
    def dsn(self) -> str:
        return self.pg_admin_dsn.rsplit("/", 1)[0] + "/" + self.database

    def _env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("WALLET_")}
        env.update(
            WALLET_PG_DSN=self.dsn,
            WALLET_KAFKA_BOOTSTRAP=self.kafka,
            WALLET_TOPIC_PREFIX=self.prefix,
            WALLET_QUADCODE_PUBLIC_KEY_FILES=str(self.quadcode_public_key),
            WALLET_ENVIRONMENT="sandbox",
            WALLET_LOG_LEVEL="WARNING",
        )
        env.update(self.extra_env)
        env.update(extra)
        return env

    async def create(self) -> None:
        admin = await asyncpg.connect(self.pg_admin_dsn)
        try:
            await admin.execute(f'CREATE DATABASE "{self.database}"')
        finally:
            await admin.close()
        conn = await asyncpg.connect(self.dsn)
        try:
            await migrate(conn)
        finally:
            await conn.close()
        await kafka_admin.ensure_topics(self.kafka, topics.topics(self.prefix))

    async def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        for i in range(self.writers):
            port = free_port()
            self.procs.append(
                Proc(
                    f"ledger#{i}",
                    port,
                    self._env(WALLET_LEDGER_PORT=str(port)),
                    self.workdir / f"ledger-{i}.log",
                )
            )
        port, ops_port = free_port(), free_port()
        projection = Proc(
            "projection",
            port,
            self._env(WALLET_PROJECTION_PORT=str(port), WALLET_PROJECTION_OPS_PORT=str(ops_port)),
            self.workdir / "projection.log",
            ops_port=ops_port,
        )
        self.procs.append(projection)
        self.edge_port = free_port()
        for i in range(self.edges):
            # The edges share the public port; each has an operational port of its own.
            ops_port = free_port()
            self.procs.append(
                Proc(
                    f"edge#{i}",
                    self.edge_port,
                    self._env(
                        WALLET_EDGE_PORT=str(self.edge_port),
                        WALLET_EDGE_OPS_PORT=str(ops_port),
                        WALLET_EDGE_REPLY_PARTITION=str(i),
                        WALLET_EDGE_REUSE_PORT="true",
                        WALLET_PROJECTION_URL=projection.url,
                        WALLET_PROJECTION_OPS_URL=projection.ops_url,
                    ),
                    self.workdir / f"edge-{i}.log",
                    ops_port=ops_port,
                )
            )
        if self.downstream:
            # Same database and topics; each serves only its operational port.
            for name, setting in (
                ("accounting", "WALLET_ACCOUNTING_PORT"),
                ("reconciler", "WALLET_RECONCILER_PORT"),
            ):
                port = free_port()
                env = self._env(**{setting: str(port)})
                self.procs.append(Proc(name, port, env, self.workdir / f"{name}.log"))
        for proc in self.procs:
            proc.start()
        try:
            for proc in self.procs:
                await wait_ready(proc)
        except BaseException:
            # One that did not come up (a bad setting, a port taken): stop the others, which
            # would otherwise run on, unowned, and load every later measurement.
            self.stop()
            raise
        # Every writer must own partitions before the load starts (group rebalance settled).
        await asyncio.sleep(1.0 if self.writers == 1 else 4.0)

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()

    async def drop(self) -> None:
        await kafka_admin.delete_topics(self.kafka, [t.name for t in topics.topics(self.prefix)])
        await drop_database(self.pg_admin_dsn, self.database)

    def by_kind(self, kind: str) -> list[Proc]:
        return [p for p in self.procs if p.name.split("#")[0] == kind]


async def drop_database(admin_dsn: str, name: str) -> None:
    """Drop a database, waiting out an autovacuum worker on it (the wallet role may not end it)."""
    admin = await asyncpg.connect(admin_dsn)
    try:
        for attempt in range(20):
            try:
                await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                return
            except asyncpg.InsufficientPrivilegeError:
                if attempt == 19:
                    raise
                await asyncio.sleep(0.5)
    finally:
        await admin.close()


async def wait_ready(proc: Proc, within: float = 60) -> None:
    deadline = time.monotonic() + within
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if proc.popen is not None and proc.popen.poll() is not None:
                raise RuntimeError(f"{proc.name} exited: {proc.log.read_text()[-2000:]}")
            try:
                async with session.get(proc.ops_url + "/ready") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    raise TimeoutError(f"{proc.name} not ready: {proc.log.read_text()[-2000:]}")
