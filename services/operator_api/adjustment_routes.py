"""Reversals and four eyes: ``POST /v1/entries/{entryId}/reversal`` and the pending adjustments
(``GET /v1/adjustments``, ``GET``/``approve``/``reject`` one).

**Reversals.** The original entry (a customer's deposit or withdrawal; anything else is ``409
entry_not_reversible``) is read here, and a :class:`~ledger_core.commands.Reversal` carrying its
customer, balance, currency and amount, with the original's id as its request id, goes to the
ledger. The ledger's idempotency key ``(customer, reversal:<balance>, entry id)`` lets one
reversal of an entry through, ever: the same request again (same ``requestId`` and comment)
replays the stored answer; any other is ``409 entry_already_reversed`` naming ``reversedBy``.

**Four eyes.** A deposit, withdrawal or reversal at or above its currency's threshold
(:class:`~operator_api.four_eyes.FourEyesPolicy`) is kept as a pending adjustment and answered
``202``. Another key (operator or admin) approves it (the maker's own key is ``403
maker_cannot_approve``) and its command is sent then, with the maker's ``requestId``; the
ledger's answer is kept on the adjustment. The approval is one conditional update, so of two
concurrent approvals one sends and the other is ``409 adjustment_not_pending``.
"""

from __future__ import annotations

import uuid
from typing import Any, Final

import orjson
import structlog
from aiohttp import web
from aiokafka.errors import KafkaError

from ledger_core.commands import REVERSAL_OF, Command, MoneyCommand, Reversal
from ledger_core.errors import error_body
from ledger_core.money import format_amount, parse_amount
from operator_api import adjustments as store
from operator_api import four_eyes
from operator_api import ledger_reads as reads
from operator_api.auth import API_KEY, AUDIT_DETAIL, AuthenticatedKey
from operator_api.four_eyes import Adjustment, FourEyesPolicy, adjustment_view
from operator_api.ledger_routes import (
    LEDGER_BUS,
    LEDGER_POOL,
    LEDGER_SETTINGS,
    MONEY_GATE,
    NOT_QUEUED,
    MoneyGate,
    _answers_errors,
    _json,
    _multi,
)
from wallet_platform.command_bus import CommandNotQueued, OutcomeTimeout
from wallet_platform.http import json_error

log = structlog.get_logger(__name__)

FOUR_EYES: Final = web.AppKey("four_eyes", FourEyesPolicy)


class NotSent(Exception):
    """The command's answer is this error response (not queued, or the ledger too slow)."""

    def __init__(self, response: web.Response, *, queued: bool) -> None:
        super().__init__(response.status)
        self.response = response
        self.queued = queued


async def _send(request: web.Request, cmd: Command) -> tuple[int, bytes]:
    """The ledger's answer to ``cmd``; :class:`NotSent` with the error to answer otherwise."""
    try:
        return await request.app[LEDGER_BUS].submit(
            cmd, request.app[LEDGER_SETTINGS].operator_api_ledger_timeout
        )
    except CommandNotQueued:
        raise NotSent(json_error("unavailable", NOT_QUEUED), queued=False) from None
    except OutcomeTimeout:
        # Queued: applied once; the same request (or a GET of the adjustment) gets the answer.
        raise NotSent(json_error("ledger_timeout"), queued=True) from None
    except KafkaError as exc:
        log.warning("ledger_command_not_delivered", error=repr(exc))
        raise NotSent(json_error("unavailable", NOT_QUEUED), queued=False) from None


def _already_reversed(entry_id: str, reversed_by: str | None) -> tuple[int, bytes]:
    body = orjson.loads(error_body("entry_already_reversed"))
    body.update(entryId=entry_id, reversedBy=reversed_by)
    return 409, orjson.dumps(body)


async def _reversal_answer(request: web.Request, cmd: Reversal) -> tuple[int, bytes]:
    """Send a reversal; the ledger's ``request_id_reused`` (its key, the entry, holds another
    reversal) is answered as ``entry_already_reversed`` with the reversing entry's id."""
    status, body = await _send(request, cmd)
    if status == 409 and orjson.loads(body).get("error") == "request_id_reused":
        async with request.app[LEDGER_POOL].acquire() as conn:
            by = await reads.reversal_of(conn, cmd.customer_id, cmd.balance_id, cmd.entry_id)
        return _already_reversed(cmd.entry_id, by)
    return status, body


