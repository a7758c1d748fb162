"""The sandbox's transactions and how they move, as Midtrans moves them.

One lock guards every transaction. Each move queues the signed notification it causes;
the queued notifications are handed to the emitter only after the lock is released,
so slow notification targets never hold up other requests.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from midpay.errors import MidtransRejected, NotFoundError, UsageError
from midpay.notifications import JAKARTA, compute_signature, format_time

from .shapes import MERCHANT_ID, NOTIFICATION_CODES, cannot_modify, money, qris_payload

PAY_STATUSES = ("settlement", "expire", "cancel", "deny", "pending")
ENDPOINTS = ("charge", "status", "cancel", "expire", "refund", "qr-code", "other")
FAULT_KINDS = ("5xx", "429", "stall", "malformed")


@dataclass
class Transaction:
    """One Midtrans transaction of the sandbox (an order id may have several over time)."""

    transaction_id: str
    order_id: str
    payment_type: str
    gross_amount: int
    created: datetime
    expires: datetime
    status: str = "pending"
    settled: datetime | None = None
    refunded: int = 0
    refunds: list[dict[str, Any]] = field(default_factory=list)
    refund_answers: dict[str, dict[str, Any]] = field(default_factory=dict)
    notifications: int = 0
    qr_string: str | None = None

    @property
    def amount(self) -> str:
        return money(self.gross_amount)


@dataclass(frozen=True)
class Notice:
    """A notification to send: which order, in which state, its number for that order, the body."""

    order_id: str
    status: str
    number: int
    body: dict[str, Any]


def _fresh_stats() -> dict[str, Any]:
    return {
        "requests": 0,
        "by_endpoint": dict.fromkeys(ENDPOINTS, 0),
        "status_checks": {},
        "charges": {},
        "refunds": {},
        "faults": dict.fromkeys(FAULT_KINDS, 0),
        "unauthorized": 0,
        "notifications": {"emitted": 0, "written": 0, "posted": 0, "failed": 0},
    }


class Stats:
    """Counters since start or the last reset, behind their own lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._data = _fresh_stats()

    def request(self, endpoint: str, status_of: str | None) -> None:
        """One /v2 request; ``status_of`` is the order a status check asked about."""
        with self._lock:
            data = self._data
            data["requests"] += 1
            data["by_endpoint"][endpoint] += 1
            if status_of is not None:
                checks = data["status_checks"]
                checks[status_of] = checks.get(status_of, 0) + 1

    def bump(self, group: str, name: str | None = None, by: int = 1) -> None:
        """Add ``by`` to a top-level counter, or to ``group[name]`` (created at 0)."""
        with self._lock:
            if name is None:
                self._data[group] += by
            else:
                table = self._data[group]
                table[name] = table.get(name, 0) + by

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            copy: dict[str, Any] = json.loads(json.dumps(self._data))
        return copy

    def reset(self) -> None:
        with self._lock:
            self._data = _fresh_stats()


Emitter = Callable[[Sequence[Notice]], None]


