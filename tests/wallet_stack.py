"""Test support: the local Postgres and Kafka, per-test databases and topics, and the three
services started as real processes."""

from __future__ import annotations

import asyncio
import ctypes
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import aiohttp
import asyncpg
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from bench.stack import drop_database as drop_database_as
from bench.stack import free_port
from wallet_platform import kafka_admin, topics
from wallet_platform.schema import migrate

REPO = Path(__file__).resolve().parents[1]
PG_ADMIN_DSN = os.environ.get("WALLET_TEST_PG_DSN", "postgresql://wallet@127.0.0.1:25432/wallet")
KAFKA = os.environ.get("WALLET_TEST_KAFKA", "127.0.0.1:29092")
# The producer the services (and the command bus under test) send with: the suite runs with
# aiokafka; WALLET_TEST_KAFKA_PRODUCER=librdkafka runs it again with the other one.
KAFKA_PRODUCER: Literal["aiokafka", "librdkafka"] = (
    "librdkafka" if os.environ.get("WALLET_TEST_KAFKA_PRODUCER") == "librdkafka" else "aiokafka"
)


def ensure_infrastructure() -> None:
    """Start (or reuse) the project's local Postgres and Kafka; both scripts are idempotent."""
    for script in ("postgres.sh", "kafka.sh"):
        subprocess.run(
            ["bash", str(REPO / "deploy" / "local" / script), "start"],
            check=True,
            timeout=300,
            stdout=subprocess.DEVNULL,
        )


def die_with_parent() -> None:
    """In the child: get SIGTERM when the test process dies, so no service outlives a run that
    was killed before its fixtures could clean up (Linux prctl PR_SET_PDEATHSIG)."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGTERM, 0, 0, 0)


def dsn_for(database: str, admin_dsn: str = PG_ADMIN_DSN) -> str:
    return admin_dsn.rsplit("/", 1)[0] + "/" + database


async def create_template(name: str, admin_dsn: str = PG_ADMIN_DSN) -> None:
    """A migrated database that per-test databases are copied from (fast: a file copy)."""
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    conn = await asyncpg.connect(dsn_for(name, admin_dsn))
    try:
        await migrate(conn)
    finally:
        await conn.close()


async def create_database(template: str, admin_dsn: str = PG_ADMIN_DSN) -> str:
    name = "t_" + uuid.uuid4().hex[:12]
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    finally:
        await admin.close()
    return name


async def drop_database(name: str, admin_dsn: str = PG_ADMIN_DSN) -> None:
    await drop_database_as(admin_dsn, name)


async def create_topics(prefix: str, bootstrap: str = KAFKA) -> None:
    await kafka_admin.ensure_topics(bootstrap, topics.topics(prefix))


async def delete_topics(prefix: str, bootstrap: str = KAFKA) -> None:
    await kafka_admin.delete_topics(bootstrap, [t.name for t in topics.topics(prefix)])


@dataclass
class QuadcodeKey:
    """A key pair playing Quadcode's: tests sign callback tokens with it."""

    private_pem: bytes
    public_pem: bytes

    @classmethod
    def generate(cls) -> QuadcodeKey:
        key = ec.generate_private_key(ec.SECP256R1())
        return cls(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
            key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
        )

    def token(
        self,
        *,
        iss: str = "qc",
        aud: str = "sandbox",
        lifetime: int = 600,
        iat: float | None = None,
        **extra: object,
    ) -> str:
        now = int(time.time() if iat is None else iat)
        claims: dict[str, object] = {"iss": iss, "aud": aud, "iat": now, "exp": now + lifetime}
        claims.update(extra)
        return jwt.encode(claims, self.private_pem, algorithm="ES256")


@dataclass
class Service:
    name: str
    port: int
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    ops_port: int | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ops_url(self) -> str:
        """Where /health, /ready and /metrics are: the operational port, or the only port."""
        return f"http://127.0.0.1:{self.ops_port or self.port}"

    def start(self) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child process
        self.proc = subprocess.Popen(
            [sys.executable, "-m", self.name],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        log.close()

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 30) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


