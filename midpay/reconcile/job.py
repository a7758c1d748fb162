"""``reconcile``: check every due open payment against Midtrans, concurrently, under leases.

A run leases rows a few at a time, just ahead of the workers (``db.claims``), renews
its leases while it lives and ends each one when the row's check ends: completed
(``last_checked_at`` stamped), failed (the attempt, the reason and a retry time
recorded on the row) or released (not checked: the run stopped first). A leased row
is due for no other run, so overlapping runs of any speed never check a row twice;
a run that dies leaves its leases to expire.

The workers only ask Midtrans (``refresh.ask``) and need no connection; the answers
that change a row come back to the loop, which writes them several rows to a
transaction (``writes``) and completes those rows' leases only once that transaction
has committed. So a run holds at most POOL_SIZE PostgreSQL connections whatever its
--concurrency. The HTTP call holds no lock: a notification landing meanwhile applies at
once, and the forward-only rule keeps the later write from moving the row backwards.

The run stops early, and says why in ``ReconcileSummary.fatal``, when Midtrans refuses
the server key (the first 401), when Midtrans cannot be reached (a refused connection,
or BREAKER_THRESHOLD failed calls in a row: the circuit breaker, ``midtrans.breaker``), when PostgreSQL is
lost, or when it is interrupted. Rows it did not get to are released, not failed.
"""

from __future__ import annotations

import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING

from midpay import db
from midpay.db import claims, schema
from midpay.errors import GatewayUnavailable, GatewayUnreachable, Interrupted, MidpayError, UsageError
from midpay.midtrans.breaker import Breaker
from midpay.payments import refresh
from midpay.payments.answers import Answered, apply_batch, preview_batch
from midpay.reconcile import writes
from midpay.reconcile.leases import LeaseBook
from midpay.reconcile.pacing import RateLimiter
from midpay.reconcile.row import (
    DONE,
    FAILED,
    FATAL,
    SKIPPED,
    TRANSPORT,
    WRITE,
    ReconcileResult,
    ReconcileSummary,
    RowCheck,
    check_row,
    line,
)

if TYPE_CHECKING:
    from psycopg_pool import ConnectionPool

    from midpay.midtrans.gateway import Gateway

__all__ = [
    "BREAKER_THRESHOLD", "LEASE_SECONDS", "POOL_SIZE", "RECHECK_AFTER_SECONDS", "ReconcileResult",
    "ReconcileSummary", "count_due", "reconcile",
]

# A row whose last check completed this recently is not due again.
RECHECK_AFTER_SECONDS = 30.0
# How long a claimed row stays reserved if the run holding it dies (renewed while it lives).
LEASE_SECONDS = 60.0
# Failed calls in a row (timeouts, 5xx after retries, garbage answers) that open the
# circuit breaker: this many, or twice --concurrency if that is more (the slow failures
# of the rows in flight arrive together); a refused connection opens it at once.
BREAKER_THRESHOLD = 5
# PostgreSQL connections one run holds at most, whatever its --concurrency: the loop's
# (claims, batched writes, lease outcomes), the lease renewer's, and --dry-run's listing.
POOL_SIZE = 3


def count_due(
    conn: db.Connection,
    *,
    min_age: float,
    limit: int | None,
    recheck_after: float,
    refund_recheck_after: float = claims.REFUND_RECHECK_SECONDS,
) -> int:
    """How many rows a reconcile run would check now (for its progress bar)."""
    count = claims.count_due(
        conn, min_age=min_age, recheck_after=recheck_after, refund_recheck_after=refund_recheck_after
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
    grace: float = refresh.CREATED_GRACE_SECONDS,
    recheck_after: float = RECHECK_AFTER_SECONDS,
    refund_recheck_after: float = claims.REFUND_RECHECK_SECONDS,
    lease_seconds: float = LEASE_SECONDS,
    breaker_threshold: int | None = None,
    on_result: Callable[[ReconcileResult], None] | None = None,
) -> ReconcileSummary:
    """Check every due open row against Midtrans, ``concurrency`` at a time (module docstring)."""
    if concurrency < 1:
        raise UsageError("--concurrency must be at least 1")
    pool = db.open_pool(url, POOL_SIZE)
    try:
        run = _Run(
            pool, gateway, url=url, concurrency=concurrency, max_rps=max_rps, dry_run=dry_run, grace=grace,
            lease_seconds=lease_seconds, on_result=on_result,
            breaker_threshold=breaker_threshold or max(BREAKER_THRESHOLD, 2 * concurrency),
        )
        run.execute(min_age=min_age, recheck_after=recheck_after, refund_recheck_after=refund_recheck_after,
                    limit=limit)
        return run.summary
    finally:
        pool.close()


