"""What every replay run shares: its report, its results handed out in input order, rejecting what failed.

``online`` (confirmations with Midtrans) and ``offline`` (partitioned over
connections) both decide bodies on several threads; ``Results`` collects what they
decide and hands it on in the order the bodies came.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import islice

from midpay import db
from midpay.db import intake as sql
from midpay.errors import MidpayError
from midpay.intake import pipeline as intake
from midpay.intake.pipeline import Decided, NotificationResult
from midpay.intake.received import Item

BATCH = 200


@dataclass
class RunReport:
    """A run's results (in the order the bodies came), the status calls made, and what cut it short."""

    results: list[NotificationResult]
    calls: int = 0
    fatal: MidpayError | None = None  # PostgreSQL lost, or Midtrans refused the key: the run stopped
    unreachable: MidpayError | None = None  # the first reason Midtrans could not be asked


class Results:
    """The bodies a run decided, from any thread; and the first failure that stopped it."""

    def __init__(self, on_result: Callable[[NotificationResult], None] | None = None) -> None:
        # With on_result, results are handed out in input order as soon as every earlier
        # body is decided (memory stays flat); the few decided ahead of their turn wait here.
        self.on_result = on_result
        self.waiting: dict[int, NotificationResult] = {}
        self.next_seq = 0
        self.lock = threading.Lock()
        self.decided: Decided = []
        self.fatal: MidpayError | None = None

    def add(self, decided: Decided) -> None:
        with self.lock:
            if self.on_result is None:
                self.decided.extend(decided)
                return
            self.waiting.update(decided)
            while self.next_seq in self.waiting:
                self.on_result(self.waiting.pop(self.next_seq))
                self.next_seq += 1

    def drain(self) -> None:
        """Hand out whatever is left (bodies never decided leave gaps), in input order."""
        with self.lock:
            if self.on_result is not None:
                for seq in sorted(self.waiting):
                    self.on_result(self.waiting.pop(seq))

    def failed(self, exc: MidpayError) -> None:
        with self.lock:
            self.fatal = self.fatal or exc

    def report(self, calls: int = 0, unreachable: MidpayError | None = None) -> RunReport:
        self.decided.sort(key=lambda pair: pair[0])
        return RunReport([r for _, r in self.decided], calls, self.fatal, unreachable)


def rejected(conn: db.Connection, items: list[Item], exc: Exception, *, record: bool) -> Decided:
    """Whatever went wrong applying, the bodies are recorded rejected with the reason."""
    decided = [(i.seq, intake.failed(i, exc)) for i in items]
    if record:
        with conn.transaction():
            sql.record_outcomes(conn, [intake.outcome_row(i, r) for i, (_, r) in zip(items, decided, strict=True)])
    return decided


def batches(items: Iterable[Item]) -> Iterator[list[Item]]:
    it = iter(items)
    while batch := list(islice(it, BATCH)):
        yield batch
