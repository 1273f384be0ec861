"""Authentication, roles and the audit of every operator API request under ``/v1/``.

A request is refused (403, each reason its own code) when its signature headers are missing or
malformed, its key is unknown or inactive, the caller's IP is outside the key's whitelist, its
timestamp is outside the window, its signature does not match the raw body, or the signature
was seen before within the window (replay, refused across replicas by the database). Then the
key's role must allow the method and route. The authenticated key is on the request
(:data:`API_KEY`) for the routes.

Audit (:mod:`operator_api.audit`): every request that identified a key, authenticated or not,
appends one record once its status is known. Requests that identified no key (headers missing
or malformed, unknown public key) are not chained: anyone can send them, so recording them
would let anyone grow the log; they are counted in ``operator_api_auth_refusals_total``.
Refusals of an identified key are recorded up to :data:`REFUSALS_AUDITED_PER_SECOND` per
process (a public key is no secret), the rest counted in
``operator_audit_refusals_unrecorded_total``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import asyncpg
import orjson
import structlog
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from prometheus_client import Counter

from operator_api import audit
from operator_api.api_keys import KeySettings, role_allows
from operator_api.key_store import StoredKey, key_by_public_key
from operator_api.master_keys import MasterKeyError, MasterKeys
from operator_api.signatures import (
    Refused,
    SignedHeaders,
    expires_at_ms,
    read_signed_headers,
    replay_digest,
    signature_matches,
    within_window,
)
from wallet_platform.callback_auth import IpPolicy
from wallet_platform.health import postgres_check
from wallet_platform.http import json_error
from wallet_platform.postgres import UNAVAILABLE as DATABASE_AWAY
from wallet_platform.service import READINESS

log = structlog.get_logger(__name__)

REFUSALS_AUDITED_PER_SECOND: Final = 20
PURGE_INTERVAL_S: Final = 10.0
KEY_CACHE_SIZE: Final = 4096

AUTH_REFUSALS = Counter(
    "operator_api_auth_refusals_total", "Operator API requests refused, by code.", ["code"]
)
UNRECORDED_REFUSALS = Counter(
    "operator_audit_refusals_unrecorded_total",
    "Refusals of an identified key not written to the audit log (over the per-second bound).",
)
AUDIT_FAILURES = Counter(
    "operator_audit_failures_total", "Requests answered 503 because the audit could not be written."
)


@dataclass(frozen=True, slots=True)
class AuthenticatedKey:
    """The key a request was signed with, as the routes see it."""

    api_id: uuid.UUID
    name: str
    public_key: str
    settings: KeySettings

    @property
    def role(self) -> str:
        return self.settings.role


API_KEY: Final = web.RequestKey("api_key", AuthenticatedKey)
AUDIT_DETAIL: Final = web.RequestKey("audit_detail", dict[str, Any])
"""What a route changed, for its audit record (a key route sets it; never a secret)."""


@dataclass(frozen=True, slots=True)
class _Cached:
    fetched: float
    key: StoredKey | None
    secret: str


class KeyCache:
    """Keys by public key, with their secrets decrypted, trusted for ``ttl_s`` (unknown keys
    too, so a stream of made-up keys costs one lookup each per TTL at most); bounded."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        master: MasterKeys,
        ttl_s: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        size: int = KEY_CACHE_SIZE,
    ) -> None:
        self._pool = pool
        self._master = master
        self._ttl = ttl_s
        self._clock = clock
        self._size = size
        self._entries: dict[str, _Cached] = {}

    async def get(self, public_key: str) -> tuple[StoredKey, str] | None:
        """The key and its secret, or None for an unknown key."""
        now = self._clock()
        cached = self._entries.get(public_key)
        if cached is None or now - cached.fetched > self._ttl:
            key = await key_by_public_key(self._pool, public_key)
            secret = "" if key is None else key.secret(self._master)
            cached = _Cached(now, key, secret)
            if len(self._entries) >= self._size and public_key not in self._entries:
                del self._entries[next(iter(self._entries))]  # the oldest entry
            self._entries[public_key] = cached
        return None if cached.key is None else (cached.key, cached.secret)


