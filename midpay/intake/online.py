"""Many notifications at once (``replay-webhook``, ``events reprocess``): the intake's steps, scheduled.

Bodies are read in batches; each batch is stored and screened on one connection (two
commits), then every order with bodies left to confirm gets one Get Status call, run
``concurrency`` at a time over the gateway's pooled session. A worker waiting for
Midtrans holds no database connection, and does not apply the answer either: it hands
the order to an applier thread and asks about the next. Each applier (``appliers_for``:
1 to 4, each with its own connection) takes every order answered meanwhile and
applies them together in one transaction (``batch``); an order is with one
applier at a time. Bodies of one order are applied in the order they came, and an
order seen again later in the run reuses the answer it got (remembered for
``REMEMBERED`` orders). Offline runs are ``offline``'s.

Midtrans unreachable (connection refused, 5xx after the retries) trips a breaker: no
more calls are made, and every body left waits for confirmation. A 401 does the same and
ends the run as a configuration error. What is decided here is decided by ``intake``.
"""

from __future__ import annotations

import queue
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from midpay import db
from midpay.db import intake as sql
from midpay.errors import ConfigError, DependencyError, GatewayUnavailable, MidpayError
from midpay.intake import offline, received
from midpay.intake import pipeline as intake
from midpay.intake.batch import Work, apply_confirmed_many
from midpay.intake.bodies import Body
from midpay.intake.pipeline import Decided, NotificationResult
from midpay.intake.received import Item
from midpay.intake.runs import BATCH, Results, RunReport, batches, rejected
from midpay.midtrans.breaker import Breaker
from midpay.midtrans.notifications import TransactionView

if TYPE_CHECKING:
    from midpay.midtrans.gateway import Gateway

REMEMBERED = 10_000
APPLY_BATCH = 100  # answered orders applied in one transaction, at most


@dataclass
class _Order:
    queue: list[Item] = field(default_factory=list)
    answer: TransactionView | MidpayError | None = None
    running: bool = False


