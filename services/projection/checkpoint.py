"""The read model's checkpoint in Postgres: rows and the offsets that produced them, together.

Reads are answered from memory; Postgres only keeps a place to restart from. So the checkpoint
has a connection of its own, written by a task of its own: when Postgres restarts or the
connection dies, the follower keeps applying facts and reads keep being answered, the writer
reconnects with backoff, the projection reports not ready meanwhile, and the next checkpoint
carries everything that changed since the last one that was stored.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

import asyncpg
import structlog
from prometheus_client import Counter

from projection.model import BalanceRow, ReadModel
from wallet_platform.backoff import Backoff

log = structlog.get_logger()

CHECKPOINT_FAILURES = Counter(
    "projection_checkpoint_failures_total",
    "Checkpoints of the read model that could not be written (retried with the next one)",
)
CHECKPOINT_RECONNECTS = Counter(
    "projection_checkpoint_reconnects_total",
    "Times the checkpoint connection to Postgres was opened again after it was lost",
)

# Postgres names the connection so an operator (or a test) can find it in pg_stat_activity.
APPLICATION_NAME = "projection-checkpoint"


@dataclass(slots=True)
class Checkpoint:
    """What changed in the read model since the last stored checkpoint, copied at one instant
    (the model goes on changing while it is written)."""

    balances: list[tuple[str, str, str, int, int, int, int]] = field(default_factory=list)
    customers: list[tuple[str, bool]] = field(default_factory=list)
    offsets: dict[int, int] = field(default_factory=dict)  # partition -> next offset

    def __bool__(self) -> bool:
        return bool(self.offsets)


async def load_checkpoint(conn: asyncpg.Connection) -> tuple[ReadModel, dict[int, int]]:
    """The stored read model and the offsets it reflects, read in one snapshot."""
    model = ReadModel()
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        for r in await conn.fetch("SELECT customer_id, blocked FROM customer_view"):
            model.customers[r["customer_id"]] = r["blocked"]
        for r in await conn.fetch(
            """SELECT customer_id, balance_id, currency, amount, seq, reserved, hold_seq
                 FROM balance_view"""
        ):
            model.balances[(r["customer_id"], r["balance_id"])] = BalanceRow(
                r["currency"], int(r["amount"]), r["seq"], int(r["reserved"]), r["hold_seq"]
            )
        rows = await conn.fetch("SELECT partition, next_offset FROM projection_offsets")
    return model, {r["partition"]: r["next_offset"] for r in rows}


async def write_checkpoint(conn: asyncpg.Connection, checkpoint: Checkpoint) -> None:
    """Store the changed rows and the offsets that produced them, in one transaction."""
    at = datetime.now(tz=UTC)
    b_rows, c_rows = checkpoint.balances, checkpoint.customers
    async with conn.transaction():
        await conn.execute(
            """INSERT INTO balance_view
                      (customer_id, balance_id, currency, amount, seq, reserved, hold_seq,
                       updated_at)
               SELECT x.c, x.b, x.cur, x.amt, x.seq, x.res, x.hseq, $8
                 FROM unnest($1::text[], $2::text[], $3::text[], $4::numeric[], $5::bigint[],
                             $6::numeric[], $7::bigint[])
                      AS x(c, b, cur, amt, seq, res, hseq)
               ON CONFLICT (customer_id, balance_id) DO UPDATE
                  SET amount = excluded.amount, seq = excluded.seq,
                      reserved = excluded.reserved, hold_seq = excluded.hold_seq,
                      updated_at = excluded.updated_at
                WHERE balance_view.seq < excluded.seq
                   OR balance_view.hold_seq < excluded.hold_seq""",
            [r[0] for r in b_rows],
            [r[1] for r in b_rows],
            [r[2] for r in b_rows],
            [r[3] for r in b_rows],
            [r[4] for r in b_rows],
            [r[5] for r in b_rows],
            [r[6] for r in b_rows],
            at,
        )
        await conn.execute(
            """INSERT INTO customer_view (customer_id, blocked, updated_at)
               SELECT x.c, x.b, $3 FROM unnest($1::text[], $2::boolean[]) AS x(c, b)
               ON CONFLICT (customer_id) DO UPDATE
                  SET blocked = excluded.blocked, updated_at = excluded.updated_at""",
            [r[0] for r in c_rows],
            [r[1] for r in c_rows],
            at,
        )
        await conn.execute(
            """INSERT INTO projection_offsets (partition, next_offset)
               SELECT * FROM unnest($1::int[], $2::bigint[])
               ON CONFLICT (partition) DO UPDATE SET next_offset = excluded.next_offset""",
            list(checkpoint.offsets),
            list(checkpoint.offsets.values()),
        )


# The read model is rebuildable from ledger.events and its offsets are stored with its rows, so its
# commits need not wait for the WAL flush: a crash loses at most the last moments, which are
# replayed. That also keeps the projection's fsyncs off the ledger writer's critical path. The
# application name lets an operator (or a test) find the connection in pg_stat_activity.
SERVER_SETTINGS = {"synchronous_commit": "off", "application_name": APPLICATION_NAME}
# Bounds a write to a server that stopped answering without closing the connection.
COMMAND_TIMEOUT = 10.0


async def connect(dsn: str) -> asyncpg.Connection:
    """Open the checkpoint connection (one attempt; :class:`CheckpointWriter` retries)."""
    return await asyncpg.connect(
        dsn, timeout=5.0, command_timeout=COMMAND_TIMEOUT, server_settings=SERVER_SETTINGS
    )


class CheckpointSource(Protocol):
    """What the checkpoint writer needs from the follower."""

    def take_checkpoint(self) -> Checkpoint:
        """What changed since the last checkpoint taken (and forget it)."""
        ...

    def restore(self, checkpoint: Checkpoint) -> None:
        """A taken checkpoint was not stored: carry its changes into the next one."""
        ...


class CheckpointWriter:
    """Writes the follower's checkpoints every ``interval`` seconds on its own connection, and
    reconnects with backoff when Postgres goes away; the follower never waits for it."""

    def __init__(
        self,
        source: CheckpointSource,
        open_connection: Callable[[], Awaitable[asyncpg.Connection]],
        *,
        interval: float,
        backoff: Backoff,
        conn: asyncpg.Connection | None = None,
        store: Callable[[asyncpg.Connection, Checkpoint], Awaitable[None]] = write_checkpoint,
    ) -> None:
        self.source = source
        self.open_connection = open_connection
        self.store = store
        self.interval = interval
        self.backoff = backoff
        self.conn = conn
        self.written = 0  # checkpoints stored

    @property
    def connected(self) -> bool:
        """Whether the checkpoint connection is open (asyncpg notices a closed socket at once,
        so a Postgres restart shows here without a round trip)."""
        return self.conn is not None and not self.conn.is_closed()

    async def readiness(self) -> dict[str, bool]:
        """Readiness check: the checkpoint connection is up."""
        return {"postgres": self.connected}

    async def run(self, stop: asyncio.Event) -> None:
        """Until ``stop``: keep the connection open and write a checkpoint every interval."""
        while not stop.is_set():
            if not self.connected:
                await self._drop()
                try:
                    self.conn = await self.open_connection()
                except Exception as exc:  # refused, starting up, timed out: all pass
                    await self._pause(stop, "checkpoint_connect_failed", exc)
                    continue
                CHECKPOINT_RECONNECTS.inc()
                self.backoff.reset()
                log.info("checkpoint_reconnected")
            if await _stopped_within(stop, self.interval):
                return
            try:
                await self.write()
            except Exception as exc:  # anything: the next attempt carries the same changes
                await self._drop()
                await self._pause(stop, "checkpoint_failed", exc)

    async def write(self) -> None:
        """Store what changed since the last stored checkpoint; on failure it is kept for the
        next attempt and the error is raised."""
        checkpoint = self.source.take_checkpoint()
        if not checkpoint:
            return
        if not self.connected:
            self.source.restore(checkpoint)
            raise ConnectionError("the checkpoint connection is closed")
        assert self.conn is not None
        try:
            await self.store(self.conn, checkpoint)
        except BaseException:
            CHECKPOINT_FAILURES.inc()
            self.source.restore(checkpoint)
            raise
        self.written += 1

    async def close(self) -> None:
        """A last checkpoint if Postgres is there (otherwise the next start replays the facts
        since the last stored one), then close the connection."""
        try:
            await asyncio.wait_for(self.write(), 5.0)
        except Exception as exc:
            log.warning("final_checkpoint_failed", error=repr(exc))
        await self._drop()

    async def _pause(self, stop: asyncio.Event, event: str, exc: BaseException) -> None:
        delay = self.backoff.next()
        log.warning(event, error=repr(exc), retry_in_s=delay)
        await _stopped_within(stop, delay)

    async def _drop(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None and not conn.is_closed():
            conn.terminate()  # no goodbye to a server that may not answer


async def _stopped_within(stop: asyncio.Event, seconds: float) -> bool:
    """Wait up to ``seconds``; True if ``stop`` was set meanwhile."""
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        return False
    return True
