"""The operator audit log: one record per request under ``/v1/``, each hash chained to the one
before it, so a record changed, removed or inserted afterwards is found by :func:`verify_chain`.

``hash(n) = SHA-256(hash(n-1) || canonical(record n))``, with ``hash(0)`` 32 zero bytes. The
canonical encoding is JSON with sorted keys and no whitespace of: ``seq``, ``at`` (UTC,
microseconds, ISO 8601), ``api_id``, ``method``, ``route``, ``path``, ``body_sha256`` (hex),
``status``, ``outcome``, ``detail`` (what a key change changed; never a secret) and
``prev_hash`` (hex). ``detail`` holds only strings, integers, booleans, lists and objects, so
it reads back from ``jsonb`` to the same encoding.

Appends lock the one row of ``operator_audit_head`` in their transaction: concurrent requests
and several replicas append one after another, so the chain never forks and ``seq`` has no gaps.
The table is append-only (triggers); only someone who drops them can alter it, and the chain
shows where.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import asyncpg
import orjson

GENESIS_HASH: Final = bytes(32)
PAGE: Final = 1000


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """What one request did: who (``api_id``; None when no key was identified), when, which
    route, a digest of the body, the status and outcome code, and the detail of a change."""

    at: datetime
    api_id: uuid.UUID | None
    method: str
    route: str
    path: str
    body_sha256: bytes
    status: int
    outcome: str
    detail: Mapping[str, Any] = field(default_factory=dict)


def canonical(seq: int, record: AuditRecord, prev_hash: bytes) -> bytes:
    """The bytes a record's hash covers (see the module docstring)."""
    at = record.at.astimezone(UTC)
    return orjson.dumps(
        {
            "seq": seq,
            "at": at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "api_id": None if record.api_id is None else str(record.api_id),
            "method": record.method,
            "route": record.route,
            "path": record.path,
            "body_sha256": record.body_sha256.hex(),
            "status": record.status,
            "outcome": record.outcome,
            "detail": record.detail,
            "prev_hash": prev_hash.hex(),
        },
        option=orjson.OPT_SORT_KEYS,
    )


def chain_hash(seq: int, record: AuditRecord, prev_hash: bytes) -> bytes:
    """The hash of record ``seq`` following a record whose hash is ``prev_hash``."""
    return hashlib.sha256(prev_hash + canonical(seq, record, prev_hash)).digest()


def now() -> datetime:
    """The time a record carries, at the microsecond precision Postgres keeps."""
    return datetime.now(UTC)


async def append(conn: asyncpg.Connection, record: AuditRecord) -> int:
    """Append ``record`` after the chain's head, in one transaction; returns its ``seq``."""
    async with conn.transaction():
        head = await conn.fetchrow(
            "SELECT seq, hash FROM operator_audit_head WHERE only_row FOR UPDATE"
        )
        assert head is not None, "migration 0006 creates the head row"
        seq = int(head["seq"]) + 1
        prev_hash = bytes(head["hash"])
        digest = chain_hash(seq, record, prev_hash)
        await conn.execute(
            """INSERT INTO operator_audit (seq, at, api_id, method, route, path, body_sha256,
                   status, outcome, detail, prev_hash, hash)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::jsonb, $11, $12)""",
            seq,
            record.at,
            record.api_id,
            record.method,
            record.route,
            record.path,
            record.body_sha256,
            record.status,
            record.outcome,
            orjson.dumps(record.detail).decode("utf-8"),
            prev_hash,
            digest,
        )
        await conn.execute(
            "UPDATE operator_audit_head SET seq = $1, hash = $2 WHERE only_row", seq, digest
        )
    return seq


@dataclass(frozen=True, slots=True)
class ChainReport:
    """What :func:`verify_chain` found: how many records it checked and the first broken one."""

    checked: int
    broken_seq: int | None = None
    reason: str = ""

    @property
    def intact(self) -> bool:
        return self.broken_seq is None


def _record(row: asyncpg.Record) -> AuditRecord:
    return AuditRecord(
        at=row["at"],
        api_id=row["api_id"],
        method=row["method"],
        route=row["route"],
        path=row["path"],
        body_sha256=bytes(row["body_sha256"]),
        status=int(row["status"]),
        outcome=row["outcome"],
        detail=orjson.loads(row["detail"]),
    )


async def verify_chain(conn: asyncpg.Connection) -> ChainReport:
    """Walk the chain from the first record and report the first that does not follow from the
    one before it (altered, inserted, or after a gap), or that the head does not match."""
    expected_seq, prev_hash, checked = 1, GENESIS_HASH, 0
    while True:
        rows = await conn.fetch(
            """SELECT seq, at, api_id, method, route, path, body_sha256, status, outcome,
                      detail::text AS detail, prev_hash, hash
               FROM operator_audit WHERE seq >= $1 ORDER BY seq LIMIT $2""",
            expected_seq,
            PAGE,
        )
        for row in rows:
            seq = int(row["seq"])
            if seq != expected_seq:
                return ChainReport(checked, expected_seq, f"record {expected_seq} is missing")
            if bytes(row["prev_hash"]) != prev_hash:
                return ChainReport(checked, seq, "prev_hash is not the previous record's hash")
            if chain_hash(seq, _record(row), prev_hash) != bytes(row["hash"]):
                return ChainReport(checked, seq, "the record does not match its hash")
            prev_hash, expected_seq, checked = bytes(row["hash"]), seq + 1, checked + 1
        if len(rows) < PAGE:
            break
    head = await conn.fetchrow("SELECT seq, hash FROM operator_audit_head WHERE only_row")
    if head is None or int(head["seq"]) != expected_seq - 1 or bytes(head["hash"]) != prev_hash:
        # Records cut from the end leave the head pointing past the last one.
        return ChainReport(checked, expected_seq, "the head does not match the last record")
    return ChainReport(checked)


async def append_to(pool: asyncpg.Pool, record: AuditRecord) -> int:
    """:func:`append` on a connection of ``pool``."""
    async with pool.acquire() as conn:
        return await append(conn, record)
