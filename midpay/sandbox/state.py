"""The sandbox's transactions and how they move, as Midtrans moves them.

One lock guards every transaction. Each move queues the signed notification it causes;
the queued notifications are handed to the emitter only after the lock is released,
so slow notification targets never hold up other requests.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from midpay.errors import MidtransRejected, NotFoundError, UsageError
from midpay.midtrans.notifications import JAKARTA, compute_signature, format_time

from .shapes import ANSWER_CODES, DUPLICATE_ORDER, MERCHANT_ID, NOTIFICATION_CODES, cannot_modify, money, qris_payload
from .stats import Stats

PAY_STATUSES = ("settlement", "capture", "deny", "cancel", "expire", "pending")
FRAUD_STATUSES = ("accept", "challenge", "deny")
PAYMENT_TYPES = ("gopay", "qris")
REUSABLE = frozenset({"expire", "cancel"})  # Midtrans frees the order id after these
_MOVES = {
    "pending": frozenset({"settlement", "capture", "deny", "cancel", "expire"}),
    "capture": frozenset({"settlement", "deny", "cancel"}),  # a card-style review, then settlement
}
_PAID_BY_SCAN = frozenset({"settlement", "capture", "deny"})


@dataclass
class Refund:
    """One refund of a transaction, however it was made."""

    chargeback_id: int
    amount: int
    created: datetime
    reason: str
    refund_key: str
    source: str  # "api" (POST /refund), "direct" (/refund/online/direct) or "outside" (the dashboard)
    confirmed: datetime | None = None

    def item(self) -> dict[str, Any]:
        """The ``refunds[]`` entry of Get Status and notifications."""
        entry: dict[str, Any] = {
            "refund_chargeback_id": self.chargeback_id,
            "refund_amount": money(self.amount),
            "created_at": format_time(self.created),
            "reason": self.reason,
            "refund_key": self.refund_key,
        }
        if self.confirmed is not None:
            entry["refund_method"] = "online"
            entry["bank_confirmed_at"] = format_time(self.confirmed)
        return entry


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
    fraud_status: str = "accept"
    settled: datetime | None = None
    cross_reference: str | None = None  # merchant_cross_reference_id, once paid by QRIS scan
    refunds: list[Refund] = field(default_factory=list)
    refund_answers: dict[str, dict[str, Any]] = field(default_factory=dict)
    notifications: int = 0
    notify_override: tuple[str, ...] | None = None  # X-Override-Notification: these URLs only
    notify_append: tuple[str, ...] = ()  # X-Append-Notification: these besides the default
    answer: tuple[bytes, str] | None = None  # the Get Status answer, until the next change
    _qr: str | None = None
    expires_at: float = field(init=False, default=0.0)  # for a cheap expiry check on every look
    created_text: str = field(init=False, default="")  # the times as Midtrans writes them, made once
    expires_text: str = field(init=False, default="")

    def __post_init__(self) -> None:
        self.expires_at = self.expires.timestamp()
        self.created_text = format_time(self.created)
        self.expires_text = format_time(self.expires)

    @property
    def amount(self) -> str:
        return money(self.gross_amount)

    @property
    def refunded(self) -> int:
        return sum(refund.amount for refund in self.refunds)

    @property
    def qr_string(self) -> str:
        if self._qr is None:  # made on demand: seeding 20,000 orders should not compute 20,000 CRCs
            self._qr = qris_payload(self.transaction_id, self.gross_amount)
        return self._qr


@dataclass(frozen=True)
class Notice:
    """A notification to send: which order, in which state, its number for that order, the body."""

    order_id: str
    status: str
    number: int
    body: dict[str, Any]
    override: tuple[str, ...] | None = None
    append: tuple[str, ...] = ()


Emitter = Callable[[Sequence[Notice]], object]


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
        txn = Transaction(str(uuid.uuid4()), order_id, payment_type, amount, now, now + lifetime)
        self._txns[txn.transaction_id] = txn
        self._by_order[order_id] = txn.transaction_id
        return txn

    def taken(self, order_id: str, notices: list[Notice]) -> bool:
        """Whether a charge for ``order_id`` would be a duplicate (406)."""
        existing = self.find_order(order_id)
        if existing is None:
            return False
        self.expire_if_due(existing, notices)
        return existing.status not in REUSABLE

    def expire_if_due(self, txn: Transaction, notices: list[Notice]) -> None:
        """Midtrans expires a pending order lazily here: the next time anything looks at it."""
        if txn.status == "pending" and time.time() >= txn.expires_at:
            self.move(txn, "expire", notices)

    def move(self, txn: Transaction, status: str, notices: list[Notice]) -> dict[str, Any]:
        txn.status = status
        if status == "settlement" and txn.settled is None:
            txn.settled = self.now()
        if txn.payment_type == "qris" and status in _PAID_BY_SCAN and txn.cross_reference is None:
            txn.cross_reference = str(uuid.uuid4())  # "identifier of QRIS code where the payment is being made"
        return self.queue_notification(txn, notices)

    def queue_notification(self, txn: Transaction, notices: list[Notice]) -> dict[str, Any]:
        """Every change of a transaction ends here: forget its cached answer, queue its notification."""
        txn.answer = None
        txn.notifications += 1
        body = self.notification(txn)
        notices.append(
            Notice(txn.order_id, txn.status, txn.notifications, body, txn.notify_override, txn.notify_append)
        )
        self.stats.bump("notifications", "emitted")
        return body

    def notification(self, txn: Transaction) -> dict[str, Any]:
        """The body Midtrans would POST for ``txn`` now (field order of its samples)."""
        code = NOTIFICATION_CODES[txn.status]
        scanned = txn.payment_type == "qris" and txn.settled is not None
        body: dict[str, Any] = {"transaction_type": "on-us"} if scanned else {}
        body.update(
            {
                "transaction_time": txn.created_text,
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
        if txn.cross_reference is not None:
            body["merchant_cross_reference_id"] = txn.cross_reference
        if scanned:
            body["issuer"] = "gopay"
        body.update({"gross_amount": txn.amount, "fraud_status": txn.fraud_status, "currency": "IDR"})
        if txn.payment_type == "qris":
            body["acquirer"] = "gopay"
        self._add_refunds(txn, body)
        return body

    def status_answer(self, txn: Transaction) -> tuple[bytes, str]:
        """The Get Status answer of ``txn`` as bytes and its status_code, made once per change."""
        if txn.answer is None:
            code = ANSWER_CODES[txn.status]
            body: dict[str, Any] = {
                "transaction_time": txn.created_text,
                "gross_amount": txn.amount,
                "currency": "IDR",
                "order_id": txn.order_id,
                "payment_type": txn.payment_type,
                "signature_key": compute_signature(txn.order_id, code, txn.amount, self.server_key),
                "status_code": code,
                "transaction_id": txn.transaction_id,
                "transaction_status": txn.status,
                "fraud_status": txn.fraud_status,
                "status_message": "Success, transaction is found",
                "merchant_id": MERCHANT_ID,
                "expiry_time": txn.expires_text,
            }
            if txn.settled is not None:
                body["settlement_time"] = format_time(txn.settled)
            if txn.payment_type == "qris":
                body["acquirer"] = "gopay"
            if txn.cross_reference is not None:
                body["merchant_cross_reference_id"] = txn.cross_reference
            self._add_refunds(txn, body)
            txn.answer = (json.dumps(body).encode(), code)
        return txn.answer

    def _add_refunds(self, txn: Transaction, body: dict[str, Any]) -> None:
        if txn.refunds:
            body["refund_amount"] = money(txn.refunded)
            body["refunds"] = [refund.item() for refund in txn.refunds]

    def snapshot(self, txn: Transaction) -> dict[str, Any]:
        return {
            **_seed_row(txn),
            "fraud_status": txn.fraud_status,
            "refunded_amount": txn.refunded,
            "refunds": [{**refund.item(), "source": refund.source} for refund in txn.refunds],
            "notifications": txn.notifications,
            "qr_string": txn.qr_string,
        }

    # -- public: take the lock, emit after releasing it --

    def order_key(self, ident: str) -> str:
        """The order id ``ident`` names (``ident`` itself when unknown), for counting and rules.

        Read without the lock (dict reads are atomic): at worst it misses a charge that
        is being made at this very moment, which only a counter would notice.
        """
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

    def pay(
        self, order_id: str, status: str, *, payment_type: str | None, fraud_status: str | None
    ) -> tuple[dict[str, Any], object]:
        """Move an order as its customer would (see SandboxServer.pay); (notification, what emit returned)."""
        _check_pay(status, payment_type, fraud_status)
        notices: list[Notice] = []
        error: Exception | None = None
        note: dict[str, Any] = {}
        with self.lock:
            txn = self.find(order_id)
            if txn is None:
                raise NotFoundError(f"the sandbox has no order {order_id!r}")
            self.expire_if_due(txn, notices)
            scan = payment_type is not None and payment_type != txn.payment_type
            review = fraud_status is not None and fraud_status != txn.fraud_status
            if scan and not (txn.payment_type == "gopay" and status in _PAID_BY_SCAN):
                error = UsageError(
                    f"only a gopay charge being paid (settlement, capture, deny) can become {payment_type}; "
                    f"order {txn.order_id!r} is a {txn.payment_type} charge, {txn.status}"
                )
            elif txn.status == status and not scan and not review:
                note = self.queue_notification(txn, notices)  # the same notification again
            elif status in _MOVES.get(txn.status, ()) or (txn.status == status == "capture"):
                txn.payment_type = payment_type or txn.payment_type
                txn.fraud_status = fraud_status or txn.fraud_status
                note = self.move(txn, status, notices)
            else:
                error = MidtransRejected(
                    f"order {txn.order_id!r} is {txn.status}; the sandbox cannot move it to {status}",
                    "412",
                    cannot_modify(),
                )
        emitted = self.emit(notices)
        if error is not None:
            raise error
        return note, emitted

    def seed(
        self, order_ids: Sequence[str], amounts: Sequence[int], payment_type: str, settle: Sequence[bool]
    ) -> list[dict[str, Any]]:
        """Create many orders at once, no notifications; MidtransRejected (406) if one is taken."""
        notices: list[Notice] = []
        lifetime = timedelta(seconds=self.expiry_seconds)
        with self.lock:
            for order_id in order_ids:
                if self.taken(order_id, notices):
                    taken = order_id
                    break
            else:
                taken = None
                rows = []
                for order_id, amount, paid in zip(order_ids, amounts, settle, strict=True):
                    txn = self.add(order_id, payment_type, amount, lifetime)
                    if paid:
                        txn.status, txn.settled = "settlement", txn.created
                    rows.append(_seed_row(txn))
                self.stats.bump("seeded", by=len(rows))
        self.emit(notices)
        if taken is not None:
            raise MidtransRejected(
                f"order {taken!r} is already in the sandbox; nothing was seeded",
                "406",
                {"status_code": "406", "status_message": DUPLICATE_ORDER},
            )
        return rows


def _check_pay(status: str, payment_type: str | None, fraud_status: str | None) -> None:
    if status not in PAY_STATUSES:
        raise UsageError(f"status must be one of {', '.join(PAY_STATUSES)}, not {status!r}")
    if payment_type is not None and payment_type not in PAYMENT_TYPES:
        raise UsageError(f"payment_type must be gopay or qris, not {payment_type!r}")
    if fraud_status is not None and fraud_status not in FRAUD_STATUSES:
        raise UsageError(f"fraud_status must be one of {', '.join(FRAUD_STATUSES)}, not {fraud_status!r}")


def _seed_row(txn: Transaction) -> dict[str, Any]:
    """What a seeded order is, and what every snapshot of an order starts with."""
    return {
        "order_id": txn.order_id,
        "transaction_id": txn.transaction_id,
        "gross_amount": txn.gross_amount,
        "payment_type": txn.payment_type,
        "transaction_status": txn.status,
        "transaction_time": txn.created_text,
        "expiry_time": txn.expires_text,
        "settlement_time": format_time(txn.settled) if txn.settled else None,
    }