class ReplayStore:
    """Signatures already accepted within the window, in Postgres, so that every replica of the
    operator API refuses a replay of a request another one accepted."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def first_use(self, digest: bytes, expires_at_ms: int) -> bool:
        """Record a signature; False when it was recorded before (a replay)."""
        expires = datetime.fromtimestamp(expires_at_ms / 1000, UTC)
        inserted = await self._pool.fetchval(
            """INSERT INTO operator_seen_signatures (digest, expires_at) VALUES ($1, $2)
               ON CONFLICT (digest) DO NOTHING RETURNING true""",
            digest,
            expires,
        )
        return bool(inserted)

    async def purge(self) -> int:
        """Forget signatures whose timestamp has left the window (a range on the index)."""
        status = await self._pool.execute(
            "DELETE FROM operator_seen_signatures WHERE expires_at < now()"
        )
        return int(status.split()[-1])


def unix_ms() -> int:
    """Wall-clock Unix time in milliseconds."""
    return time.time_ns() // 1_000_000


class Authenticator:
    """Decides whether a signed request may go on, and as which key."""

    def __init__(
        self,
        keys: KeyCache,
        replays: ReplayStore,
        ips: IpPolicy,
        window_ms: int,
        *,
        clock_ms: Callable[[], int] = unix_ms,
    ) -> None:
        self._keys = keys
        self._replays = replays
        self._ips = ips
        self._window_ms = window_ms
        self._clock_ms = clock_ms

    async def identify(self, request: web.Request) -> tuple[SignedHeaders, StoredKey, str]:
        """The request's headers and its key (with its secret); :class:`Refused` when the
        headers are malformed or the key unknown."""
        signed = read_signed_headers(request.headers)
        found = await self._keys.get(signed.public_key)
        if found is None:
            raise Refused("unknown_api_key")
        return signed, found[0], found[1]

    async def check(
        self, request: web.Request, signed: SignedHeaders, key: StoredKey, secret: str
    ) -> AuthenticatedKey:
        """Every check after the key is known; :class:`Refused` for the first that fails."""
        if not key.is_active:
            raise Refused("api_key_inactive")
        peer = request.transport.get_extra_info("peername") if request.transport else None
        client = self._ips.client_ip(
            peer[0] if isinstance(peer, tuple) else "",
            request.headers.getall("X-Forwarded-For", ()),
        )
        if client is None or not key.allows_address(client):
            raise Refused("ip_not_whitelisted")
        if not within_window(signed.timestamp_ms, self._clock_ms(), self._window_ms):
            raise Refused("timestamp_out_of_window")
        # Read here, after the cheap checks: the signature covers the raw bytes as received.
        body = await request.read()
        if not signature_matches(secret, signed, body):
            raise Refused("signature_mismatch")
        digest = replay_digest(signed)
        if not await self._replays.first_use(digest, expires_at_ms(signed, self._window_ms)):
            raise Refused("signature_replayed")
        if not role_allows(key.settings.role, request.method, request.path):
            raise Refused("role_forbidden", f"a {key.settings.role} key may not do this")
        return AuthenticatedKey(key.api_id, key.name, key.public_key, key.settings)


class RefusalBudget:
    """At most ``per_second`` refusals recorded per second (a token bucket)."""

    def __init__(self, per_second: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._rate = float(per_second)
        self._tokens = float(per_second)
        self._clock = clock
        self._last = clock()

    def take(self) -> bool:
        """Whether one more refusal may be recorded now."""
        now = self._clock()
        self._tokens = min(self._rate, self._tokens + (now - self._last) * self._rate)
        self._last = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False


def _route(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else request.path


def _outcome(response: web.StreamResponse) -> str:
    """The error code of a JSON error answer, ``ok`` for a success."""
    if response.status < 400:
        return "ok"
    body = response.body if isinstance(response, web.Response) else None
    if isinstance(body, bytes):
        try:
            code = orjson.loads(body).get("error")
        except (orjson.JSONDecodeError, AttributeError):
            code = None
        if isinstance(code, str):
            return code[:64]
    return f"http_{response.status}"


AUTHENTICATOR: Final = web.AppKey("authenticator", Authenticator)
KEY_POOL: Final = web.AppKey("key_pool", asyncpg.Pool)


def _body_digest(body: bytes | None) -> bytes:
    return hashlib.sha256(body or b"").digest()


async def _read_body(request: web.Request) -> bytes | None:
    """The body, or None when it is over the size limit (then it was never read whole)."""
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        return None


def operator_auth_middleware(prefix: str = "/v1/") -> Middleware:
    """Authenticate, authorise and audit every request under ``prefix``, with the application's
    :data:`AUTHENTICATOR` and :data:`KEY_POOL` (see :func:`operator_keys_context`). It runs
    before routing errors are answered, so an unauthenticated caller learns nothing about which
    routes exist (the operational routes are on a port of their own)."""
    budget = RefusalBudget(REFUSALS_AUDITED_PER_SECOND)

    async def record(
        request: web.Request, api_id: uuid.UUID | None, status: int, outcome: str
    ) -> None:
        await audit.append_to(
            request.app[KEY_POOL],
            audit.AuditRecord(
                at=audit.now(),
                api_id=api_id,
                method=request.method,
                route=_route(request),
                path=request.path,
                body_sha256=_body_digest(await _read_body(request)),
                status=status,
                outcome=outcome,
                detail=request.get(AUDIT_DETAIL, {}),
            ),
        )

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith(prefix):
            return await handler(request)
        authenticator = request.app[AUTHENTICATOR]
        key: StoredKey | None = None
        try:
            signed, key, secret = await authenticator.identify(request)
            request[API_KEY] = await authenticator.check(request, signed, key, secret)
        except Refused as exc:
            AUTH_REFUSALS.labels(exc.code).inc()
            refusal = json_error(exc.code, exc.message)
            if key is not None:
                if budget.take():
                    await _audited(record(request, key.api_id, refusal.status, exc.code))
                else:
                    UNRECORDED_REFUSALS.inc()
            return refusal
        except web.HTTPRequestEntityTooLarge:
            assert key is not None  # the body is read only once the key is known
            await _audited(record(request, key.api_id, 400, "body_too_large"))
            return json_error("body_too_large")
        except DATABASE_AWAY as exc:
            log.warning("operator_auth_database_unavailable", error=repr(exc))
            return json_error("unavailable", "The key store is unavailable; retry the request.")
        except MasterKeyError:
            # A secret no configured master key opens: a rotation went wrong. Ours to fix.
            log.error("operator_key_undecryptable", api_id=str(key.api_id) if key else None)
            return json_error("internal_error")
        api_id = request[API_KEY].api_id
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            await _audited(record(request, api_id, exc.status, f"http_{exc.status}"))
            raise
        except Exception:
            await _audited(record(request, api_id, 500, "internal_error"))
            raise
        try:
            await record(request, api_id, response.status, _outcome(response))
        except (*DATABASE_AWAY, asyncpg.PostgresError) as exc:
            # An action that can not be audited is not answered as done: the caller retries
            # (writes are idempotent) once the database is back.
            AUDIT_FAILURES.inc()
            log.error("operator_audit_failed", error=repr(exc), path=request.path)
            return json_error("unavailable", "The audit log is unavailable; retry the request.")
        return response

    return middleware


async def _audited(append: Any) -> None:
    """Append a record for a refused or failed request; a failure to do so is logged (the
    request is refused or failed anyway)."""
    try:
        await append
    except (*DATABASE_AWAY, asyncpg.PostgresError) as exc:
        AUDIT_FAILURES.inc()
        log.error("operator_audit_failed", error=repr(exc))


async def purge_seen_signatures(replays: ReplayStore, stop: asyncio.Event) -> None:
    """Every :data:`PURGE_INTERVAL_S`, forget signatures that left the window."""
    while not stop.is_set():
        try:
            await replays.purge()
        except (*DATABASE_AWAY, asyncpg.PostgresError) as exc:
            log.warning("seen_signatures_purge_failed", error=repr(exc))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), PURGE_INTERVAL_S)


def operator_keys_context(
    master: MasterKeys,
    *,
    dsn: str,
    window_ms: int,
    cache_ttl_ms: int,
    trusted_proxies: list[str],
) -> Callable[[web.Application], AsyncIterator[None]]:
    """The cleanup context that opens the key store's pool (lazily connecting, so the service
    starts, and reports not ready, while Postgres is away), sets :data:`AUTHENTICATOR` and
    :data:`KEY_POOL`, and purges seen signatures while the application runs."""

    async def context(app: web.Application) -> AsyncIterator[None]:
        pool = await asyncpg.create_pool(dsn, min_size=0, max_size=4)
        replays = ReplayStore(pool)
        app[KEY_POOL] = pool
        # Without the key store no request can be authenticated: not ready while it is away.
        app[READINESS].append(postgres_check(pool))
        app[AUTHENTICATOR] = Authenticator(
            KeyCache(pool, master, cache_ttl_ms / 1000),
            replays,
            IpPolicy((), trusted_proxies),
            window_ms,
        )
        stop = asyncio.Event()
        task = asyncio.create_task(purge_seen_signatures(replays, stop))
        try:
            yield
        finally:
            stop.set()
            await task
            await pool.close()

    return context