class _Run:
    """One reconcile run: the claiming loop on the calling thread, the checks on workers."""

    def __init__(
        self, pool: ConnectionPool[db.Connection], gateway: Gateway, *, url: str, concurrency: int,
        max_rps: float | None, dry_run: bool, grace: float, lease_seconds: float, breaker_threshold: int,
        on_result: Callable[[ReconcileResult], None] | None,
    ) -> None:
        self.pool, self.gateway, self.url = pool, gateway, url
        self.concurrency, self.dry_run, self.grace = concurrency, dry_run, grace
        self.lease_seconds, self.breaker_threshold, self.on_result = lease_seconds, breaker_threshold, on_result
        self.limiter = RateLimiter(max_rps)
        self.owner = uuid.uuid4()
        self.stop = threading.Event()
        self.summary = ReconcileSummary()
        self.book = LeaseBook(pool, url, owner=self.owner, lease_seconds=lease_seconds, dry_run=dry_run)
        self._suspects: list[RowCheck] = []  # failed calls that may turn out to be an outage
        self._stopped_calling = False  # the breaker's opening was reported
        self.breaker = Breaker(breaker_threshold, self.stop)
        self.layout: schema.Layout | None = None  # the columns' limits, read once (refresh.ask checks answers)
        self._todo: queue.SimpleQueue[db.Payment | None] = queue.SimpleQueue()  # rows for the workers
        self._answers: queue.SimpleQueue[RowCheck] = queue.SimpleQueue()  # finished checks
        self._workers: list[threading.Thread] = []
        self._pending: list[Answered] = []  # answers waiting for their batch
        self._pending_since = 0.0

    # -- the loop -------------------------------------------------------------------

    def execute(self, *, min_age: float, recheck_after: float, refund_recheck_after: float, limit: int | None) -> None:
        window = max(2 * self.concurrency, 4)
        renewer = None if self.dry_run else threading.Thread(
            target=self.book.renew, args=(self.stop,), name="reconcile-lease", daemon=True
        )
        in_flight: dict[uuid.UUID, db.Payment] = {}  # handed to the workers, no outcome yet
        try:
            started = self.book.sql(db.database_now)
            self.layout = self.book.sql(_layout)
            rows = self._rows(min_age, recheck_after, refund_recheck_after, limit=limit, started=started)
            if renewer is not None:
                renewer.start()
            exhausted = False
            while not self.stop.is_set():
                if not exhausted and window - len(in_flight) >= max(1, self.concurrency // 2):
                    batch = rows(window - len(in_flight))
                    exhausted = len(batch) < window - len(in_flight)
                    for payment in batch:
                        in_flight[payment.id] = payment
                        self._todo.put(payment)
                        if len(self._workers) < min(self.concurrency, len(in_flight)):
                            self._start_worker()
                if not in_flight and not self._pending:
                    break
                for checked in self._finished(bool(in_flight)):
                    if in_flight.pop(checked.payment.id, None) is not None:
                        self._take(checked)
                if self._pending and (
                    len(self._pending) >= writes.BATCH_ROWS or not in_flight
                    or time.monotonic() - self._pending_since >= writes.BATCH_SECONDS
                ):
                    self._write()
                self.book.flush()
        except KeyboardInterrupt:
            self._fatal(Interrupted("interrupted"))
        except MidpayError as exc:
            self._fatal(exc)
        finally:
            self.stop.set()
            self._finish(in_flight)
            for _ in self._workers:
                self._todo.put(None)
            for worker in self._workers:
                worker.join()
        if renewer is not None:
            renewer.join(5)

    def _start_worker(self) -> None:
        worker = threading.Thread(target=self._work, name=f"reconcile-{len(self._workers)}", daemon=True)
        worker.start()
        self._workers.append(worker)

    def _work(self) -> None:
        """A worker thread: check the rows handed over until told to end (None); every row gets an answer."""
        while (payment := self._todo.get()) is not None:
            checked = RowCheck(payment, SKIPPED)  # what the loop hears if the check itself blew up
            try:
                checked = check_row(
                    payment, self.gateway, grace=self.grace, dry_run=self.dry_run, layout=self.layout,
                    limiter=self.limiter, stop=self.stop, breaker=self.breaker,
                )
            finally:
                self._answers.put(checked)

    def _finished(self, waiting: bool) -> list[RowCheck]:
        """The checks that finished: at least one if any is under way (or a batch is due), all that are there."""
        found: list[RowCheck] = []
        if waiting:
            timeout = 1.0
            if self._pending:
                timeout = max(0.0, self._pending_since + writes.BATCH_SECONDS - time.monotonic())
            try:
                found.append(self._answers.get(timeout=timeout))
            except queue.Empty:
                return found
        while True:
            try:
                found.append(self._answers.get_nowait())
            except queue.Empty:
                return found

    def _write(self) -> None:
        """Apply the answers waiting for their batch in one transaction; only then complete their leases."""
        batch, self._pending = self._pending, []
        if not batch:
            return
        apply = preview_batch if self.dry_run else apply_batch
        try:
            written = self.book.sql(lambda conn: apply(conn, batch))
        except BaseException:
            for answered in batch:  # nothing of the batch committed: due again for the next run
                self.book.released(answered.payment.id)
            raise
        for one in written:
            payment = one.answered.payment
            if one.checked is None:
                result = ReconcileResult(payment.order_id, payment.status, payment.status, one.failure)
            else:
                error = line(one.checked.problem) if one.checked.problem is not None else None
                result = ReconcileResult(payment.order_id, one.checked.status_before, one.checked.status_after, error)
            self._report(RowCheck(payment, DONE if result.error is None else FAILED, result))

    def _rows(
        self, min_age: float, recheck_after: float, refund_recheck_after: float, *, limit: int | None,
        started: datetime,
    ) -> Callable[[int], list[db.Payment]]:
        """A function giving up to n more due rows each call: claimed, or under --dry-run listed."""
        taken = 0
        stream: Iterator[db.Payment] | None = None

        def more(n: int) -> list[db.Payment]:
            nonlocal taken, stream
            if limit is not None:
                n = min(n, limit - taken)
            if n <= 0:
                return []
            if self.dry_run:
                if stream is None:
                    stream = self._listing(min_age, recheck_after, refund_recheck_after, limit=limit)
                batch = [p for _, p in zip(range(n), stream, strict=False)]
            else:
                batch = self.book.sql(
                    lambda conn: claims.claim_due(
                        conn, owner=self.owner, min_age=min_age, recheck_after=recheck_after, limit=n,
                        refund_recheck_after=refund_recheck_after,
                        run_started=started, lease_seconds=self.lease_seconds,
                    )
                )
            taken += len(batch)
            return batch

        return more

    def _listing(
        self, min_age: float, recheck_after: float, refund_recheck_after: float, *, limit: int | None
    ) -> Iterator[db.Payment]:
        with db.translate_errors(), self.pool.connection() as conn:
            yield from claims.iter_due(
                conn, min_age=min_age, recheck_after=recheck_after, refund_recheck_after=refund_recheck_after,
                limit=limit,
            )

    def _take(self, checked: RowCheck) -> None:
        """Account for one finished check (on the loop's thread): report it, and queue its row's outcome."""
        if checked.kind == SKIPPED:
            self.book.released(checked.payment.id)
        elif checked.kind == FATAL:
            assert checked.error is not None
            self._fatal(checked.error)
            self.book.released(checked.payment.id)
        elif checked.kind == TRANSPORT:
            assert checked.error is not None
            self._suspects.append(checked)
            if self.breaker.opened_by is not None:
                self._trip(self.breaker.opened_by)
        elif checked.kind == WRITE:
            assert checked.view is not None
            self._settle_suspects()  # Midtrans answered: the failures before this were the rows' own
            if not self._pending:
                self._pending_since = time.monotonic()
            self._pending.append(Answered(checked.payment, checked.view))
        else:
            self._settle_suspects()
            self._report(checked)

    def _report(self, checked: RowCheck) -> None:
        assert checked.result is not None
        self.summary.add(checked.result)
        if self.on_result is not None:
            self.on_result(checked.result)
        if checked.kind == DONE:
            self.book.completed(checked.payment.id)
        else:
            self.book.failed(checked.payment.id, checked.result.error or "check failed")

    def _settle_suspects(self) -> None:
        for suspect in self._suspects:
            self._report(suspect)
        self._suspects.clear()

    def _trip(self, last: MidpayError) -> None:
        """The circuit breaker: stop calling Midtrans. The calls that failed are reported, their rows released."""
        for suspect in self._suspects:
            assert suspect.result is not None
            self.summary.add(suspect.result)
            if self.on_result is not None:
                self.on_result(suspect.result)
            self.book.released(suspect.payment.id)
        self._suspects.clear()
        if self._stopped_calling:  # a call that was already under way when the breaker opened
            return
        self._stopped_calling = True
        reason = line(last)
        if isinstance(last, GatewayUnreachable):
            self._fatal(GatewayUnavailable(f"Midtrans could not be reached, reconcile stopped: {reason}"))
        else:
            self._fatal(
                GatewayUnavailable(
                    f"Midtrans failed {self.breaker.opened_after} calls in a row, reconcile stopped: {reason}"
                )
            )

    def _fatal(self, exc: MidpayError) -> None:
        if self.summary.fatal is None:
            self.summary.fatal = exc
        self.stop.set()

    def _finish(self, in_flight: dict[uuid.UUID, db.Payment]) -> None:
        """Stop: wait for the calls under way (rows not started come back skipped), write every outcome,
        release the rest."""
        try:
            while in_flight:
                checked = self._answers.get()
                if in_flight.pop(checked.payment.id, None) is not None:
                    self._take(checked)
        except BaseException:  # noqa: BLE001 - an interrupt while draining: the leases will expire
            for payment in in_flight.values():
                self.book.released(payment.id)
            in_flight.clear()
        if self.breaker.opened_by is not None and self.summary.fatal is None:  # the workers saw the outage first
            self._trip(self.breaker.opened_by)
        if self._suspects:  # no later answer decided either way: the failures stand as the rows' own
            self._settle_suspects()
        try:
            self._write()  # the answers already in hand
        except MidpayError as exc:
            self._fatal(exc)
        except KeyboardInterrupt:
            self._fatal(Interrupted("interrupted"))
        self.summary.unchecked = self.book.released_total
        self.book.close(self._fatal)


def _layout(conn: db.Connection) -> schema.Layout:
    with conn.transaction():
        return schema.layout(conn, conn.info.dsn)
