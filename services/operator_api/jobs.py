"""Long-running operator jobs: a projection rebuild, a replay into a fresh ledger, a republish of
facts (``docs/operator-jobs.md``).

``POST /v1/jobs`` ``{type, params}`` answers ``202 {jobId, ...}`` at once; the job runs in this
process (an asyncio task) and its row in ``operator_jobs`` says how far it is: ``GET
/v1/jobs/{jobId}`` shows its status (queued, running, succeeded, failed, cancelled), progress
(done of total, rate), result and timestamps; ``POST /v1/jobs/{jobId}/cancel`` stops it. One job
of each type at a time, across processes (a unique index; a second is a 409). Each job calls the
existing tool's own function, at a rate of its own setting (:mod:`operator_api.job_settings`):
``projection.rebuild.rebuild_read_model``, ``ledger.replay.Replay``, ``ledger.republish``.

The runner writes a job's progress to its row every :data:`HEARTBEAT_S` (a heartbeat). A row
that stays ``queued`` or ``running`` without a heartbeat for :data:`STALE_S` belongs to a
process that died: any operator API process marks it ``failed`` (interrupted) when it starts and
on every sweep, which frees its type for a new job.

Roles: starting and cancelling need an ``operator`` key; reading a ``read_only`` one.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

import asyncpg
import orjson
import structlog
from aiohttp import web
from prometheus_client import Counter

from ledger_core.requests import RequestError
from operator_api.auth import API_KEY, AUDIT_DETAIL
from operator_api.job_settings import OperatorJobSettings
from operator_api.ledger_views import rfc3339
from wallet_platform import topics
from wallet_platform.http import json_error
from wallet_platform.postgres import UNAVAILABLE as DATABASE_AWAY

log = structlog.get_logger(__name__)

PROJECTION_REBUILD: Final = "projection_rebuild"
REPLAY: Final = "replay"
REPUBLISH: Final = "republish"
JOB_TYPES: Final = (PROJECTION_REBUILD, REPLAY, REPUBLISH)
ACTIVE: Final = ("queued", "running")
HEARTBEAT_S: Final = 1.0
STALE_S: Final = 10.0
SWEEP_S: Final = 5.0
DEFAULT_LIST: Final = 20
MAX_LIST: Final = 100
KEPT_DIFFERENCES: Final = 20
JOB_BODY: Final = 'The body must be a JSON object {"type": ..., "params": {...}}.'

JOBS = Counter(
    "operator_jobs_total", "Operator jobs finished, by type and status", ["type", "status"]
)


class JobActive(Exception):
    """A job of this type is queued or running already."""


# -- the pure part: requests, parameters, views ----------------------------------------------


@dataclass(frozen=True, slots=True)
class JobRequest:
    """A job to start: its type and its checked parameters (as stored and shown)."""

    type: str
    params: dict[str, Any]


def _strict_int(value: object, name: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise RequestError("invalid_field", f"{name} must be an integer of at least {low}")
    return value


def _database_name(value: object) -> str:
    """A plain Postgres database name (letters, digits, underscore; 1 to 63)."""
    if (
        not isinstance(value, str)
        or not 1 <= len(value) <= 63
        or not all(c.isascii() and (c.isalnum() or c == "_") for c in value)
    ):
        raise RequestError(
            "invalid_field", "intoDatabase must be 1 to 63 ASCII letters, digits or underscores"
        )
    return value


def _republish_params(params: dict[str, Any]) -> dict[str, Any]:
    allowed = {"partitions", "fromSeq", "toSeq", "since"}
    unexpected = sorted(set(params) - allowed)
    if unexpected:
        raise RequestError("invalid_field", f"unexpected params: {', '.join(unexpected)}")
    partitions = params.get("partitions")
    if partitions is not None:
        if not isinstance(partitions, list) or not partitions or len(partitions) > 1024:
            raise RequestError("invalid_field", "partitions must be a list of 1 to 1024 integers")
        partitions = sorted({_strict_int(p, "partitions[]", 0) for p in partitions})
    if ("fromSeq" in params) == ("since" in params):
        raise RequestError("invalid_field", "give exactly one of fromSeq and since")
    if "fromSeq" in params:
        if partitions is None:
            raise RequestError("invalid_field", "fromSeq needs partitions")
        out: dict[str, Any] = {
            "partitions": partitions,
            "fromSeq": _strict_int(params["fromSeq"], "fromSeq", 1),
        }
        if params.get("toSeq") is not None:
            out["toSeq"] = _strict_int(params["toSeq"], "toSeq", out["fromSeq"])
        return out
    if "toSeq" in params:
        raise RequestError("invalid_field", "toSeq goes with fromSeq")
    since = params["since"]
    try:
        at = datetime.fromisoformat(since) if isinstance(since, str) else None
    except ValueError:
        at = None
    if at is None or at.tzinfo is None:
        raise RequestError("invalid_field", "since must be an RFC 3339 time with a zone")
    return {"since": at.isoformat(), "partitions": partitions}


def parse_job_request(body: bytes) -> JobRequest:
    """``{type, params}``; ``malformed_json`` or ``invalid_field`` when wrong."""
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise RequestError("malformed_json", JOB_BODY) from None
    if not isinstance(obj, dict):
        raise RequestError("malformed_json", JOB_BODY)
    unexpected = sorted(set(obj) - {"type", "params"})
    if unexpected:
        raise RequestError("invalid_field", f"unexpected fields: {', '.join(unexpected)}")
    kind = obj.get("type")
    if kind not in JOB_TYPES:
        raise RequestError("invalid_field", f"type must be one of {', '.join(JOB_TYPES)}")
    params = obj.get("params", {})
    if not isinstance(params, dict):
        raise RequestError("invalid_field", "params must be an object")
    if kind == PROJECTION_REBUILD:
        if params:
            raise RequestError("invalid_field", "a projection_rebuild takes no params")
        return JobRequest(kind, {})
    if kind == REPLAY:
        unexpected = sorted(set(params) - {"intoDatabase"})
        if unexpected:
            raise RequestError("invalid_field", f"unexpected params: {', '.join(unexpected)}")
        return JobRequest(kind, {"intoDatabase": _database_name(params.get("intoDatabase"))})
    return JobRequest(kind, _republish_params(params))


def replay_dsn(live_dsn: str, database: str) -> str:
    """The fresh database's DSN: the live ledger's server and credentials, another database.
    A replay job never takes a DSN from a request (no other server, no password in a body)."""
    parts = urllib.parse.urlsplit(live_dsn)
    if parts.scheme not in ("postgresql", "postgres"):
        raise RequestError("invalid_field", "replay jobs need WALLET_PG_DSN as a postgresql:// URL")
    if parts.path.lstrip("/") == database:
        raise RequestError("invalid_field", "intoDatabase is the live ledger's database")
    return urllib.parse.urlunsplit(parts._replace(path="/" + database))


@dataclass(slots=True)
class JobProgress:
    """The latest progress a job reported (the runner stores it with each heartbeat)."""

    done: int = 0
    total: int = 0
    line: str = ""
    rate: float = 0.0

    def report(self, done: int, total: int, line: str, rate: float = 0.0) -> None:
        """Called by the job's work as it goes (cheap: the heartbeat stores it)."""
        self.done, self.total, self.line, self.rate = done, total, line, rate

    def view(self) -> dict[str, Any]:
        return {
            "done": self.done,
            "total": self.total,
            "rate": round(self.rate, 1),
            "line": self.line,
        }