class SandboxState:
    """Every transaction the sandbox knows, by transaction id and by order id."""

    def __init__(self, *, server_key: str, expiry_seconds: int, stats: Stats, emit: Emitter) -> None:
        self.lock = threading.Lock()
        self.server_key = server_key
        self.expiry_seconds = expiry_seconds
        self.stats = stats
        self.emit = emit
        self._txns: dict[str, Transaction] = {}  # by transaction id
        self._by_order: dict[str, str] = {}  # order id -> its latest transaction id

    # -- called with self.lock held --

    def now(self) -> datetime:
        return datetime.now(JAKARTA)

    def find(self, ident: str) -> Transaction | None:
        """The latest transaction of an order id, or the transaction with that id."""
        tid = self._by_order.get(ident)
        if tid is not None:
            return self._txns[tid]
        return self._txns.get(ident)

    def find_order(self, order_id: str) -> Transaction | None:
        tid = self._by_order.get(order_id)
        return self._txns[tid] if tid is not None else None

    def by_transaction_id(self, transaction_id: str) -> Transaction | None:
        return self._txns.get(transaction_id)

    def add(self, order_id: str, payment_type: str, amount: int, lifetime: timedelta) -> Transaction:
        now = self.now()
        txn = Transaction(
            transaction_id=str(uuid.uuid4()),
            order_id=order_id,
            payment_type=payment_type,
            gross_amount=amount,
            created=now,
            expires=now + lifetime,
        )
        txn.qr_string = qris_payload(txn.transaction_id, amount)
        self._txns[txn.transaction_id] = txn
        self._by_order[order_id] = txn.transaction_id
        return txn

    def expire_if_due(self, txn: Transaction, notices: list[Notice]) -> None:
        """Midtrans expires a pending order lazily here: the next time anything looks at it."""
        if txn.status == "pending" and self.now() >= txn.expires:
            self.move(txn, "expire", notices)

    def move(self, txn: Transaction, status: str, notices: list[Notice]) -> dict[str, Any]:
        txn.status = status
        if status == "settlement" and txn.settled is None:
            txn.settled = self.now()
        return self.queue_notification(txn, notices)

    def queue_notification(self, txn: Transaction, notices: list[Notice]) -> dict[str, Any]:
        txn.notifications += 1
        body = self.notification(txn)
        notices.append(Notice(txn.order_id, txn.status, txn.notifications, body))
        self.stats.bump("notifications", "emitted")
        return body

    def notification(self, txn: Transaction) -> dict[str, Any]:
        """The body Midtrans would POST for ``txn`` now (field order of its samples)."""
        code = NOTIFICATION_CODES[txn.status]
        body: dict[str, Any] = {}
        if txn.payment_type == "qris" and txn.settled is not None:
            body["transaction_type"] = "on-us"
        body.update(
            {
                "transaction_time": format_time(txn.created),
                "transaction_status": txn.status,
                "transaction_id": txn.transaction_id,
                "status_message": "midtrans payment notification",
                "status_code": code,
                "signature_key": compute_signature(txn.order_id, code, txn.amount, self.server_key),
            }
        )
        if txn.settled is not None:
            body["settlement_time"] = format_time(txn.settled)
        body.update({"payment_type": txn.payment_type, "order_id": txn.order_id, "merchant_id": MERCHANT_ID})
        if txn.payment_type == "qris" and txn.settled is not None:
            body["issuer"] = "gopay"
        body.update({"gross_amount": txn.amount, "fraud_status": "accept", "currency": "IDR"})
        if txn.payment_type == "qris":
            body["acquirer"] = "gopay"
        if txn.refunds:
            body["refund_amount"] = money(txn.refunded)
            body["refunds"] = [dict(refund) for refund in txn.refunds]
        return body

    def snapshot(self, txn: Transaction) -> dict[str, Any]:
        return {
            "order_id": txn.order_id,
            "transaction_id": txn.transaction_id,
            "payment_type": txn.payment_type,
            "gross_amount": txn.gross_amount,
            "transaction_status": txn.status,
            "transaction_time": format_time(txn.created),
            "expiry_time": format_time(txn.expires),
            "settlement_time": format_time(txn.settled) if txn.settled else None,
            "refunded_amount": txn.refunded,
            "refunds": [dict(refund) for refund in txn.refunds],
            "notifications": txn.notifications,
            "qr_string": txn.qr_string,
        }

    # -- public: take the lock, emit after releasing it --

    def order_key(self, ident: str) -> str:
        """The order id ``ident`` names (``ident`` itself when unknown), for counting."""
        with self.lock:
            txn = self.find(ident)
            return txn.order_id if txn is not None else ident

    def get_order(self, ident: str) -> dict[str, Any] | None:
        notices: list[Notice] = []
        with self.lock:
            txn = self.find(ident)
            if txn is not None:
                self.expire_if_due(txn, notices)
            snapshot = self.snapshot(txn) if txn is not None else None
        self.emit(notices)
        return snapshot

    def orders(self) -> list[dict[str, Any]]:
        notices: list[Notice] = []
        with self.lock:
            txns = [self._txns[tid] for tid in self._by_order.values()]
            for txn in txns:
                self.expire_if_due(txn, notices)
            snapshots = [self.snapshot(txn) for txn in txns]
        self.emit(notices)
        return snapshots

    def pay(self, order_id: str, status: str) -> dict[str, Any]:
        """Move an order as its customer would; see SandboxServer.pay."""
        if status not in PAY_STATUSES:
            raise UsageError(f"status must be one of {', '.join(PAY_STATUSES)}, not {status!r}")
        notices: list[Notice] = []
        error: MidtransRejected | None = None
        note: dict[str, Any] = {}
        with self.lock:
            txn = self.find(order_id)
            if txn is None:
                raise NotFoundError(f"the sandbox has no order {order_id!r}")
            self.expire_if_due(txn, notices)
            if txn.status == status:
                note = self.queue_notification(txn, notices)
            elif txn.status == "pending" and status != "pending":
                note = self.move(txn, status, notices)
            else:
                error = MidtransRejected(
                    f"order {txn.order_id!r} is {txn.status}; the sandbox cannot move it to {status}",
                    "412",
                    cannot_modify(),
                )
        self.emit(notices)
        if error is not None:
            raise error
        return note
