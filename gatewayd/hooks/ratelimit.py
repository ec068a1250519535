# -*- test-case-name: tests.unit.test_hooks -*-
"""
Rate-limited warnings, so that a plugin failing on every message cannot
flood the logs (or slow the gateway down by logging).

Each key (e.g. plugin + hook) logs at most once per C{interval}; the next
line that gets through says how many were suppressed in between.
"""

from __future__ import annotations

from typing import Any, Hashable

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger, LogLevel

__all__ = ["RateLimitedLog"]


class RateLimitedLog:
    """At most one event per key per C{interval} seconds of C{clock} time."""

    def __init__(self, log: Logger, clock: IReactorTime, interval: float = 10.0) -> None:
        self._log = log
        self._clock = clock
        self._interval = interval
        self._last: dict[Hashable, float] = {}
        self._suppressed: dict[Hashable, int] = {}

    def emit(self, key: Hashable, level: LogLevel, format: str, **fields: Any) -> bool:
        """
        Log unless C{key} logged less than C{interval} ago.
        @return: whether the event was logged.
        """
        now = self._clock.seconds()
        last = self._last.get(key)
        if last is not None and now - last < self._interval:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return False
        self._last[key] = now
        suppressed = self._suppressed.pop(key, 0)
        if suppressed:
            format += " ({suppressed} similar events suppressed)"
        self._log.emit(level, format, suppressed=suppressed, **fields)
        return True

    def forget(self, key: Hashable) -> None:
        """Drop the state of C{key} (e.g. when its plugin goes away)."""
        self._last.pop(key, None)
        self._suppressed.pop(key, None)