def appliers_for(concurrency: int) -> int:
    """Applier threads for ``concurrency`` confirmations at a time: one per two, at most 4.

    With Midtrans slow, one applier keeps up (it applies many orders per commit); with
    Midtrans fast, applying is the slower step, and a few connections overlap its round trips.
    """
    return max(1, min(4, concurrency // 2))


class _Run(Results):
    """The shared state of one online run: per-order work, the breaker, the results."""

    def __init__(
        self, pool: Any, gateway: Gateway, *, concurrency: int, dry_run: bool,
        on_result: Callable[[NotificationResult], None] | None = None,
    ) -> None:
        super().__init__(on_result)
        self.pool = pool
        self.gateway = gateway
        self.dry_run = dry_run
        self.orders: OrderedDict[str, _Order] = OrderedDict()
        self.calls = 0
        self.breaker = Breaker()  # opens at the first call Midtrans could not take (or a refused key)
        self.unreachable: MidpayError | None = None
        self.slots = threading.BoundedSemaphore(max(1, concurrency) * 4)
        self.ready: queue.SimpleQueue[tuple[str, _Order] | None] = queue.SimpleQueue()
        self.executor = ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="confirm")
        self.appliers = [threading.Thread(target=self._apply_loop, name=f"confirm-apply-{n}", daemon=True)
                         for n in range(appliers_for(concurrency))]
        for applier in self.appliers:
            applier.start()

    def submit(self, order_id: str, items: list[Item]) -> None:
        with self.lock:
            work = self.orders.get(order_id)
            if work is None:
                work = self.orders[order_id] = _Order()
                self._forget_some()
            self.orders.move_to_end(order_id)
            work.queue.extend(items)
            if work.running:
                return  # the worker on it takes these too, after the earlier ones
            work.running = True
            known = work.answer is not None
        self.slots.acquire()
        if known:
            self.ready.put((order_id, work))  # asked before in this run: straight to applying
        else:
            self.executor.submit(self._confirm, order_id, work)

    def _forget_some(self) -> None:
        while len(self.orders) > REMEMBERED:
            oldest = next(iter(self.orders))
            if self.orders[oldest].running:
                return
            del self.orders[oldest]

    def _answer(self, order_id: str) -> TransactionView | MidpayError:
        with self.lock:
            stop = self.breaker.opened_by or self.fatal
            if stop is None:
                self.calls += 1
        if stop is not None:
            return stop
        answer = intake.confirm(self.gateway, order_id)
        if isinstance(answer, GatewayUnavailable | ConfigError):
            self.breaker.failed(answer)
        if isinstance(answer, ConfigError):
            with self.lock:
                self.fatal = self.fatal or answer
        if isinstance(answer, DependencyError | ConfigError):
            with self.lock:
                self.unreachable = self.unreachable or answer
        return answer

    def _confirm(self, order_id: str, work: _Order) -> None:
        """A confirmation worker: ask, then hand the order to the applier (this thread asks the next one)."""
        try:
            work.answer = self._answer(order_id)
        except Exception as exc:  # noqa: BLE001 - a worker's failure must reach the run, never vanish
            self._failed([work], exc)
            return
        self.ready.put((order_id, work))

    def _failed(self, works: list[_Order], exc: Exception) -> None:
        mapped = db.map_error(exc)
        with self.lock:
            self.fatal = self.fatal or mapped or MidpayError(f"unexpected {type(exc).__name__}: {exc}")
            for work in works:
                work.running = False
        for _ in works:
            self.slots.release()

    def _apply_loop(self) -> None:
        """The applier: the orders answered so far, applied together in one transaction, until told to stop."""
        while True:
            first = self.ready.get()
            if first is None:
                return
            picked, stop = [first], False
            while len(picked) < APPLY_BATCH:
                try:
                    more = self.ready.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                picked.append(more)
            try:
                self._apply_picked(picked)
            except Exception as exc:  # noqa: BLE001 - as a worker's: reach the run, and free the slots
                self._failed([work for _, work in picked], exc)
            if stop:
                return

    def _apply_picked(self, picked: list[tuple[str, _Order]]) -> None:
        left = picked
        while left:
            with self.lock:
                work_list = [(order_id, work, work.queue) for order_id, work in left]
                for _, work, _ in work_list:
                    work.queue = []
            self._apply([(order_id, work.answer, batch) for order_id, work, batch in work_list
                         if batch and work.answer is not None])
            left = []
            with self.lock:
                for order_id, work, _ in work_list:
                    if work.queue:
                        left.append((order_id, work))  # more bodies came while it was applied
                    else:
                        work.running = False
            for _ in range(len(work_list) - len(left)):
                self.slots.release()

    def _apply(self, work: list[Work]) -> None:
        if not work or (self.fatal is not None and isinstance(self.fatal, DependencyError)):
            return  # PostgreSQL is gone: nothing can be recorded; the bodies stay as stored
        try:
            with db.translate_errors(), self.pool.connection() as conn:
                try:
                    decided = apply_confirmed_many(conn, work, dry_run=self.dry_run)
                except Exception as exc:
                    if db.map_error(exc) is not None:
                        raise
                    decided = []  # one order spoilt the batch: each on its own, so the others still apply
                    for order_id, answer, batch in work:
                        decided.extend(self._apply_one(conn, order_id, answer, list(batch)))
            self.add(decided)
        except Exception as exc:  # noqa: BLE001 - never raises: the caller frees the slots afterwards
            mapped = exc if isinstance(exc, MidpayError) else db.map_error(exc)
            with self.lock:
                self.fatal = self.fatal or mapped or MidpayError(f"unexpected {type(exc).__name__}: {exc}")

    def _apply_one(self, conn: db.Connection, order_id: str, answer: TransactionView | MidpayError,
                   batch: list[Item]) -> Decided:
        try:
            return intake.apply_confirmed(conn, order_id, answer, batch, dry_run=self.dry_run)
        except Exception as exc:
            if db.map_error(exc) is not None:
                raise
            return rejected(conn, batch, exc, record=not self.dry_run)

    def close(self) -> None:
        self.executor.shutdown(wait=True)
        for _ in self.appliers:
            self.ready.put(None)  # one each
        for applier in self.appliers:
            applier.join()


def run(
    url: str,
    gateway: Gateway | None,
    items: Iterable[Item],
    server_key: str,
    *,
    store: bool,
    concurrency: int = 8,
    connections: int = 1,
    dry_run: bool = False,
    on_result: Callable[[NotificationResult], None] | None = None,
) -> RunReport:
    """Store (``store``), screen, confirm and apply every item; ``gateway`` None is offline.

    With ``on_result``, each result goes there (in input order) instead of into the report.
    Offline, the bodies are spread over ``connections`` connections by order id (``partitions``).
    """
    if gateway is None:
        return offline.run(url, items, server_key, store=store, connections=connections, dry_run=dry_run,
                           on_result=on_result)
    pool = db.open_pool(url, 1 + appliers_for(concurrency))  # the reader's connection, and the appliers'
    state = _Run(pool, gateway, concurrency=concurrency, dry_run=dry_run, on_result=on_result)
    try:
        with db.translate_errors(), pool.connection() as conn:
            for batch in batches(items):
                if isinstance(state.fatal, DependencyError):
                    break  # PostgreSQL is gone; a refused key still lets every body be stored
                if store and not dry_run:
                    received.store(conn, batch)
                screened = intake.screen(conn, batch, server_key, online=True, dry_run=dry_run)
                state.add(screened.decided)
                for order_id, found in screened.candidates.items():
                    state.submit(order_id, found)
    except DependencyError as exc:
        state.fatal = state.fatal or exc
    finally:
        state.close()
        pool.close()
        state.drain()
    return state.report(state.calls, state.unreachable)


def replay(
    url: str, gateway: Gateway | None, bodies: Iterable[Body], server_key: str, *, concurrency: int = 8,
    connections: int = 1, dry_run: bool = False, on_result: Callable[[NotificationResult], None] | None = None,
) -> RunReport:
    """``replay-webhook``: every body stored first, then decided; offline when ``gateway`` is None."""
    return run(url, gateway, received.items_of(bodies), server_key, store=True, concurrency=concurrency,
               connections=connections, dry_run=dry_run, on_result=on_result)


def store_only(url: str, bodies: Iterable[Body]) -> int:
    """Store every body, undecided (no server key to verify them with); how many were stored."""
    count = 0
    with db.translate_errors(), db.connect(url) as conn:
        for batch in batches(received.items_of(bodies)):
            received.store(conn, batch)
            count += len(batch)
    return count


def reprocess(
    url: str, gateway: Gateway | None, server_key: str, *, order_id: str | None = None, rejected_only: bool = False,
    concurrency: int = 8,
) -> RunReport:
    """``events reprocess``: every stored notification not processed, oldest first, decided again.

    Rejected ones, those awaiting confirmation, and those never decided (stored by an
    older backend, or cut short by a crash); with ``rejected_only`` only the rejected.
    Each outcome is recorded on the notification's own row.
    """
    with db.translate_errors(), db.connect(url) as conn:
        ids = db.select_unprocessed_event_ids(conn, order_id=order_id, rejected_only=rejected_only)
    return run(url, gateway, _stored(url, ids), server_key, store=False, concurrency=concurrency)


def _stored(url: str, ids: list[uuid.UUID]) -> Iterator[Item]:
    seq = 0
    with db.translate_errors(), db.connect(url) as conn:
        for start in range(0, len(ids), BATCH):
            with conn.transaction():
                rows = sql.stored_bodies(conn, ids[start:start + BATCH])
            for row in rows:
                yield received.stored_item(seq, row)
                seq += 1