Report = Callable[[int, int, str, float], None]
Work = Callable[[dict[str, Any], Report], Awaitable[dict[str, Any]]]


@dataclass(frozen=True, slots=True)
class JobRow:
    """A row of ``operator_jobs``."""

    job_id: uuid.UUID
    type: str
    status: str
    params: dict[str, Any]
    progress: dict[str, Any]
    result: dict[str, Any] | None
    error: str | None
    api_id: uuid.UUID
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime


def job_view(row: JobRow) -> dict[str, Any]:
    """A job as the API shows it."""

    def at(value: datetime | None) -> str | None:
        return None if value is None else rfc3339(value)

    return {
        "jobId": str(row.job_id),
        "type": row.type,
        "status": row.status,
        "params": row.params,
        # Before its first heartbeat a job has reported nothing: shown as nothing done.
        "progress": row.progress or JobProgress().view(),
        "result": row.result,
        "error": row.error,
        "createdBy": str(row.api_id),
        "createdAt": at(row.created_at),
        "startedAt": at(row.started_at),
        "finishedAt": at(row.finished_at),
        "updatedAt": at(row.updated_at),
    }


# -- the store --------------------------------------------------------------------------------

_COLUMNS = """job_id, type, status, params, progress, result, error, api_id, created_at,
              started_at, finished_at, updated_at"""


