"""Dead letters over the operator API: list, inspect, redrive, discard (``docs/operator-jobs.md``).

The ledger writer copies a command it can never apply to ``ledger.commands.dlq``: the original
bytes and key, with headers ``reason`` (``undecodable`` or ``refused``), ``error`` (why; for a
refused command its stored answer) and ``source`` (``topic:partition:offset``). That topic is the
record of what was parked; ``operator_dead_letters`` records what an operator did with each
record (:mod:`operator_api.dead_letter_store`). Each record is acted on once: redriven (its
bytes produced again to ``ledger.commands``, same key, same partition) or discarded with a
reason; a second action is a 409 naming the first.

A redrive is refused (409) when it could change nothing: while the command still does not
decode (``dead_letter_undecodable``: the ledger would park it again), and while the ledger holds
a stored answer for the command's request (``dead_letter_outcome_stored``: the ledger is
idempotent by request id, so it would answer that stored outcome, a refusal included, and apply
nothing). A redrive is for a command that has no stored answer: one parked as undecodable by a
ledger whose decoder has since been fixed.

Roles: reading needs a ``read_only`` key, acting an ``operator`` key (``api_keys.role_allows``).
Every action is audited by the middleware with its detail (:data:`operator_api.auth.AUDIT_DETAIL`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import unicodedata
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import asyncpg
import orjson
import structlog
from aiohttp import web
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from prometheus_client import Gauge

from ledger_core.commands import CommandError, decode, idempotency_key
from ledger_core.requests import RequestError
from operator_api.auth import API_KEY, AUDIT_DETAIL
from operator_api.dead_letter_store import (
    DeadLetterActions,
    DeadLetterTopic,
    OperatorAction,
    ParkedRecord,
    stored_outcome,
)
from operator_api.ledger_settings import OperatorLedgerSettings
from operator_api.ledger_views import rfc3339
from wallet_platform import topics
from wallet_platform.http import json_error
from wallet_platform.kafka import make_consumer, make_producer
from wallet_platform.postgres import UNAVAILABLE as DATABASE_AWAY

log = structlog.get_logger(__name__)

NEW: Final = "new"
REDRIVEN: Final = "redriven"
DISCARDED: Final = "discarded"
STATES: Final = (NEW, REDRIVEN, DISCARDED)
DEFAULT_LIMIT: Final = 50
MAX_LIMIT: Final = 500
SCAN_BOUND: Final = 5000
"""Most records one list request reads from the topic when it filters by status."""
MAX_REASON: Final = 1024
REASON_BODY: Final = 'The body must be a JSON object {"reason": "..."}.'
METRICS_INTERVAL_S: Final = 15.0

DEAD_LETTERS = Gauge(
    "operator_dead_letters",
    "Records on the dead-letter topic, by state: new (no operator action), redriven, discarded.",
    ["state"],
)

DLQ_TOPIC = web.AppKey("dead_letter_topic", DeadLetterTopic)
DLQ_ACTIONS = web.AppKey("dead_letter_actions", DeadLetterActions)
DLQ_PRODUCER = web.AppKey("dead_letter_producer", AIOKafkaProducer)
DLQ_SETTINGS = web.AppKey("dead_letter_settings", OperatorLedgerSettings)


# -- the pure part: what a record says, what a request asks, whether a redrive may go ----------


@dataclass(frozen=True, slots=True)
class Source:
    """Where a dead letter's command first was: ``topic:partition:offset``."""

    topic: str
    partition: int
    offset: int

    @classmethod
    def parse(cls, text: str) -> Source | None:
        """The ``source`` header, or None when it is not ``topic:partition:offset``."""
        parts = text.rsplit(":", 2)
        if len(parts) != 3 or not parts[1].isdigit() or not parts[2].isdigit():
            return None
        return cls(parts[0], int(parts[1]), int(parts[2]))

    def text(self) -> str:
        return f"{self.topic}:{self.partition}:{self.offset}"


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A record of the dead-letter topic, read: its headers and what its bytes decode to."""

    record: ParkedRecord
    reason: str
    error: str
    source: str
    command: dict[str, Any] | None  # the wire object, when it decodes
    decode_error: str | None
    key: tuple[str, str, str] | None  # the command's idempotency key, when it decodes

    @classmethod
    def read(cls, record: ParkedRecord) -> DeadLetter:
        """Read a record's headers and try its bytes with this build's decoder."""
        headers = {name: value for name, value in record.headers}
        text = {k: v.decode("utf-8", "replace") for k, v in headers.items()}
        try:
            cmd, _ = decode(record.value)
        except CommandError as exc:
            return cls(
                record, text.get("reason", ""), text.get("error", ""), text.get("source", ""),
                None, str(exc), None,
            )  # fmt: skip
        command = orjson.loads(record.value)
        return cls(
            record,
            text.get("reason", ""),
            text.get("error", ""),
            text.get("source", ""),
            command,
            None,
            idempotency_key(cmd),
        )

    @property
    def decodes(self) -> bool:
        return self.command is not None

    @property
    def position(self) -> str:
        return f"{self.record.partition}:{self.record.offset}"


def state_of(action: OperatorAction | None) -> str:
    """A dead letter's state: new until an operator acted on it."""
    return NEW if action is None else action.state


