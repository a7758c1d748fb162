"""Recording attempts in groups: the workers that finish while one group is being written form the next.

Each worker hands its attempt over and waits for its delivery's new status. The first
to arrive while no write is under way writes everything queued so far in one statement
(db/deliveries.py ``record_attempts``); the others wait for it, and whoever finds its
attempt still queued after that write leads the next. One statement per group instead
of one per attempt keeps PostgreSQL's load and the deliverer's CPU per delivery down,
and no attempt waits longer than one write.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from midpay.db import deliveries as store


@dataclass
class _Queued:
    delivery: store.Delivery
    attempt: store.Attempt
    retry_in: float
    done: bool = False
    status: str | None = None
    failure: BaseException | None = field(default=None, repr=False)


class Recorder:
    """Group-commits attempts over a pool of connections."""

    def __init__(self, pool: Any, *, give_up_after: float) -> None:
        self._pool = pool
        self._give_up_after = give_up_after
        self._changed = threading.Condition()
        self._queue: list[_Queued] = []
        self._writing = False

    def record(self, delivery: store.Delivery, attempt: store.Attempt, retry_in: float) -> str | None:
        """Keep the attempt; the delivery's status afterwards (None: it was no longer pending)."""
        mine = _Queued(delivery, attempt, retry_in)
        with self._changed:
            self._queue.append(mine)
            while self._writing and not mine.done:
                self._changed.wait()
            if not mine.done:
                self._writing = True
                group, self._queue = self._queue, []
        if not mine.done:
            self._write(group)
        if mine.failure is not None:
            raise mine.failure
        return mine.status

    def _write(self, group: list[_Queued]) -> None:
        try:
            with self._pool.connection() as conn:
                conn.autocommit = True  # one statement, one round trip
                statuses = store.record_attempts(
                    conn, [(q.delivery, q.attempt, q.retry_in) for q in group], give_up_after=self._give_up_after
                )
            for q in group:
                q.status = statuses.get((q.delivery.event_id, q.delivery.endpoint_id))
        except BaseException as exc:
            for q in group:
                q.failure = exc
            raise
        finally:
            with self._changed:
                for q in group:
                    q.done = True
                self._writing = False
                self._changed.notify_all()
