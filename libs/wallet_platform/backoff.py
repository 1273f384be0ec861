"""Pauses between retries of something that is away (a database, a broker): doubling from
``first`` up to ``cap`` seconds, back to ``first`` once an attempt succeeded."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Backoff:
    """The pauses between attempts: ``first``, twice that, ... up to ``cap``."""

    first: float = 0.1
    cap: float = 5.0
    _next: float = 0.0

    def next(self) -> float:
        """The pause before the next attempt."""
        delay = self._next or self.first
        self._next = min(self.cap, delay * 2)
        return delay

    def reset(self) -> None:
        """An attempt succeeded: start from ``first`` again next time."""
        self._next = 0.0

    @property
    def engaged(self) -> bool:
        """Whether an attempt failed since the last :meth:`reset`."""
        return self._next != 0.0
