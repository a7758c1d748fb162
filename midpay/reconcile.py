"""``reconcile``: check every due open payment against Midtrans, concurrently.

Rows are claimed in batches (``last_checked_at`` stamped and committed), so an
overlapping run skips them; only a bounded window of rows is in memory at once. The
HTTP call holds no lock: a notification landing meanwhile applies at once, and the
forward-only rule keeps the later write from moving the row backwards.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from midpay import db, states
from midpay.apply import apply_answer, needs_write, synthetic_failure
from midpay.db.claims import REFUND_RECHECK_SECONDS
from midpay.errors import DependencyError, GatewayError, MidpayError, TransactionNotFound, UsageError
from midpay.notifications import parse_view
from midpay.refresh import CREATED_GRACE_SECONDS

if TYPE_CHECKING:
    from midpay.gateway import Gateway

# A row checked this recently (by this run or an overlapping one) is not due again:
# this is what keeps overlapping cron runs from checking the same row twice.
RECHECK_AFTER_SECONDS = 30.0



@dataclass(frozen=True)
class ReconcileResult:
    """One checked row, as CONTRACT.md reports it."""

    order_id: str
    status_before: str
    status_after: str
    error: str | None

    @property
    def changed(self) -> bool:
        return self.error is None and self.status_before != self.status_after


@dataclass
class ReconcileSummary:
    """Counts of a reconcile run."""

    checked: int = 0
    changed: int = 0
    unchanged: int = 0
    errors: int = 0
    fatal: DependencyError | None = field(default=None, repr=False)

    def add(self, result: ReconcileResult) -> None:
        self.checked += 1
        if result.error is not None:
            self.errors += 1
        elif result.changed:
            self.changed += 1
        else:
            self.unchanged += 1


class RateLimiter:
    """Spaces calls at least 1/rate seconds apart across threads (a ceiling, not a target)."""

    def __init__(self, rate: float | None):
        self._interval = 1.0 / rate if rate and rate > 0 else 0.0
        self._next = time.monotonic()
        self._lock = threading.Lock()

    def wait(self) -> None:
        if not self._interval:
            return
        with self._lock:
            now = time.monotonic()
            slot = max(self._next, now)
            self._next = slot + self._interval
        delay = slot - now
        if delay > 0:
            time.sleep(delay)


def count_due(
    conn: db.Connection,
    *,
    min_age: float,
    limit: int | None,
    recheck_after: float = RECHECK_AFTER_SECONDS,
    refund_recheck_after: float = REFUND_RECHECK_SECONDS,
) -> int:
    """How many rows a reconcile run would check now (for its progress bar)."""
    count = db.count_due(
        conn, statuses=states.OPEN_STATES, min_age=min_age, recheck_after=recheck_after,
        refund_recheck_after=refund_recheck_after,
    )
    conn.commit()
    return min(count, limit) if limit is not None else count


def reconcile(
    url: str,
    gateway: Gateway,
    *,
    min_age: float = 60.0,
    limit: int | None = None,
    concurrency: int = 8,
    max_rps: float | None = None,
    dry_run: bool = False,
    grace: float = CREATED_GRACE_SECONDS,
    recheck_after: float = RECHECK_AFTER_SECONDS,
    refund_recheck_after: float = REFUND_RECHECK_SECONDS,
    batch_size: int = 200,
    on_result: Callable[[ReconcileResult], None] | None = None,
) -> ReconcileSummary:
    """Check every due open row against Midtrans, ``concurrency`` at a time.

    Rows are claimed in batches (``last_checked_at`` stamped and committed), so an
    overlapping run skips them; only a bounded window of rows is in memory at once.
    The HTTP call holds no lock: a notification landing meanwhile applies at once,
    and the forward-only rule keeps the later write from moving the row backwards.
    """
    if concurrency < 1:
        raise UsageError("--concurrency must be at least 1")
    summary = ReconcileSummary()
    limiter = RateLimiter(max_rps)
    pool = db.open_pool(url, concurrency + 1)
    finished: queue.SimpleQueue[Future[ReconcileResult]] = queue.SimpleQueue()
    try:
        with db.translate_errors(), pool.connection() as conn:
            run_started = db.database_now(conn)
        with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="reconcile") as executor:
            in_flight = 0
            rows = _due_rows(
                pool,
                min_age=min_age,
                recheck_after=recheck_after,
                refund_recheck_after=refund_recheck_after,
                limit=limit,
                dry_run=dry_run,
                batch_size=batch_size,
                run_started=run_started,
            )
            for payment in rows:
                # A bounded window of rows in flight: memory stays flat however many are due.
                while in_flight >= concurrency * 2 and summary.fatal is None:
                    in_flight -= _collect(finished, summary, on_result)
                if summary.fatal is not None:
                    break
                future = executor.submit(_check_row, pool, gateway, limiter, payment, dry_run, grace)
                future.add_done_callback(finished.put)
                in_flight += 1
            while in_flight:
                in_flight -= _collect(finished, summary, on_result)
    finally:
        pool.close()
    return summary


def _collect(
    finished: queue.SimpleQueue[Future[ReconcileResult]],
    summary: ReconcileSummary,
    on_result: Callable[[ReconcileResult], None] | None,
) -> int:
    """Take at least one finished check off the queue (waiting for it); return how many."""
    taken = [finished.get()]
    while True:
        try:
            taken.append(finished.get_nowait())
        except queue.Empty:
            break
    for future in taken:
        try:
            result = future.result()
        except DependencyError as exc:  # the database went away: stop claiming more
            summary.fatal = summary.fatal or exc
            continue
        summary.add(result)
        if on_result is not None:
            on_result(result)
    return len(taken)


def _due_rows(
    pool: Any,
    *,
    min_age: float,
    recheck_after: float,
    refund_recheck_after: float,
    limit: int | None,
    dry_run: bool,
    batch_size: int,
    run_started: datetime,
) -> Iterator[db.Payment]:
    if dry_run:  # nothing is claimed: stream what would be, in claiming order
        with db.translate_errors(), pool.connection() as conn:
            yield from db.iter_due(
                conn, statuses=states.OPEN_STATES, min_age=min_age, recheck_after=recheck_after, limit=limit,
                refund_recheck_after=refund_recheck_after,
            )
        return
    remaining = limit
    while remaining is None or remaining > 0:
        size = batch_size if remaining is None else min(batch_size, remaining)
        with db.translate_errors(), pool.connection() as conn:
            rows = db.claim_due(
                conn,
                statuses=states.OPEN_STATES,
                min_age=min_age,
                recheck_after=recheck_after,
                limit=size,
                run_started=run_started,
                refund_recheck_after=refund_recheck_after,
            )
        if not rows:
            return
        yield from rows
        if remaining is not None:
            remaining -= len(rows)
        if len(rows) < size:
            return


def _check_row(
    pool: Any, gateway: Gateway, limiter: RateLimiter, payment: db.Payment, dry_run: bool, grace: float
) -> ReconcileResult:
    before = payment.status
    limiter.wait()
    try:
        try:
            answer = gateway.status(payment.order_id)
        except TransactionNotFound:
            age = (datetime.now(UTC) - payment.created_at).total_seconds()
            if payment.status != states.CREATED:
                return ReconcileResult(payment.order_id, before, before, "unknown at Midtrans (404)")
            if age < grace:
                return ReconcileResult(payment.order_id, before, before, None)
            answer = None
        if answer is not None and not dry_run:
            early = parse_view(answer, what="status answer")
            if not needs_write(payment, early) and not ({"refunds", "refund_amount"} & answer.keys()):
                # Nothing to write (apply_answer would change nothing): no transaction at all. An
                # answer reporting refunds may still bring the ledger news (refunds).
                return ReconcileResult(payment.order_id, before, before, None)
        with db.translate_errors(), pool.connection() as conn:
            if answer is None:
                view = synthetic_failure(
                    payment, "404", "the charge never reached Midtrans (unknown there after the grace period)", {}
                )
            else:
                view = parse_view(answer, what="status answer")
            if dry_run:
                current = db.get_payment(conn, payment.order_id)
                conn.rollback()
                now = current.status if current else before
                decision = states.decide(now, view.transaction_status)
                after = view.transaction_status if decision is states.Decision.APPLY else now
                return ReconcileResult(payment.order_id, now, after, None)
            result = apply_answer(conn, payment.order_id, view)
        if result.note and not result.applied and result.status_before in states.OPEN_STATES:
            return ReconcileResult(payment.order_id, before, result.status_after, result.note)
        return ReconcileResult(payment.order_id, before, result.status_after, None)
    except DependencyError as exc:
        if isinstance(exc, GatewayError):
            return ReconcileResult(payment.order_id, before, before, str(exc))
        raise
    except MidpayError as exc:
        return ReconcileResult(payment.order_id, before, before, str(exc))