def redrive_refusal(letter: DeadLetter, stored: tuple[int, bytes] | None) -> str | None:
    """Why a redrive of a new dead letter would change nothing (an error code), or None."""
    if not letter.decodes:
        return "dead_letter_undecodable"
    if stored is not None:
        return "dead_letter_outcome_stored"
    return None


def action_refusal(action: OperatorAction | None) -> str | None:
    """The 409 for a dead letter acted on before, or None for a new one."""
    if action is None:
        return None
    return "dead_letter_redriven" if action.state == REDRIVEN else "dead_letter_discarded"


@dataclass(frozen=True, slots=True)
class ListQuery:
    """``GET /v1/dead-letters``: ``partition`` (0), ``after`` (an offset; from the first),
    ``limit`` (1..500, 50), ``status`` (new, redriven, discarded; all)."""

    partition: int
    after: int
    limit: int
    status: str | None


def _int(query: dict[str, list[str]], name: str, default: int, low: int, high: int) -> int:
    values = query.get(name, [])
    if not values:
        return default
    if len(values) > 1:
        raise RequestError("invalid_field", f"{name} is given more than once")
    text = values[0]
    if not text.lstrip("-").isdigit() or not low <= int(text) <= high:
        raise RequestError("invalid_field", f"{name} must be an integer from {low} to {high}")
    return int(text)


def parse_list_query(query: dict[str, list[str]]) -> ListQuery:
    """The list's query string; ``invalid_field`` for anything else or out of range."""
    unknown = sorted(set(query) - {"partition", "after", "limit", "status"})
    if unknown:
        raise RequestError("invalid_field", f"unexpected parameters: {', '.join(unknown)}")
    statuses = query.get("status", [])
    if len(statuses) > 1 or (statuses and statuses[0] not in STATES):
        raise RequestError("invalid_field", f"status must be one of {', '.join(STATES)}")
    return ListQuery(
        partition=_int(query, "partition", 0, 0, 1023),
        after=_int(query, "after", -1, -1, 2**62),
        limit=_int(query, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT),
        status=statuses[0] if statuses else None,
    )


