"""Bodies spread over N connections by order id, so that one order's bodies stay in order.

``replay-webhook --offline --connections N`` asks Midtrans nothing: its speed is
PostgreSQL's, so it uses N connections at once. Each body goes to the worker numbered
crc32(order_id) mod N (a body without an order id goes to the first); each worker has
its own connection and takes its batches one after the other, in the order they came,
so every body of an order is stored and decided on the same connection, in order.
Bodies of different orders may be decided in any order. With N = 1 the one worker
still lets the reading of the next bodies (and ``prepare``, the rows to store made
ahead) overlap PostgreSQL's work on the last batch.

A worker that fails (PostgreSQL lost, or anything unexpected) reports it once and
takes nothing more; the others go on with what they were given, and the caller stops
putting bodies in.
"""

from __future__ import annotations

import queue
import threading
import zlib
from collections.abc import Callable
from types import TracebackType

from midpay import db
from midpay.errors import MidpayError
from midpay.intake.received import Item, field_text

Work = Callable[[db.Connection, list[Item]], None]


class Partitions:
    """``n`` workers, each on its own connection, each doing ``work`` on the batches of its share of the orders."""

    def __init__(self, url: str, n: int, work: Work, on_failure: Callable[[MidpayError], None], *,
                 batch: int = 200, prepare: Callable[[list[Item]], None] | None = None) -> None:
        self.url = url
        self.prepare = prepare  # run on each batch by the thread that puts, before a worker takes it
        self.n = max(1, n)
        self.work = work
        self.on_failure = on_failure
        self.batch = batch
        self._buffers: list[list[Item]] = [[] for _ in range(self.n)]
        self._queues: list[queue.Queue[list[Item] | None]] = [queue.Queue(maxsize=2) for _ in range(self.n)]
        self._threads = [
            threading.Thread(target=self._serve, args=(q,), name=f"partition-{i}", daemon=True)
            for i, q in enumerate(self._queues)
        ]

    def __enter__(self) -> Partitions:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def put(self, item: Item) -> None:
        """Hand one body to the worker of its order (in batches); blocks while that worker is two batches behind."""
        order_id = field_text(item.body.parsed, "order_id")
        index = zlib.crc32(order_id.encode("utf-8", "surrogatepass")) % self.n if order_id else 0
        buffer = self._buffers[index]
        buffer.append(item)
        if len(buffer) >= self.batch:
            self._hand(index, buffer)

    def close(self) -> None:
        """Hand out what is buffered, then wait for every worker to finish."""
        for index, buffer in enumerate(self._buffers):
            if buffer:
                self._hand(index, buffer)
            self._buffers[index] = []
        for q in self._queues:
            q.put(None)
        for thread in self._threads:
            thread.join()

    def _hand(self, index: int, batch: list[Item]) -> None:
        if self.prepare is not None:
            self.prepare(batch)
        self._queues[index].put(batch)
        self._buffers[index] = []

    def _serve(self, work_queue: queue.Queue[list[Item] | None]) -> None:
        conn: db.Connection | None = None
        try:
            conn = db.connect(self.url)
        except MidpayError as exc:
            self.on_failure(exc)
        try:
            while (batch := work_queue.get()) is not None:
                if conn is None:
                    continue  # failed: keep taking batches, so that the reader is never stuck
                try:
                    with db.translate_errors():
                        self.work(conn, batch)
                except Exception as exc:  # noqa: BLE001 - a worker's failure must reach the run, never vanish
                    self.on_failure(exc if isinstance(exc, MidpayError) else
                                    MidpayError(f"unexpected {type(exc).__name__}: {exc}"))
                    conn.close()
                    conn = None
        finally:
            if conn is not None:
                conn.close()
