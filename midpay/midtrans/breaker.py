"""The circuit breaker on calls to Midtrans: one, for every run that makes many calls (reconcile, replay).

It counts failed calls in a row and opens at ``threshold`` of them, or at once when
Midtrans cannot be reached at all (``GatewayUnreachable``); a call that Midtrans
answered starts the count again. Open, it stays open for the rest of the run: no call
is made any more, and ``opened_by`` says which failure opened it. The callers decide
what counts as a failure. Shared by the worker threads of a run; with ``stop``, it
sets that event the moment it opens, so that no worker starts another call.
"""

from __future__ import annotations

import threading

from midpay.errors import GatewayUnreachable, MidpayError


class Breaker:
    """Failed calls to Midtrans in a row; open at ``threshold`` of them, or at once when unreachable."""

    def __init__(self, threshold: int = 1, stop: threading.Event | None = None) -> None:
        self.threshold = max(1, threshold)
        self._stop = stop
        self._failures = 0
        self._lock = threading.Lock()
        self.opened_by: MidpayError | None = None  # the failure that opened it
        self.opened_after = 0  # the failed calls in a row that opened it

    def failed(self, exc: MidpayError) -> None:
        """A call could not reach Midtrans or got no usable answer."""
        with self._lock:
            self._failures += 1
            if self.opened_by is None and (isinstance(exc, GatewayUnreachable) or self._failures >= self.threshold):
                self.opened_by, self.opened_after = exc, self._failures
            if self.opened_by is not None and self._stop is not None:
                self._stop.set()

    def answered(self) -> None:
        """Midtrans answered a call: the count starts again (an open breaker stays open)."""
        with self._lock:
            self._failures = 0