def parse_reason(body: bytes, *, required: bool) -> str | None:
    """``{"reason": "..."}``: 1 to 1,024 characters of text (no control characters)."""
    if not body.strip():
        if required:
            raise RequestError("malformed_json", REASON_BODY)
        return None
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise RequestError("malformed_json", REASON_BODY) from None
    if not isinstance(obj, dict):
        raise RequestError("malformed_json", REASON_BODY)
    unexpected = sorted(set(obj) - {"reason"})
    if unexpected:
        raise RequestError("invalid_field", f"unexpected fields: {', '.join(unexpected)}")
    reason = obj.get("reason")
    if reason is None and not required:
        return None
    if not isinstance(reason, str) or not reason.strip() or len(reason) > MAX_REASON:
        raise RequestError("invalid_field", f"reason must be 1 to {MAX_REASON} characters")
    if any(unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co", "Cn") for c in reason):
        raise RequestError("invalid_field", "reason may hold no control or format characters")
    return reason


def action_view(action: OperatorAction | None) -> dict[str, Any] | None:
    """The action as the API shows it."""
    if action is None:
        return None
    return {
        "state": action.state,
        "apiId": str(action.api_id),
        "at": rfc3339(action.at),
        "reason": action.reason,
        "redrivenTo": action.redriven_to,
    }


def letter_view(
    letter: DeadLetter, action: OperatorAction | None, *, full: bool = False
) -> dict[str, Any]:
    """A dead letter as the API shows it: in a list, or whole (``full``: the command, the
    raw bytes in base64)."""
    record = letter.record
    source = Source.parse(letter.source)
    view: dict[str, Any] = {
        "partition": record.partition,
        "offset": record.offset,
        "parkedAt": rfc3339(datetime.fromtimestamp(record.timestamp_ms / 1000, UTC)),
        "reason": letter.reason,
        "error": letter.error,
        "source": None
        if source is None
        else {"topic": source.topic, "partition": source.partition, "offset": source.offset},
        "key": None if record.key is None else record.key.decode("utf-8", "replace"),
        "status": state_of(action),
        "decodes": letter.decodes,
        "action": action_view(action),
    }
    if letter.command is not None:
        view["commandType"] = letter.command.get("type")
        view["requestId"] = letter.command.get("request_id")
    if full:
        view["command"] = letter.command
        view["decodeError"] = letter.decode_error
        view["raw"] = base64.b64encode(record.value).decode()
    return view


# -- the routes -------------------------------------------------------------------------------


def _multi(request: web.Request) -> dict[str, list[str]]:
    query: dict[str, list[str]] = {}
    for name, value in request.query.items():
        query.setdefault(name, []).append(value)
    return query


def _position(request: web.Request) -> tuple[int, int]:
    try:
        partition = int(request.match_info["partition"])
        offset = int(request.match_info["offset"])
    except ValueError:
        raise RequestError("invalid_id", "partition and offset must be integers") from None
    if partition < 0 or offset < 0:
        raise RequestError("invalid_id", "partition and offset can not be negative")
    return partition, offset


def _json(body: dict[str, Any], status: int = 200) -> web.Response:
    return web.json_response(body, status=status, headers={"Cache-Control": "no-store"})


async def _answered(request: web.Request, work: Any) -> web.Response:
    """Run a handler's work: a refused request is its code; a dependency away a 503."""
    try:
        response: web.Response = await work
        return response
    except RequestError as exc:
        return json_error(exc.code, exc.message)
    except (*DATABASE_AWAY, asyncpg.PostgresError) as exc:
        log.warning("dead_letters_database_unavailable", path=request.path, error=repr(exc))
        return json_error("unavailable", "The database is unavailable; retry the request.")
    except KafkaError as exc:
        log.warning("dead_letters_kafka_unavailable", path=request.path, error=repr(exc))
        return json_error("unavailable", "Kafka is unavailable; retry the request.")


async def list_dead_letters(request: web.Request) -> web.Response:
    """``GET /v1/dead-letters?partition=&after=&limit=&status=``: a page by offset."""
    return await _answered(request, _list(request))


async def _list(request: web.Request) -> web.Response:
    query = parse_list_query(_multi(request))
    topic, actions = request.app[DLQ_TOPIC], request.app[DLQ_ACTIONS]
    page: list[dict[str, Any]] = []
    start, scanned, end = query.after + 1, 0, 0
    # Without a status filter a page is ``limit`` records; with one, records are read until
    # ``limit`` match or SCAN_BOUND were read (then nextAfter goes on from the last one read).
    bound = query.limit if query.status is None else SCAN_BOUND
    last_read = query.after
    while len(page) < query.limit and scanned < bound:
        records, end = await topic.read(query.partition, start, min(500, bound - scanned))
        if not records:
            break
        done = await actions.of(query.partition, [r.offset for r in records])
        for record in records:
            if len(page) >= query.limit:
                break
            last_read = record.offset
            scanned += 1
            action = done.get(record.offset)
            if query.status is None or state_of(action) == query.status:
                page.append(letter_view(DeadLetter.read(record), action))
        start = last_read + 1
    more = last_read + 1 < end
    return _json(
        {
            "partition": query.partition,
            "deadLetters": page,
            "nextAfter": last_read if more else None,
            "endOffset": end,
        }
    )


async def _found(request: web.Request) -> tuple[DeadLetter, OperatorAction | None]:
    partition, offset = _position(request)
    record = await request.app[DLQ_TOPIC].record(partition, offset)
    if record is None:
        raise _NotFound
    action = (await request.app[DLQ_ACTIONS].of(partition, [offset])).get(offset)
    return DeadLetter.read(record), action


class _NotFound(Exception):
    pass


async def get_dead_letter(request: web.Request) -> web.Response:
    """``GET /v1/dead-letters/{partition}/{offset}``: the whole record, and the ledger's stored
    answer for its request when it decodes (a redrive of one that has it is refused)."""
    return await _answered(request, _get(request))


async def _get(request: web.Request) -> web.Response:
    try:
        letter, action = await _found(request)
    except _NotFound:
        return json_error("dead_letter_not_found")
    view = letter_view(letter, action, full=True)
    stored = None
    if letter.key is not None:
        stored = await stored_outcome(request.app[DLQ_ACTIONS].pool, letter.key)
    view["storedOutcome"] = (
        None if stored is None else {"status": stored[0], "body": _body(stored[1])}
    )
    return _json(view)


def _body(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw.decode("utf-8", "replace")


async def redrive(request: web.Request) -> web.Response:
    """``POST /v1/dead-letters/{partition}/{offset}/redrive`` ``{reason?}``."""
    return await _answered(request, _act(request, REDRIVEN))


async def discard(request: web.Request) -> web.Response:
    """``POST /v1/dead-letters/{partition}/{offset}/discard`` ``{reason}``."""
    return await _answered(request, _act(request, DISCARDED))


async def _act(request: web.Request, state: str) -> web.Response:
    reason = parse_reason(await request.read(), required=state == DISCARDED)
    try:
        letter, action = await _found(request)
    except _NotFound:
        return json_error("dead_letter_not_found")
    record = letter.record
    request[AUDIT_DETAIL] = {"deadLetter": letter.position, "action": state, "reason": reason}
    refusal = action_refusal(action)
    if refusal is None and state == REDRIVEN:
        stored = None
        if letter.key is not None:
            stored = await stored_outcome(request.app[DLQ_ACTIONS].pool, letter.key)
        refusal = redrive_refusal(letter, stored)
    if refusal is not None:
        return json_error(refusal)
    taken = OperatorAction(
        state=state,
        api_id=request[API_KEY].api_id,
        at=datetime.now(UTC),
        reason=reason or "redriven",
        source=letter.source,
        redriven_to=None,
    )
    actions = request.app[DLQ_ACTIONS]
    async with actions.pool.acquire() as conn, conn.transaction():
        if state == REDRIVEN:
            # The row first (it holds the key against a concurrent action), then the copy; a
            # copy Kafka did not take rolls the row back, so the dead letter stays new.
            taken = _with_target(taken, await _target(request, letter))
        before = await actions.record(conn, record.partition, record.offset, taken)
        if before is not None:
            return json_error(action_refusal(before) or "dead_letter_redriven")
        if state == REDRIVEN:
            await _produce(request, letter, taken)
    log.info(
        "dead_letter_" + state,
        dead_letter=letter.position,
        source=letter.source,
        api_id=str(taken.api_id),
        reason=taken.reason,
    )
    request.app[_REFRESH].set()
    return _json(letter_view(letter, taken))


def _with_target(action: OperatorAction, target: str) -> OperatorAction:
    return OperatorAction(
        action.state, action.api_id, action.at, action.reason, action.source, target
    )


async def _target(request: web.Request, letter: DeadLetter) -> str:
    """Where a redrive goes: the commands topic, the partition the command first was in (the
    one its customer's writer reads), else the key's partition."""
    settings = request.app[DLQ_SETTINGS]
    commands = topics.topic_name(topics.COMMANDS, settings.topic_prefix)
    source = Source.parse(letter.source)
    if source is not None and source.topic == commands:
        return f"{commands}:{source.partition}"
    return commands


async def _produce(request: web.Request, letter: DeadLetter, action: OperatorAction) -> None:
    assert action.redriven_to is not None
    topic, _, partition = action.redriven_to.partition(":")
    delivery = await request.app[DLQ_PRODUCER].send(
        topic,
        letter.record.value,
        key=letter.record.key,
        partition=int(partition) if partition else None,
        headers=[("redriven_from", f"dlq:{letter.position}".encode())],
    )
    await delivery


# -- metrics and the context ------------------------------------------------------------------

_REFRESH = web.AppKey("dead_letter_refresh", asyncio.Event)


async def refresh_counts(topic: DeadLetterTopic, actions: DeadLetterActions) -> None:
    """Set :data:`DEAD_LETTERS` from the topic's record count and the operators' actions."""
    total = 0
    for partition in await topic.partitions():
        window = await topic.window(partition)
        total += window.end - window.first
    counts = await actions.counts()
    handled = sum(counts.values())
    DEAD_LETTERS.labels(NEW).set(max(0, total - handled))
    for state in (REDRIVEN, DISCARDED):
        DEAD_LETTERS.labels(state).set(counts.get(state, 0))


async def _keep_counts(
    topic: DeadLetterTopic, actions: DeadLetterActions, wake: asyncio.Event, stop: asyncio.Event
) -> None:
    while not stop.is_set():
        try:
            await refresh_counts(topic, actions)
        except (KafkaError, *DATABASE_AWAY, asyncpg.PostgresError) as exc:
            log.warning("dead_letter_counts_failed", error=repr(exc))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), METRICS_INTERVAL_S)
        wake.clear()