def _answer(status: int, body: bytes) -> web.Response:
    return web.Response(
        status=status,
        body=body,
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


def _key(request: web.Request) -> AuthenticatedKey | web.Response:
    key = request.get(API_KEY)
    return json_error("api_key_required") if key is None else key


async def _hold(request: web.Request, new: store.NewAdjustment) -> web.Response:
    """Keep a request that needs a second key: ``202`` with the adjustment. The same request
    again (same key: customer, kind, balance, ``requestId``; same amount and comment) answers
    the same adjustment as it is now. Otherwise a reversal of an entry reversed already is
    ``409 entry_already_reversed``, and another request under a used key ``409
    request_id_reused``."""
    async with request.app[LEDGER_POOL].acquire() as conn:
        made = await store.find(conn, new.customer_id, new.kind, new.balance_id, new.request_id)
        same = made is not None and made.same_request(new.amount, new.comment, new.reverses)
        if not same and new.reverses is not None:
            by = await reads.reversal_of(conn, new.customer_id, new.balance_id, str(new.reverses))
            if by is not None:
                return _answer(*_already_reversed(str(new.reverses), by))
        if made is None:
            made = await store.insert(conn, new)
            same = made.same_request(new.amount, new.comment, new.reverses)  # a race's winner
    request[AUDIT_DETAIL] = request.get(AUDIT_DETAIL, {}) | {
        "adjustmentId": str(made.adjustment_id)
    }
    if not same:
        return json_error("request_id_reused", "requestId was already used for another adjustment")
    return _json(adjustment_view(made), 202)


async def hold_money(request: web.Request, cmd: MoneyCommand) -> web.Response | None:
    """The four-eyes gate of deposits and withdrawals: None lets ``cmd`` go to the ledger."""
    policy = request.app[FOUR_EYES]
    if not policy.needs_approval(cmd.currency, parse_amount(cmd.amount, cmd.currency)):
        return None
    key = _key(request)
    if isinstance(key, web.Response):
        return key
    return await _hold(
        request,
        store.NewAdjustment(
            cmd.kind,
            cmd.customer_id,
            cmd.balance_id,
            cmd.request_id,
            cmd.amount,
            cmd.currency,
            cmd.comment,
            None,
            key.api_id,
        ),
    )


@_answers_errors
async def reverse_entry(request: web.Request) -> web.Response:
    """``POST /v1/entries/{entryId}/reversal`` ``{requestId?, comment}``."""
    asked = four_eyes.reversal_request(request.match_info["entry_id"], await request.read())
    request[AUDIT_DETAIL] = {"reverses": str(asked.entry_id)}
    async with request.app[LEDGER_POOL].acquire() as conn:
        original = await store.original_entry(conn, asked.entry_id)
    if original is None:
        return json_error("entry_not_found")
    reversal_kind = REVERSAL_OF.get(original.kind)
    if reversal_kind is None:
        return json_error(
            "entry_not_reversible",
            f"a {original.kind} entry can not be reversed; only deposits and withdrawals",
        )
    amount = format_amount(original.amount, original.currency)
    if request.app[FOUR_EYES].needs_approval(original.currency, original.amount):
        key = _key(request)
        if isinstance(key, web.Response):
            return key
        return await _hold(
            request,
            store.NewAdjustment(
                "reversal",
                original.customer_id,
                original.balance_id,
                asked.request_id,
                amount,
                original.currency,
                asked.comment,
                original.entry_id,
                key.api_id,
            ),
        )
    cmd = Reversal(
        reversal_kind,
        original.customer_id,
        original.balance_id,
        str(original.entry_id),
        amount,
        original.currency,
        asked.comment,
        asked.request_id,
    )
    try:
        return _answer(*await _reversal_answer(request, cmd))
    except NotSent as exc:
        return exc.response


async def _command_of(request: web.Request, adj: Adjustment) -> Command | web.Response:
    if adj.kind != "reversal":
        return adj.money_command()
    assert adj.reverses is not None
    async with request.app[LEDGER_POOL].acquire() as conn:
        original = await store.original_entry(conn, adj.reverses)
    if original is None or original.kind not in REVERSAL_OF:  # entries are never changed
        return json_error("entry_not_reversible")
    return adj.reversal_command(REVERSAL_OF[original.kind])


async def _completed(request: web.Request, adj: Adjustment) -> Adjustment:
    """An approved adjustment whose answer did not arrive in time, with the ledger's stored
    answer if it has one by now."""
    if adj.status != "approved" or adj.outcome_status is not None:
        return adj
    cmd = await _command_of(request, adj)
    if isinstance(cmd, web.Response):
        return adj
    async with request.app[LEDGER_POOL].acquire() as conn:
        stored = await store.stored_outcome(conn, cmd)
        if stored is None:
            return adj
        done = await store.record_outcome(conn, adj.adjustment_id, *stored)
    return adj if done is None else done


@_answers_errors
async def list_adjustments(request: web.Request) -> web.Response:
    """``GET /v1/adjustments?status=&afterId=&limit=``: oldest first."""
    query = four_eyes.list_query(_multi(request))
    async with request.app[LEDGER_POOL].acquire() as conn:
        found, more = await store.listed(conn, query)
    return _json(
        {
            "adjustments": [adjustment_view(a) for a in found],
            "nextAfterId": str(found[-1].adjustment_id) if more and found else None,
        }
    )


@_answers_errors
async def get_adjustment(request: web.Request) -> web.Response:
    """``GET /v1/adjustments/{adjustmentId}``."""
    adjustment_id = four_eyes.parse_adjustment_id(request.match_info["adjustment_id"])
    async with request.app[LEDGER_POOL].acquire() as conn:
        found = await store.get(conn, adjustment_id)
    if found is None:
        return json_error("adjustment_not_found")
    return _json(adjustment_view(await _completed(request, found)))


async def _not_decidable(
    request: web.Request, adjustment_id: uuid.UUID, key: AuthenticatedKey, *, approving: bool
) -> web.Response:
    """Why a conditional update found nothing: not there, the maker's own, or decided."""
    async with request.app[LEDGER_POOL].acquire() as conn:
        found = await store.get(conn, adjustment_id)
    if found is None:
        return json_error("adjustment_not_found")
    if approving and found.maker == key.api_id:
        return json_error("maker_cannot_approve")
    body: dict[str, Any] = orjson.loads(
        error_body("adjustment_not_pending", f"the adjustment is {found.status}")
    )
    body["adjustment"] = adjustment_view(found)
    return _answer(409, orjson.dumps(body))


@_answers_errors
async def approve_adjustment(request: web.Request) -> web.Response:
    """``POST /v1/adjustments/{adjustmentId}/approve``: another key sends the maker's command;
    the answer is the adjustment with the ledger's outcome."""
    adjustment_id = four_eyes.parse_adjustment_id(request.match_info["adjustment_id"])
    four_eyes.approve_body(await request.read())
    request[AUDIT_DETAIL] = {"adjustmentId": str(adjustment_id)}
    key = _key(request)
    if isinstance(key, web.Response):
        return key
    async with request.app[LEDGER_POOL].acquire() as conn:
        claimed = await store.claim_for_approval(conn, adjustment_id, key.api_id)
    if claimed is None:
        return await _not_decidable(request, adjustment_id, key, approving=True)
    cmd = await _command_of(request, claimed)
    try:
        if isinstance(cmd, web.Response):
            status, body = cmd.status, cmd.body
            assert isinstance(body, bytes)
        elif isinstance(cmd, Reversal):
            status, body = await _reversal_answer(request, cmd)
        else:
            status, body = await _send(request, cmd)
    except NotSent as exc:
        if not exc.queued:
            async with request.app[LEDGER_POOL].acquire() as conn:
                await store.release(conn, adjustment_id)
        return exc.response
    async with request.app[LEDGER_POOL].acquire() as conn:
        done = await store.record_outcome(conn, adjustment_id, status, body)
        if done is None:  # completed meanwhile by a GET that found the stored answer
            done = await store.get(conn, adjustment_id)
    assert done is not None
    log.info(
        "adjustment_approved",
        adjustment_id=str(adjustment_id),
        maker=str(claimed.maker),
        checker=str(key.api_id),
        outcome=status,
    )
    return _json(adjustment_view(done))


@_answers_errors
async def reject_adjustment(request: web.Request) -> web.Response:
    """``POST /v1/adjustments/{adjustmentId}/reject`` ``{reason}``: nothing is ever sent."""
    adjustment_id = four_eyes.parse_adjustment_id(request.match_info["adjustment_id"])
    reason = four_eyes.reject_reason(await request.read())
    request[AUDIT_DETAIL] = {"adjustmentId": str(adjustment_id)}
    key = _key(request)
    if isinstance(key, web.Response):
        return key
    async with request.app[LEDGER_POOL].acquire() as conn:
        rejected = await store.reject(conn, adjustment_id, key.api_id, reason)
    if rejected is None:
        return await _not_decidable(request, adjustment_id, key, approving=False)
    return _json(adjustment_view(rejected))


def add_adjustment_routes(app: web.Application, policy: FourEyesPolicy) -> None:
    """Register the reversal and adjustment routes (after :func:`add_ledger_routes`, whose pool
    and bus they use) and put deposits and withdrawals behind ``policy``."""
    app[FOUR_EYES] = policy
    app[MONEY_GATE] = MoneyGate(hold_money)
    app.router.add_post("/v1/entries/{entry_id}/reversal", reverse_entry)
    app.router.add_get("/v1/adjustments", list_adjustments)
    app.router.add_get("/v1/adjustments/{adjustment_id}", get_adjustment)
    app.router.add_post("/v1/adjustments/{adjustment_id}/approve", approve_adjustment)
    app.router.add_post("/v1/adjustments/{adjustment_id}/reject", reject_adjustment)
