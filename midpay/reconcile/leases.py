"""The leases one reconcile run holds, and what it writes on them as its checks end (``db.claims``).

The run's loop queues each row's outcome here (completed, failed with its reason, or
released unchecked); the book writes them a few statements at a time, every
FLUSH_EVERY rows or FLUSH_SECONDS, and at the end. The writes are safe to repeat, so a
flush that fails keeps them queued for the next attempt. A thread renews the leases
while the run lives; the last write ends every lease the run still holds.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from midpay import db
from midpay.db import claims
from midpay.errors import Interrupted, MidpayError

if TYPE_CHECKING:
    from psycopg_pool import ConnectionPool

FLUSH_EVERY = 64  # rows whose outcome is waiting to be written
FLUSH_SECONDS = 0.25

T = TypeVar("T")


class LeaseBook:
    """One run's queued outcomes and its connection to PostgreSQL."""

    def __init__(
        self, pool: ConnectionPool[db.Connection], url: str, *, owner: uuid.UUID, lease_seconds: float, dry_run: bool
    ) -> None:
        self.pool, self.url, self.owner = pool, url, owner
        self.lease_seconds, self.dry_run = lease_seconds, dry_run
        self.released_total = 0  # rows given back unchecked over the whole run
        self._done: list[uuid.UUID] = []
        self._failed: list[tuple[uuid.UUID, str]] = []
        self._released: list[uuid.UUID] = []
        self._last_flush = 0.0

    def sql(self, work: Callable[[db.Connection], T], *, fresh: bool = False) -> T:
        """Run ``work`` on a pooled (or a ``fresh``) connection; a lost PostgreSQL becomes DatabaseUnavailable."""
        try:
            with db.connect(self.url) if fresh else self.pool.connection() as conn:
                return work(conn)
        except MidpayError:
            raise
        except Exception as exc:
            mapped = db.map_error(exc)
            if mapped is not None:
                raise mapped from exc
            raise

    def completed(self, row: uuid.UUID) -> None:
        self._done.append(row)

    def failed(self, row: uuid.UUID, reason: str) -> None:
        self._failed.append((row, reason))

    def released(self, row: uuid.UUID) -> None:
        self._released.append(row)
        self.released_total += 1

    def flush(self, *, force: bool = False, fresh: bool = False) -> None:
        """Write the queued outcomes: stamped, failed, released (a few statements for many rows)."""
        if self.dry_run:
            self._done, self._failed, self._released = [], [], []
            return
        queued = len(self._done) + len(self._failed) + len(self._released)
        now = time.monotonic()
        if not queued or (not force and queued < FLUSH_EVERY and now - self._last_flush < FLUSH_SECONDS):
            return
        done, failed, released = self._done, self._failed, self._released
        self._done, self._failed, self._released = [], [], []
        self._last_flush = now

        def write(conn: db.Connection) -> None:
            claims.complete(conn, owner=self.owner, ids=done)
            claims.fail(conn, owner=self.owner, failures=failed)
            claims.release(conn, owner=self.owner, ids=released)

        try:
            self.sql(write, fresh=fresh)
        except BaseException:  # keep them queued: the writes are safe to repeat
            self._done, self._failed = done + self._done, failed + self._failed
            self._released = released + self._released
            raise

    def close(self, on_error: Callable[[MidpayError], None]) -> None:
        """Write every outcome and end every lease the run still holds (its failed rows).

        A lost connection may be one of several the pool holds: the writes are tried
        again on a fresh, unpooled one (refused at once if the server is gone) before
        the leases are left to expire on their own. Each error goes to ``on_error``.
        """
        if self.dry_run:
            return
        for fresh in (False, True):
            try:
                self.flush(force=True, fresh=fresh)
                self.sql(lambda conn: claims.finish(conn, owner=self.owner), fresh=fresh)
                return
            except MidpayError as exc:
                on_error(exc)
            except KeyboardInterrupt:
                on_error(Interrupted("interrupted"))
                return

    def renew(self, stop: threading.Event) -> None:
        """Keep the leases alive until ``stop`` (a thread's target)."""
        interval = max(0.5, self.lease_seconds / 4)
        while not stop.wait(interval):
            try:
                self.sql(lambda conn: claims.renew_leases(conn, owner=self.owner, lease_seconds=self.lease_seconds))
            except MidpayError:
                continue  # the loop finds out on its own next statement
