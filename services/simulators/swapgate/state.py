"""The simulator's in-memory state: API keys, request authentication and orders.

No I/O here: the HTTP layer passes in parsed requests and the current time.
"""

from __future__ import annotations

import base64
import heapq
import ipaddress
import secrets
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from simulators.swapgate.market import Market, MarketInstrument, Settlement, iso
from swapgate.errors import SwapgateError
from swapgate.markup import MarkupPolicy
from swapgate.signing import HEADER_PUBLIC_KEY, HEADER_SIGNATURE, HEADER_TIMESTAMP, verify
from swapgate.wire import RateMode, decimal_text

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(slots=True)
class SimKey:
    """An API key as the simulator stores it (with its secret)."""

    api_id: int
    name: str
    is_active: bool
    public_key: str
    secret_key: str
    white_list_ip: tuple[str, ...]
    networks: tuple[IpNetwork, ...]
    settings: dict[str, object]
    created_at: datetime

    def listed(self) -> dict[str, object]:
        """The key as ``list-api-key`` shows it: never the secret."""
        return {
            "apiId": self.api_id,
            "name": self.name,
            "isActive": self.is_active,
            "settings": self.settings,
            "publicKey": self.public_key,
            "whiteListIp": list(self.white_list_ip),
            "createdAt": iso(self.created_at),
        }

    def generated(self) -> dict[str, object]:
        """The key as ``generate-api-key`` answers, the one time the secret is shown."""
        shown = self.listed()
        del shown["settings"]
        return {**shown, "secretKey": self.secret_key}

    def allows(self, remote: str | None) -> bool:
        """Whether a request from address ``remote`` is within the whitelist."""
        if remote is None:
            return False
        try:
            address = ipaddress.ip_address(remote)
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self.networks)

    def markup_policy(self) -> MarkupPolicy:
        """The key's markup bounds (``minMarkup``/``maxMarkup`` settings)."""
        return MarkupPolicy.from_key_settings(self.settings)


def parse_whitelist(entries: Iterable[str]) -> tuple[IpNetwork, ...]:
    """Whitelist entries (addresses or CIDR ranges) as networks; ValueError if one is bad."""
    return tuple(ipaddress.ip_network(entry, strict=False) for entry in entries)


class KeyRing:
    """All API keys, by public key."""

    def __init__(self) -> None:
        self._by_public: dict[str, SimKey] = {}
        self._next_id = 1

    def add(
        self,
        *,
        name: str,
        white_list_ip: Iterable[str],
        is_active: bool,
        now: datetime,
        public_key: str | None = None,
        secret_key: str | None = None,
        settings: Mapping[str, object] | None = None,
    ) -> SimKey:
        """Store a key; fresh random key material unless given (the /_sim/ seeding hook)."""
        whitelist = tuple(white_list_ip)
        key = SimKey(
            api_id=self._next_id,
            name=name,
            is_active=is_active,
            # Same formats as the document's example: base64 of 32 bytes, hex of 32 bytes.
            public_key=public_key or base64.b64encode(secrets.token_bytes(32)).decode("ascii"),
            secret_key=secret_key or secrets.token_hex(32),
            white_list_ip=whitelist,
            networks=parse_whitelist(whitelist),
            settings=dict(settings or {}),
            created_at=now,
        )
        key.markup_policy()  # refuse unusable settings now, not on the first order
        self._next_id += 1
        self._by_public[key.public_key] = key
        return key

    def find(self, public_key: str) -> SimKey | None:
        """The key with this public key, if any."""
        return self._by_public.get(public_key)

    def by_id(self, api_id: int) -> SimKey | None:
        """The key with this id, if any."""
        return next((k for k in self._by_public.values() if k.api_id == api_id), None)

    def all(self) -> list[SimKey]:
        """Every key, oldest first."""
        return sorted(self._by_public.values(), key=lambda k: k.api_id)


class AuthFailure(Exception):
    """A v2 request refused with 403; ``code`` says why."""

    def __init__(self, code: str, message: str):
        self.code = code
        super().__init__(message)