def _row(r: asyncpg.Record) -> JobRow:
    return JobRow(
        r["job_id"],
        r["type"],
        r["status"],
        orjson.loads(r["params"]),
        orjson.loads(r["progress"]),
        None if r["result"] is None else orjson.loads(r["result"]),
        r["error"],
        r["api_id"],
        r["created_at"],
        r["started_at"],
        r["finished_at"],
        r["updated_at"],
    )


def _json_text(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


class JobStore:
    """The ``operator_jobs`` table."""

    def __init__(self, pool: asyncpg.Pool, runner: str) -> None:
        self.pool = pool
        self.runner = runner

    async def create(self, request: JobRequest, api_id: uuid.UUID) -> JobRow:
        """A queued job; :class:`JobActive` when one of its type is queued or running."""
        try:
            row = await self.pool.fetchrow(
                f"""INSERT INTO operator_jobs (job_id, type, status, params, api_id, runner,
                                              created_at, updated_at)
                    VALUES ($1, $2, 'queued', $3::jsonb, $4, $5, now(), now())
                    RETURNING {_COLUMNS}""",
                uuid.uuid4(),
                request.type,
                _json_text(request.params),
                api_id,
                self.runner,
            )
        except asyncpg.UniqueViolationError:
            raise JobActive(request.type) from None
        assert row is not None
        return _row(row)

    async def get(self, job_id: uuid.UUID) -> JobRow | None:
        row = await self.pool.fetchrow(
            f"SELECT {_COLUMNS} FROM operator_jobs WHERE job_id = $1", job_id
        )
        return None if row is None else _row(row)

    async def recent(self, limit: int) -> list[JobRow]:
        rows = await self.pool.fetch(
            f"""SELECT {_COLUMNS} FROM operator_jobs
                 ORDER BY created_at DESC, job_id LIMIT $1""",
            limit,
        )
        return [_row(r) for r in rows]

    async def started(self, job_id: uuid.UUID) -> bool:
        status = await self.pool.fetchval(
            """UPDATE operator_jobs SET status = 'running', started_at = now(), updated_at = now()
                WHERE job_id = $1 AND status = 'queued' RETURNING status""",
            job_id,
        )
        return status is not None

    async def heartbeat(self, job_id: uuid.UUID, progress: dict[str, Any]) -> bool:
        """Store the progress; False when the job is no longer active (cancelled, or marked
        interrupted by another process)."""
        status = await self.pool.fetchval(
            """UPDATE operator_jobs SET progress = $2::jsonb, updated_at = now()
                WHERE job_id = $1 AND status IN ('queued', 'running') RETURNING status""",
            job_id,
            _json_text(progress),
        )
        return status is not None

    async def finish(
        self,
        job_id: uuid.UUID,
        status: str,
        progress: dict[str, Any],
        result: dict[str, Any] | None,
        error: str | None,
    ) -> None:
        """The job's end, unless it ended already (a cancel wins over a late success)."""
        await self.pool.execute(
            """UPDATE operator_jobs
                  SET status = $2, progress = $3::jsonb, result = $4::jsonb, error = $5,
                      finished_at = now(), updated_at = now()
                WHERE job_id = $1 AND status IN ('queued', 'running')""",
            job_id,
            status,
            _json_text(progress),
            _json_text(result),
            error,
        )

    async def cancel(self, job_id: uuid.UUID) -> JobRow | None:
        """Mark an active job cancelled; None when it is not active (or not there)."""
        row = await self.pool.fetchrow(
            f"""UPDATE operator_jobs
                   SET status = 'cancelled', error = 'cancelled by an operator',
                       finished_at = now(), updated_at = now()
                 WHERE job_id = $1 AND status IN ('queued', 'running')
                 RETURNING {_COLUMNS}""",
            job_id,
        )
        return None if row is None else _row(row)

    async def mark_interrupted(self, stale_s: float) -> list[uuid.UUID]:
        """Mark failed every active job of another process whose heartbeat stopped."""
        rows = await self.pool.fetch(
            """UPDATE operator_jobs
                  SET status = 'failed',
                      error = 'interrupted: the process running it stopped',
                      finished_at = now(), updated_at = now()
                WHERE status IN ('queued', 'running') AND runner <> $1
                  AND updated_at < now() - make_interval(secs => $2)
                RETURNING job_id""",
            self.runner,
            stale_s,
        )
        return [r["job_id"] for r in rows]


# -- the runner -------------------------------------------------------------------------------


@dataclass(slots=True)
class _Running:
    task: asyncio.Task[None]
    progress: JobProgress = field(default_factory=JobProgress)


class JobRunner:
    """Runs jobs as tasks of this process, one per type at a time, and keeps their rows."""

    def __init__(self, store: JobStore, work: dict[str, Work]) -> None:
        self.store = store
        self.work = work
        self.running: dict[uuid.UUID, _Running] = {}
        self.closing = False

    async def submit(self, request: JobRequest, api_id: uuid.UUID) -> JobRow:
        """Record the job and start it; :class:`JobActive` when its type is busy."""
        row = await self.store.create(request, api_id)
        progress = JobProgress()
        task = asyncio.create_task(self._run(row, progress), name=f"job-{row.job_id}")
        self.running[row.job_id] = _Running(task, progress)
        task.add_done_callback(lambda _: self.running.pop(row.job_id, None))
        return row

    async def cancel(self, job_id: uuid.UUID) -> JobRow | None:
        """Cancel an active job (here, or in another process, whose heartbeat then stops it)."""
        row = await self.store.cancel(job_id)
        found = self.running.get(job_id)
        if row is not None and found is not None:
            found.task.cancel()
        return row

    async def _run(self, row: JobRow, progress: JobProgress) -> None:
        job_id = row.job_id
        work = self.work[row.type]
        me = asyncio.current_task()
        assert me is not None
        beat = asyncio.create_task(self._heartbeat(job_id, progress, me))
        status, result, error = "failed", None, None
        try:
            await self.store.started(job_id)
            log.info("job_started", job_id=str(job_id), type=row.type, params=row.params)
            result = await work(row.params, progress.report)
            status = "succeeded"
        except asyncio.CancelledError:
            status = "failed" if self.closing else "cancelled"
            error = (
                "interrupted: the operator API stopped"
                if self.closing
                else "cancelled by an operator"
            )
        except Exception as exc:  # the job's own failure: recorded, the process goes on
            error = f"{type(exc).__name__}: {exc}"[:2000]
            log.warning("job_failed", job_id=str(job_id), type=row.type, error=error)
        finally:
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat
        try:
            await self.store.finish(job_id, status, progress.view(), result, error)
        except (*DATABASE_AWAY, asyncpg.PostgresError) as exc:
            # The row keeps its last heartbeat: the next sweep marks it interrupted.
            log.error("job_not_recorded", job_id=str(job_id), status=status, error=repr(exc))
        JOBS.labels(row.type, status).inc()
        log.info("job_finished", job_id=str(job_id), type=row.type, status=status)

    async def _heartbeat(
        self, job_id: uuid.UUID, progress: JobProgress, task: asyncio.Task[Any]
    ) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            try:
                active = await self.store.heartbeat(job_id, progress.view())
            except (*DATABASE_AWAY, asyncpg.PostgresError) as exc:
                log.warning("job_heartbeat_failed", job_id=str(job_id), error=repr(exc))
                continue
            if not active:  # cancelled (perhaps through another process)
                task.cancel()
                return

    async def sweep(self, stop: asyncio.Event) -> None:
        """Mark interrupted the jobs whose process died, now and every :data:`SWEEP_S`."""
        while not stop.is_set():
            try:
                for job_id in await self.store.mark_interrupted(STALE_S):
                    log.warning("job_interrupted", job_id=str(job_id))
            except (*DATABASE_AWAY, asyncpg.PostgresError) as exc:
                log.warning("job_sweep_failed", error=repr(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), SWEEP_S)

    async def close(self) -> None:
        """Stop every job of this process; each is recorded failed (interrupted)."""
        self.closing = True
        tasks = [r.task for r in self.running.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


# -- the work of each type --------------------------------------------------------------------


def rebuild_work(settings: OperatorJobSettings) -> Work:
    """A projection rebuild into memory, compared with the ledger; the live read model is not
    touched (see ``projection.rebuild``)."""

    async def work(params: dict[str, Any], report: Report) -> dict[str, Any]:
        from projection.rebuild import rebuild_read_model

        rebuilt = await rebuild_read_model(
            dsn=settings.pg_dsn,
            bootstrap=settings.kafka_bootstrap,
            topic=topics.topic_name(topics.EVENTS, settings.topic_prefix),
            rate=settings.operator_job_rebuild_rate,
            progress=lambda p: report(p.done, p.total, p.line(), p.rate),
        )
        comparison = rebuilt.comparison
        return {
            "facts": rebuilt.facts,
            "seconds": round(rebuilt.seconds, 3),
            "balances": len(rebuilt.model.balances),
            "customers": len(rebuilt.model.customers),
            "offsets": {str(p): o for p, o in sorted(rebuilt.offsets.items())},
            "liveReadModelTouched": False,
            "comparison": {
                "match": comparison.ok,
                "balancesCompared": comparison.balances,
                "differing": comparison.differing,
                "differences": [d.line() for d in comparison.differences[:KEPT_DIFFERENCES]],
            },
        }

    return work


def replay_work(settings: OperatorJobSettings) -> Work:
    """``ledger.replay`` into ``intoDatabase`` (same server; it must be empty), up to the live
    ledger's offsets of one snapshot, and both state hashes."""

    async def work(params: dict[str, Any], report: Report) -> dict[str, Any]:
        from ledger.replay import EXIT_MATCH, EXIT_MISMATCH, Replay, ReplayOptions, verdict
        from ledger.settings import LedgerSettings

        options = ReplayOptions(
            into_dsn=replay_dsn(settings.pg_dsn, params["intoDatabase"]),
            live_dsn=settings.pg_dsn,
            topic_prefix=settings.topic_prefix,
            until="live",
            max_rate=settings.operator_job_replay_rate,
            progress_seconds=3600.0,
        )
        ledger_settings = LedgerSettings(
            pg_dsn=settings.pg_dsn,
            kafka_bootstrap=settings.kafka_bootstrap,
            topic_prefix=settings.topic_prefix,
        )
        lines: list[str] = []

        def progress(done: int, total: int, seconds: float) -> None:
            rate = done / seconds if seconds > 0 else 0.0
            report(done, total, f"replayed {done}/{total} commands at {rate:,.0f}/s", rate)

        replay = Replay(options, ledger_settings, say=lines.append, progress=progress)
        run = await replay.run()  # ledger.replay.Refused fails the job with its reason
        code, closing = verdict(run, True)
        assert run.fresh is not None
        return {
            "match": code == EXIT_MATCH,
            "verdict": {EXIT_MATCH: "match", EXIT_MISMATCH: "mismatch"}.get(code, "not_compared"),
            "freshHash": run.fresh.digest,
            "liveHash": None if run.live is None else run.live.digest,
            "commands": run.commands,
            "seconds": round(run.seconds, 3),
            "rate": round(run.rate, 1),
            "offsets": {str(p): o for p, o in sorted(run.until.items())},
            "report": lines + closing,
        }

    return work


def republish_work(settings: OperatorJobSettings) -> Work:
    """``ledger.republish``: facts from a partition and sequence, or from a time, again."""

    async def work(params: dict[str, Any], report: Report) -> dict[str, Any]:
        from ledger.republish import Progress, range_from, ranges_since, republish
        from wallet_platform.kafka import make_producer

        pool = await asyncpg.create_pool(settings.pg_dsn, min_size=1, max_size=1)
        producer = make_producer(settings.kafka_bootstrap, "operator-api-republish", linger_ms=5)
        await producer.start()
        try:
            if "fromSeq" in params:
                ranges = [
                    await range_from(pool, p, params["fromSeq"], params.get("toSeq"))
                    for p in params["partitions"]
                ]
            else:
                since = datetime.fromisoformat(params["since"])
                ranges = await ranges_since(pool, since, params.get("partitions"))
            total = sum(r.size for r in ranges)
            done: dict[int, int] = {}

            def progress(p: Progress) -> None:
                done[p.partition] = p.sent
                sent = sum(done.values())
                rate = sent / p.elapsed if p.elapsed > 0 else 0.0
                report(sent, total, p.line(), rate)

            report(0, total, f"republishing {total} facts", 0.0)
            topic = topics.topic_name(topics.EVENTS, settings.topic_prefix)
            sent = await republish(
                pool,
                producer,
                topic,
                ranges,
                rate=settings.operator_job_republish_rate,
                progress=progress,
            )
        finally:
            await producer.stop()
            await pool.close()
        return {
            "sent": sent,
            "topic": topic,
            "ranges": [
                {"partition": r.partition, "fromSeq": r.from_seq, "toSeq": r.to_seq} for r in ranges
            ],
        }

    return work


# -- the routes -------------------------------------------------------------------------------

JOB_RUNNER = web.AppKey("job_runner", JobRunner)
JOB_SETTINGS = web.AppKey("job_settings", OperatorJobSettings)


def _json(body: dict[str, Any], status: int = 200) -> web.Response:
    return web.json_response(body, status=status, headers={"Cache-Control": "no-store"})


def _job_id(request: web.Request) -> uuid.UUID:
    try:
        return uuid.UUID(request.match_info["job_id"])
    except ValueError:
        raise RequestError("invalid_id", "jobId must be a UUID") from None


async def _answered(request: web.Request, work: Awaitable[web.Response]) -> web.Response:
    try:
        return await work
    except RequestError as exc:
        return json_error(exc.code, exc.message)
    except (*DATABASE_AWAY, asyncpg.PostgresError) as exc:
        log.warning("jobs_database_unavailable", path=request.path, error=repr(exc))
        return json_error("unavailable", "The database is unavailable; retry the request.")


async def start_job(request: web.Request) -> web.Response:
    """``POST /v1/jobs`` ``{type, params}``: 202 with the job, 409 when its type is busy."""

    async def run() -> web.Response:
        job = parse_job_request(await request.read())
        if job.type == REPLAY:  # refused now rather than in the job: a bad name is a 400
            replay_dsn(request.app[JOB_SETTINGS].pg_dsn, job.params["intoDatabase"])
        request[AUDIT_DETAIL] = {"type": job.type, "params": job.params}
        try:
            row = await request.app[JOB_RUNNER].submit(job, request[API_KEY].api_id)
        except JobActive:
            return json_error("job_already_active")
        request[AUDIT_DETAIL] = {"jobId": str(row.job_id), "type": job.type, "params": job.params}
        return _json(job_view(row), status=202)

    return await _answered(request, run())


async def get_job(request: web.Request) -> web.Response:
    """``GET /v1/jobs/{jobId}``."""

    async def run() -> web.Response:
        row = await request.app[JOB_RUNNER].store.get(_job_id(request))
        return json_error("job_not_found") if row is None else _json(job_view(row))

    return await _answered(request, run())


async def list_jobs(request: web.Request) -> web.Response:
    """``GET /v1/jobs?limit=``: the newest first."""

    async def run() -> web.Response:
        values = request.query.getall("limit", [])
        limit = DEFAULT_LIST
        if values:
            text = values[0]
            if len(values) > 1 or not text.isdigit() or not 1 <= int(text) <= MAX_LIST:
                raise RequestError("invalid_field", f"limit must be from 1 to {MAX_LIST}")
            limit = int(text)
        unknown = sorted(set(request.query) - {"limit"})
        if unknown:
            raise RequestError("invalid_field", f"unexpected parameters: {', '.join(unknown)}")
        rows = await request.app[JOB_RUNNER].store.recent(limit)
        return _json({"jobs": [job_view(r) for r in rows]})

    return await _answered(request, run())


async def cancel_job(request: web.Request) -> web.Response:
    """``POST /v1/jobs/{jobId}/cancel``: 200 with the cancelled job; 409 once it finished."""

    async def run() -> web.Response:
        job_id = _job_id(request)
        request[AUDIT_DETAIL] = {"jobId": str(job_id)}
        runner = request.app[JOB_RUNNER]
        row = await runner.cancel(job_id)
        if row is not None:
            return _json(job_view(row))
        found = await runner.store.get(job_id)
        return json_error("job_not_found" if found is None else "job_finished")

    return await _answered(request, run())


def runner_name() -> str:
    """This process among the operator API's processes: host, pid and a random part."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


async def jobs_context(app: web.Application) -> AsyncIterator[None]:
    """The jobs' pool, the runner and its sweep; marks interrupted jobs of dead processes."""
    settings = app[JOB_SETTINGS]
    pool = await asyncpg.create_pool(settings.pg_dsn, min_size=0, max_size=3)
    runner = JobRunner(
        JobStore(pool, runner_name()),
        {
            PROJECTION_REBUILD: rebuild_work(settings),
            REPLAY: replay_work(settings),
            REPUBLISH: republish_work(settings),
        },
    )
    app[JOB_RUNNER] = runner
    stop = asyncio.Event()
    sweep = asyncio.create_task(runner.sweep(stop))
    try:
        yield
    finally:
        stop.set()
        await sweep
        await runner.close()
        await pool.close()


def add_job_routes(app: web.Application, settings: OperatorJobSettings) -> None:
    """Register the job routes on ``app`` and open the runner with it."""
    app[JOB_SETTINGS] = settings
    app.router.add_post("/v1/jobs", start_job)
    app.router.add_get("/v1/jobs", list_jobs)
    app.router.add_get("/v1/jobs/{job_id}", get_job)
    app.router.add_post("/v1/jobs/{job_id}/cancel", cancel_job)
    app.cleanup_ctx.append(jobs_context)
