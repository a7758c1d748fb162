"""One line per request, as it happens: ``sandbox serve``'s access log.

    12:04:05.123 GET /v2/order-1/status 200 201 0.4ms

Time of day, method, the path exactly as the client sent it (percent-encoding kept,
the query string left out, anything unprintable shown as ``\\xNN``), the HTTP status,
the body's ``status_code`` (``-`` when the body has none) and the time from reading
the request to sending the answer (injected latency included). ``- -`` means no
answer was sent (a stall cut short by stop, or the client hung up). Headers are never
logged, so neither is the server key.

Lines go through a bounded queue to one writer thread: a log nobody reads (a full
pipe) drops lines and says how many, instead of stalling the API.
"""

from __future__ import annotations

import queue
import sys
import threading
import time
from collections.abc import Callable
from typing import TextIO

QUEUE_SIZE = 10_000
_PRINTABLE = frozenset(range(0x21, 0x7F))


def shown_path(target: str) -> str:
    """The request target's path as sent, unprintable characters escaped."""
    path = target.split("?", 1)[0]
    if all(ord(ch) in _PRINTABLE for ch in path):
        return path
    return "".join(ch if ord(ch) in _PRINTABLE else f"\\x{ord(ch):02x}" if ord(ch) < 256 else "?" for ch in path)


class LineWriter:
    """Whole lines to a text stream, flushed at once, never interleaved."""

    def __init__(self, stream: Callable[[], TextIO] | None = None) -> None:
        self._stream = stream or (lambda: sys.stdout)
        self._lock = threading.Lock()
        self.broken = False

    def __call__(self, line: str) -> None:
        with self._lock:
            if self.broken:
                return
            stream = self._stream()
            try:
                stream.write(line + "\n")
                stream.flush()
            except (OSError, ValueError):  # a closed pipe or file: stop writing, keep serving
                self.broken = True


class RequestLog:
    """Formats request lines and hands them to ``write`` from its own thread."""

    def __init__(self, write: Callable[[str], None]) -> None:
        self._write = write
        self._queue: queue.Queue[str | None] = queue.Queue(QUEUE_SIZE)
        self._dropped = 0
        self._dropped_lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="midpay-sandbox-log", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Write what is queued (for up to 2 s), then end the writer thread."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        try:
            self._queue.put(None, timeout=2)
        except queue.Full:
            return
        thread.join(timeout=2)

    def record(self, method: str, target: str, status: int | None, code: str | None, seconds: float) -> None:
        now = time.time()
        clock = time.strftime("%H:%M:%S", time.localtime(now)) + f".{int(now * 1000) % 1000:03d}"
        answer = f"{status} {code or '-'}" if status is not None else "- -"
        line = f"{clock} {method} {shown_path(target)} {answer} {seconds * 1000:.1f}ms"
        try:
            self._queue.put_nowait(line)
        except queue.Full:
            with self._dropped_lock:
                self._dropped += 1

    def _run(self) -> None:
        while True:
            line = self._queue.get()
            if line is None:
                return
            with self._dropped_lock:
                dropped, self._dropped = self._dropped, 0
            if dropped:
                self._write(f"({dropped} request log lines dropped: the log was not being read)")
            self._write(line)