class Authenticator:
    """Checks API v2 requests: key, whitelist, timestamp window, signature, replay.

    The signature is verified over the raw body bytes as received (an empty body for a GET).
    A signature already accepted inside the window is refused as a replay; it is forgotten once
    its timestamp is out of the window, when the timestamp check refuses it anyway. Only requests
    with a body (those that change something) are checked for replay: a read signs an empty body
    and no path, so two reads of one key in the same millisecond are legitimately identical.
    """

    def __init__(self, keys: KeyRing, window_ms: int, clock_ms: Callable[[], int]):
        self._keys = keys
        self._window_ms = window_ms
        self._clock_ms = clock_ms
        self._seen: set[str] = set()
        self._expiries: list[tuple[int, str]] = []

    def check(self, headers: Mapping[str, str], body: bytes, remote: str | None) -> SimKey:
        """The key that signed this request, or :class:`AuthFailure`."""
        public_key = headers.get(HEADER_PUBLIC_KEY)
        timestamp = headers.get(HEADER_TIMESTAMP)
        signature = headers.get(HEADER_SIGNATURE)
        if not public_key or not timestamp or not signature:
            raise AuthFailure("missing_auth_headers", "all three x-api-* headers are required")
        key = self._keys.find(public_key)
        if key is None:
            raise AuthFailure("unknown_key", "unknown API key")
        if not key.is_active:
            raise AuthFailure("inactive_key", "API key is deactivated")
        if not key.allows(remote):
            raise AuthFailure("ip_not_whitelisted", f"IP {remote} is not whitelisted for this key")
        if not timestamp.isdigit() or not timestamp.isascii():
            raise AuthFailure("bad_timestamp", "x-api-timestamp must be Unix milliseconds")
        sent_ms = int(timestamp)
        now_ms = self._clock_ms()
        if abs(now_ms - sent_ms) > self._window_ms:
            raise AuthFailure(
                "stale_timestamp",
                f"x-api-timestamp is {now_ms - sent_ms} ms off; the window is "
                f"±{self._window_ms} ms",
            )
        if not verify(key.secret_key, sent_ms, body, public_key, signature):
            raise AuthFailure("bad_signature", "signature does not match")
        self._forget_expired(now_ms)
        if not body:
            return key
        if signature in self._seen:
            raise AuthFailure("replayed_signature", "this signed request was already received")
        self._seen.add(signature)
        heapq.heappush(self._expiries, (sent_ms + self._window_ms, signature))
        return key

    def _forget_expired(self, now_ms: int) -> None:
        while self._expiries and self._expiries[0][0] < now_ms:
            _, signature = heapq.heappop(self._expiries)
            self._seen.discard(signature)


class Stage(StrEnum):
    """Order statuses as the simulator reports them."""

    CREATED = "created"
    DEPOSIT_DETECTED = "deposit_detected"
    EXCHANGING = "exchanging"
    COMPLETED = "completed"
    REFUNDED = "refunded"
    FAILED = "failed"


FINAL_STAGES = frozenset({Stage.COMPLETED, Stage.REFUNDED, Stage.FAILED})

# The path an order walks for each ending chosen (default: completed).
PATHS: dict[Stage, tuple[Stage, ...]] = {
    Stage.COMPLETED: (Stage.CREATED, Stage.DEPOSIT_DETECTED, Stage.EXCHANGING, Stage.COMPLETED),
    Stage.REFUNDED: (Stage.CREATED, Stage.DEPOSIT_DETECTED, Stage.REFUNDED),
    Stage.FAILED: (Stage.CREATED, Stage.DEPOSIT_DETECTED, Stage.EXCHANGING, Stage.FAILED),
}