async def dead_letters_context(app: web.Application) -> AsyncIterator[None]:
    """The topic's consumer, a producer for redrives, a small pool, and the metrics task."""
    settings = app[DLQ_SETTINGS]
    pool = await asyncpg.create_pool(settings.pg_dsn, min_size=0, max_size=2)
    name = topics.topic_name(topics.DEAD_LETTER, settings.topic_prefix)
    consumer = make_consumer(settings.kafka_bootstrap, "operator-api-dead-letters")
    producer = make_producer(settings.kafka_bootstrap, "operator-api-redrive")
    stop, wake = asyncio.Event(), asyncio.Event()
    task: asyncio.Task[None] | None = None
    try:
        await consumer.start()
        await producer.start()
        app[DLQ_TOPIC] = DeadLetterTopic(consumer, name)
        app[DLQ_ACTIONS] = DeadLetterActions(pool)
        app[DLQ_PRODUCER] = producer
        app[_REFRESH] = wake
        task = asyncio.create_task(_keep_counts(app[DLQ_TOPIC], app[DLQ_ACTIONS], wake, stop))
        yield
    finally:
        stop.set()
        wake.set()
        if task is not None:
            await task
        await producer.stop()
        await consumer.stop()
        await pool.close()


def add_dead_letter_routes(app: web.Application, settings: OperatorLedgerSettings) -> None:
    """Register the dead-letter routes on ``app`` and open what they use with it."""
    app[DLQ_SETTINGS] = settings
    one = "/v1/dead-letters/{partition}/{offset}"
    app.router.add_get("/v1/dead-letters", list_dead_letters)
    app.router.add_get(one, get_dead_letter)
    app.router.add_post(one + "/redrive", redrive)
    app.router.add_post(one + "/discard", discard)
    app.cleanup_ctx.append(dead_letters_context)
