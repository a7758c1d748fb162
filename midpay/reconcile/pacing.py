"""How fast, and whether, reconcile keeps calling Midtrans: the rate limiter and the circuit breaker's count.

Both are shared by the worker threads of one run and decide before each call, so a
run stops calling the moment the breaker opens, not when its loop gets to the result.
"""

from __future__ import annotations

import threading
import time

from midpay.errors import GatewayError, GatewayUnreachable


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


class Breaker:
    """Counts failed calls in a row; opens (sets ``stop``) at ``threshold`` of them, or at once when unreachable."""

    def __init__(self, threshold: int, stop: threading.Event) -> None:
        self.threshold = threshold
        self._stop = stop
        self._failures = 0
        self._lock = threading.Lock()
        self.opened_by: GatewayError | None = None  # the failure that opened it

    def failed(self, exc: GatewayError) -> None:
        """A call could not reach Midtrans or got no usable answer."""
        with self._lock:
            self._failures += 1
            if isinstance(exc, GatewayUnreachable) or self._failures >= self.threshold:
                self.opened_by = self.opened_by or exc
                self._stop.set()

    def answered(self) -> None:
        """Midtrans answered a call: the count starts again."""
        with self._lock:
            self._failures = 0