@dataclass(slots=True)
class SimOrder:
    """One order and how far it got."""

    order_id: str
    api_id: int
    rate_mode: RateMode
    source: MarketInstrument
    target: MarketInstrument
    claimed_deposit_amount: Decimal
    markup: Decimal
    amount_to_get: Decimal
    body: dict[str, object]
    deposit_address: str
    created_at: datetime
    stage_since: datetime
    stage: Stage = Stage.CREATED
    ending: Stage = Stage.COMPLETED
    reason: str | None = None
    settlement: Settlement | None = None
    history: list[tuple[Stage, datetime]] = field(default_factory=list)

    def view(self) -> dict[str, object]:
        """The order as the create and status endpoints answer (see docs)."""
        body = self.body
        out: dict[str, object] = {
            "id": self.order_id,
            "status": self.stage.value,
            "rateMode": self.rate_mode.value,
            "instrumentFrom": body["instrumentFrom"],
            "instrumentTo": body["instrumentTo"],
            "destinationAddress": body["destinationAddress"],
            "destinationAddressMemo": body.get("destinationAddressMemo"),
            "refundAddress": body.get("refundAddress"),
            "refundAddressMemo": body.get("refundAddressMemo"),
            "referrerId": body.get("referrerId"),
            "legacyOrderId": body.get("legacyOrderId"),
            "claimedDepositAmount": decimal_text(self.claimed_deposit_amount),
            "markup": decimal_text(self.markup),
            "amountToGet": decimal_text(self.amount_to_get),
            "depositAddress": self.deposit_address,
            "depositAddressMemo": None,
            "createdAt": iso(self.created_at),
            "updatedAt": iso(self.history[-1][1] if self.history else self.created_at),
            "events": [{"status": stage.value, "at": iso(at)} for stage, at in self.history],
        }
        if self.stage != Stage.CREATED:
            # The simulator's customer always deposits exactly the claimed amount.
            out["amountReceived"] = decimal_text(self.claimed_deposit_amount)
        if self.stage == Stage.REFUNDED:
            out["amountRefunded"] = decimal_text(self.claimed_deposit_amount)
        if self.stage in (Stage.REFUNDED, Stage.FAILED):
            out["failureReason"] = self.reason
        s = self.settlement
        if self.stage == Stage.COMPLETED and s is not None:
            out.update(
                amountReceived=decimal_text(s.amount_received),
                exchangeAmount=decimal_text(s.exchange_amount),
                amountPaidOut=decimal_text(s.amount_paid_out),
                payoutRoundingRemainder=decimal_text(s.payout_rounding_remainder),
                networkFee=decimal_text(s.network_fee),
                platformMargin=decimal_text(s.platform_margin),
                affiliateMargin=decimal_text(s.affiliate_margin),
            )
        return out


class EndingRefused(Exception):
    """An ending cannot be chosen any more (the order is already final)."""


class OrderBook:
    """All orders, and the timed walk of each through its lifecycle."""

    def __init__(self, market: Market, step_s: float):
        self._market = market
        self._step_s = step_s
        self._orders: dict[str, SimOrder] = {}

    def create(
        self,
        *,
        api_id: int,
        rate_mode: RateMode,
        source: MarketInstrument,
        target: MarketInstrument,
        claimed: Decimal,
        markup: Decimal,
        amount_to_get: Decimal,
        body: dict[str, object],
        now: datetime,
    ) -> SimOrder:
        """Record a new order in stage ``created``."""
        order = SimOrder(
            order_id=str(uuid.uuid4()),
            api_id=api_id,
            rate_mode=rate_mode,
            source=source,
            target=target,
            claimed_deposit_amount=claimed,
            markup=markup,
            amount_to_get=amount_to_get,
            body=body,
            deposit_address=f"sim-{source.network.lower()}-{secrets.token_hex(16)}",
            created_at=now,
            stage_since=now,
            history=[(Stage.CREATED, now)],
        )
        self._orders[order.order_id] = order
        return order

    def get(self, order_id: str) -> SimOrder | None:
        """The order, if it exists."""
        return self._orders.get(order_id)

    def choose_ending(self, order_id: str, ending: Stage, reason: str | None) -> SimOrder | None:
        """Make the order end as ``ending``; None if unknown, EndingRefused if already final."""
        order = self._orders.get(order_id)
        if order is None:
            return None
        if order.stage in FINAL_STAGES:
            raise EndingRefused(f"order {order_id} already ended as {order.stage.value}")
        order.ending = ending
        order.reason = reason
        return order

    def advance(self, now: datetime) -> list[SimOrder]:
        """Move every order that spent ``step_s`` in its stage one stage on; return those moved."""
        moved = []
        for order in self._orders.values():
            if order.stage in FINAL_STAGES:
                continue
            if (now - order.stage_since).total_seconds() < self._step_s:
                continue
            path = PATHS[order.ending]
            # An ending chosen late may not pass through the current stage: go straight to it.
            position = path.index(order.stage) if order.stage in path else len(path) - 2
            next_stage = path[position + 1]
            if next_stage == Stage.COMPLETED:
                try:
                    order.settlement = self._market.settle(
                        order.source, order.target, order.claimed_deposit_amount, order.markup
                    )
                except (SwapgateError, ArithmeticError) as exc:
                    # Fail the order once rather than retrying a settlement that cannot work.
                    next_stage, order.reason = Stage.FAILED, f"settlement failed: {exc}"
            elif next_stage in (Stage.REFUNDED, Stage.FAILED) and order.reason is None:
                order.reason = f"{next_stage.value} by the simulator"
            order.stage = next_stage
            order.stage_since = now
            order.history.append((next_stage, now))
            moved.append(order)
        return moved
