"""Everything the simulator remembers, in memory: customers, one-time URLs, limits, test hooks."""

from __future__ import annotations

import ipaddress
import time
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Final

from quadcode_gateway.tokens import Clock
from simulators.quadcode.config import IPNetwork, SimulatorConfig

MAX_RECORDED_EXCHANGES: Final = 2000


@dataclass(slots=True)
class Customer:
    """A registered customer and what Quadcode knows about their balances."""

    customer_id: str
    country_code: str
    ip: str
    email: str
    profile: dict[str, object]
    blocked: bool = False
    balance_currencies: dict[str, str] = field(default_factory=dict)
    """balance_id -> currency, bound by the first login URL for that balance (409 on mismatch)."""
    sessions: list[str] = field(default_factory=list)


@dataclass(slots=True)
class LoginToken:
    """The secret in a one-time trading-room URL."""

    customer_id: str
    balance_id: str
    used: bool = False


@dataclass(frozen=True, slots=True)
class Rules:
    """The rules ``/_sim/config`` may change at run time."""

    allowed_countries: frozenset[str]
    allowed_currencies: frozenset[str]
    allowed_ips: tuple[IPNetwork, ...]
    rate_limit: int
    retry_after: int | None

    @classmethod
    def from_config(cls, config: SimulatorConfig) -> Rules:
        """The rules the simulator was started with."""
        return cls(
            allowed_countries=config.allowed_countries,
            allowed_currencies=config.allowed_currencies,
            allowed_ips=config.allowed_ips,
            rate_limit=config.rate_limit,
            retry_after=config.retry_after,
        )

    def with_changes(self, **changes: object) -> Rules:
        """A copy with some rules replaced."""
        return replace(self, **changes)  # type: ignore[arg-type]

    def ip_allowed(self, address: str | None) -> bool:
        """Whether a caller at ``address`` passes the IP allowlist."""
        if address is None:
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.allowed_ips)


@dataclass(slots=True)
class ForcedResponse:
    """A canned answer (or delay) for the next matching gateway requests."""

    status: int | None
    body: object = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    path: str | None = None
    method: str | None = None
    times: int = 1

    def matches(self, method: str, path: str) -> bool:
        """Whether this applies to a request."""
        return (
            self.times > 0
            and (self.path is None or self.path in path)
            and (self.method is None or self.method.upper() == method)
        )


class RateLimiter:
    """At most ``limit`` requests per key in any one-second window (sliding)."""

    def __init__(self) -> None:
        self._hits: dict[str, deque[float]] = {}

    def allow(self, keys: list[str], limit: int, now: float) -> bool:
        """Count a request for every key, unless one of them is already at the limit.

        Refused requests are not counted, so a client that backs off gets through as soon as
        the window slides past its earlier requests.
        """
        if limit <= 0 or not keys:
            return True
        windows = []
        for key in keys:
            window = self._hits.setdefault(key, deque())
            while window and window[0] <= now - 1.0:
                window.popleft()
            if len(window) >= limit:
                return False
            windows.append(window)
        for window in windows:
            window.append(now)
        return True

    def clear(self) -> None:
        """Forget every count."""
        self._hits.clear()


class SimulatorState:
    """The simulator's memory. Single event loop, so no locks."""

    def __init__(self, config: SimulatorConfig, clock: Clock = time.monotonic) -> None:
        self.config = config
        self.clock = clock
        self.rules = Rules.from_config(config)
        self.public_base_url = f"http://{config.host}:{config.port}"
        self.customers: dict[str, Customer] = {}
        self.login_tokens: dict[str, LoginToken] = {}
        self.forced: list[ForcedResponse] = []
        self.exchanges: deque[dict[str, object]] = deque(maxlen=MAX_RECORDED_EXCHANGES)
        self.limiter = RateLimiter()

    def reset(self) -> None:
        """Back to the start-up configuration with no customers."""
        self.rules = Rules.from_config(self.config)
        self.customers.clear()
        self.login_tokens.clear()
        self.forced.clear()
        # A new buffer, not a cleared one: a request still in flight across the reset (held by a
        # forced delay after its client gave up) records into the buffer of its own time.
        self.exchanges = deque(maxlen=MAX_RECORDED_EXCHANGES)
        self.limiter.clear()

    def take_forced(self, method: str, path: str) -> ForcedResponse | None:
        """The first forced response matching this request, consuming one use of it."""
        for forced in self.forced:
            if forced.matches(method, path):
                forced.times -= 1
                if forced.times <= 0:
                    self.forced.remove(forced)
                return forced
        return None