OPS_PORT_SETTINGS = {
    "edge": "WALLET_EDGE_OPS_PORT",
    "projection": "WALLET_PROJECTION_OPS_PORT",
    "operator_api": "WALLET_OPERATOR_API_OPS_PORT",
}
"""The services whose operational routes have a port of their own (the ledger has only those)."""


@dataclass
class Stack:
    """Edge, ledger and projection as processes, on their own database and topic namespace (of
    the shared Postgres and Kafka, unless ``admin_dsn`` and ``kafka`` name others)."""

    database: str
    prefix: str
    workdir: Path
    key: QuadcodeKey
    extra_env: dict[str, str] = field(default_factory=dict)
    services: dict[str, Service] = field(default_factory=dict)
    admin_dsn: str = PG_ADMIN_DSN
    kafka: str = KAFKA

    @property
    def dsn(self) -> str:
        return dsn_for(self.database, self.admin_dsn)

    def env(self) -> dict[str, str]:
        key_file = self.workdir / "quadcode-public.pem"
        key_file.write_bytes(self.key.public_pem)
        env = {k: v for k, v in os.environ.items() if not k.startswith("WALLET_")}
        env.update(
            WALLET_PG_DSN=self.dsn,
            WALLET_KAFKA_BOOTSTRAP=self.kafka,
            WALLET_TOPIC_PREFIX=self.prefix,
            WALLET_QUADCODE_PUBLIC_KEY_FILES=str(key_file),
            WALLET_ENVIRONMENT="sandbox",
            WALLET_LOG_LEVEL="INFO",
            WALLET_KAFKA_PRODUCER=KAFKA_PRODUCER,
        )
        env.update(self.extra_env)
        return env

    def add(self, name: str, port_setting: str, **env: str) -> Service:
        port = free_port()
        full = self.env() | {port_setting: str(port)}
        ops_port = None
        if name in OPS_PORT_SETTINGS:  # its /health, /ready, /metrics on a port of their own
            ops_port = free_port()
            full[OPS_PORT_SETTINGS[name]] = str(ops_port)
        if name == "edge" and "projection" in self.services:
            full["WALLET_PROJECTION_URL"] = self.projection.url
            full["WALLET_PROJECTION_OPS_URL"] = self.projection.ops_url
        full |= env
        service = Service(name, port, full, self.workdir / f"{name}-{port}.log", ops_port=ops_port)
        self.services[f"{name}-{port}" if name in self.services else name] = service
        return service

    def launch(self) -> list[Service]:
        """Start the ledger, the projection and the edge as processes; do not wait for them."""
        ledger = self.add("ledger", "WALLET_LEDGER_PORT")
        projection = self.add("projection", "WALLET_PROJECTION_PORT")
        edge = self.add("edge", "WALLET_EDGE_PORT", WALLET_PROJECTION_URL=projection.url)
        for service in (ledger, projection, edge):
            service.start()
        return [ledger, projection, edge]

    async def start(self) -> None:
        for service in self.launch():
            await wait_ready(service)

    def run_tool(self, *args: str, timeout: float = 180) -> tuple[int, str]:
        """A ``python -m ...`` command line against this stack's database and topics, as an
        operator runs it: its exit status and its output (stdout, then stderr)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("WALLET_")}
        env |= {
            "WALLET_PG_DSN": self.dsn,
            "WALLET_KAFKA_BOOTSTRAP": self.kafka,
            "WALLET_TOPIC_PREFIX": self.prefix,
        }
        done = subprocess.run(
            [sys.executable, "-m", *args],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        return done.returncode, done.stdout + done.stderr

    def stop(self) -> None:
        for service in reversed(list(self.services.values())):
            service.stop()

    @property
    def edge(self) -> Service:
        return self.services["edge"]

    @property
    def ledger(self) -> Service:
        return self.services["ledger"]

    @property
    def projection(self) -> Service:
        return self.services["projection"]


async def wait_ready(service: Service, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if service.proc is not None and service.proc.poll() is not None:
                raise RuntimeError(
                    f"{service.name} exited with {service.proc.returncode}: "
                    + service.log_path.read_text()[-3000:]
                )
            try:
                async with session.get(service.ops_url + "/ready") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    raise TimeoutError(
        f"{service.name} not ready after {timeout}s: {service.log_path.read_text()[-3000:]}"
    )
