"""How fast reconcile calls Midtrans: the rate limiter, shared by the worker threads of one run.

Whether it keeps calling at all is the circuit breaker's (``midtrans.breaker``).
"""

from __future__ import annotations

import threading
import time


class RateLimiter:
    """Spaces calls at least 1/rate seconds apart across threads (a ceiling, not a target)."""

    def __init__(self, rate: float | None):
        self._interval = 1.0 / rate if rate and rate > 0 else 0.0
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self, stop: threading.Event) -> bool:
        """Wait for this caller's slot; False when ``stop`` was set meanwhile (or before)."""
        if not self._interval:
            return not stop.is_set()
        with self._lock:
            now = time.monotonic()
            slot = max(self._next, now)
            self._next = slot + self._interval
        return not stop.wait(slot - now) if slot > now else not stop.is_set()
