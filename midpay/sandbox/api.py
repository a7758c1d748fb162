"""The Core API endpoints of the sandbox: charge, status, cancel, expire, refund, QR image.

Each endpoint answers as Midtrans does: HTTP 200 with the outcome in the body's
``status_code`` (201 created, 404 unknown, 406 duplicate, 412 cannot modify, 414 bad
refund amount, ...). ``Idempotency-Key`` (up to 46 characters) replays the saved
successful answer for 300 s, whatever the body of the retry. A charge may name its own
notification URLs in ``X-Override-Notification`` or ``X-Append-Notification`` (up to 3,
comma-separated; override wins when both are given). Refunds are in ``refunds``.
"""

from __future__ import annotations

import io
import json
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Final

from .refunds import RefundDesk
from .shapes import (
    DUPLICATE_ORDER,
    INVALID,
    MERCHANT_ID,
    NOT_FOUND,
    SYNTAX_ERROR,
    Reply,
    cannot_modify,
    json_reply,
    midtrans_error,
)
from .state import Notice, SandboxState, Transaction

IDEMPOTENCY_TTL = 300.0
IDEMPOTENCY_KEY_MAX = 46
ORDER_ID_MAX = 50
MAX_EXPIRY = timedelta(days=7)
MAX_NOTIFY_URLS = 3
_EXPIRY_UNITS: Final = {"minute": 60, "hour": 3600, "day": 86400}


@dataclass(frozen=True)
class Call:
    """One authorized /v2 request, reduced to what the endpoints read."""

    endpoint: str
    ident: str = ""
    data: bytes = b""
    base: str = ""  # the base URL the answer's links use
    idempotency_key: str | None = None
    override: str | None = None  # X-Override-Notification
    append: str | None = None  # X-Append-Notification
    direct: bool = False  # /refund/online/direct


Answer = tuple[int, dict[str, Any]]


class CoreApi:
    """Midtrans' /v2 behaviour over a SandboxState."""

    def __init__(self, state: SandboxState, refunds: RefundDesk) -> None:
        self.state = state
        self.refunds = refunds
        self._idempotent: OrderedDict[str, tuple[float, Reply]] = OrderedDict()

    def handle(self, call: Call) -> Reply:
        """Answer one authorized request."""
        state = self.state
        if call.endpoint == "status":  # the hot path: no idempotency, a cached answer
            notices: list[Notice] = []
            with state.lock:
                txn = state.find(call.ident)
                if txn is not None:
                    state.expire_if_due(txn, notices)
                    body, code = state.status_answer(txn)
            state.emit(notices)
            if txn is None:
                return json_reply(200, midtrans_error("404", NOT_FOUND))
            return Reply(200, body, code=code)
        key = call.idempotency_key
        if key is not None and not 0 < len(key) <= IDEMPOTENCY_KEY_MAX:
            key = None  # Midtrans ignores over-long keys
        notices = []
        with state.lock:
            now = time.monotonic()
            while self._idempotent:
                oldest = next(iter(self._idempotent.values()))
                if oldest[0] > now:
                    break
                self._idempotent.popitem(last=False)
            if key is not None and key in self._idempotent:
                return self._idempotent[key][1]
            if call.endpoint == "charge":
                status, payload = self._charge(call, notices)
            elif call.endpoint == "refund":
                status, payload = self.refunds.request(call.ident, call.data, call.direct, notices)
            else:
                status, payload = self._end(call.ident, call.endpoint, notices)
            reply = json_reply(status, payload)
            if key is not None and payload.get("status_code") in ("200", "201", "202", "407"):
                self._idempotent[key] = (now + IDEMPOTENCY_TTL, reply)
        state.emit(notices)
        return reply

    def qr_code(self, ident: str) -> Reply:
        """The QR image of a transaction id (hotlinked from <img>: no auth, like Midtrans)."""
        with self.state.lock:
            txn = self.state.by_transaction_id(ident)
            text = txn.qr_string if txn is not None else None
        if text is None:
            return json_reply(200, midtrans_error("404", NOT_FOUND))
        import segno

        buffer = io.BytesIO()
        segno.make(text, error="m", micro=False).save(buffer, kind="png", scale=6, border=4)
        return Reply(200, buffer.getvalue(), "image/png")

    # -- the endpoints (self.state.lock held) --

    def _charge(self, call: Call, notices: list[Notice]) -> Answer:
        try:
            request = json.loads(call.data or b"null")
        except ValueError:
            return 200, midtrans_error("413", SYNTAX_ERROR)
        if not isinstance(request, dict):
            return 200, midtrans_error("500", "An unexpected error occurred: the request body is not an object")
        problems: list[str] = []
        payment_type = request.get("payment_type")
        details = request.get("transaction_details")
        if not isinstance(details, dict):
            details = {}
            problems.append("transaction_details is required")
        order_id = details.get("order_id")
        if not isinstance(order_id, str) or not order_id:
            problems.append("transaction_details.order_id is required")
        elif len(order_id) > ORDER_ID_MAX:
            problems.append(f"transaction_details.order_id must be at most {ORDER_ID_MAX} characters")
        amount = details.get("gross_amount")
        if isinstance(amount, float) and amount.is_integer():
            amount = int(amount)
        if isinstance(amount, str) and amount.isascii() and amount.isdigit():
            amount = int(amount)
        if isinstance(amount, bool) or not isinstance(amount, int):
            problems.append("transaction_details.gross_amount must be a whole number")
        elif amount <= 0:
            problems.append("transaction_details.gross_amount must be greater than or equal to 0.01")
        if not isinstance(payment_type, str) or not payment_type:
            problems.append("payment_type is required")
        lifetime = timedelta(seconds=self.state.expiry_seconds)
        custom = request.get("custom_expiry")
        if custom is not None:
            duration = custom.get("expiry_duration") if isinstance(custom, dict) else None
            unit = custom.get("unit") if isinstance(custom, dict) else None
            if isinstance(duration, bool) or not isinstance(duration, int) or duration <= 0:
                problems.append("custom_expiry.expiry_duration must be a positive whole number")
            elif unit not in _EXPIRY_UNITS:
                problems.append("custom_expiry.unit must be minute, hour or day")
            else:
                lifetime = timedelta(seconds=duration * _EXPIRY_UNITS[str(unit)])
                if lifetime > MAX_EXPIRY:
                    problems.append("custom_expiry exceeds the maximum of 7 days")
        if problems:
            return 200, midtrans_error("400", INVALID, validation_messages=problems)
        assert isinstance(order_id, str) and isinstance(amount, int) and isinstance(payment_type, str)
        qris = request.get("qris")
        acquirer = qris.get("acquirer", "gopay") if isinstance(qris, dict) else "gopay"
        if payment_type not in ("gopay", "qris") or (payment_type == "qris" and acquirer != "gopay"):
            return 200, midtrans_error("402", "Merchant does not have access for this payment type")

        override, append = _notify_urls(call.override), _notify_urls(call.append)
        if self.state.taken(order_id, notices):
            return 200, midtrans_error("406", DUPLICATE_ORDER)
        txn = self.state.add(order_id, payment_type, amount, lifetime)
        if override:
            txn.notify_override = override
        else:
            txn.notify_append = append
        self.state.stats.bump("charges", order_id)
        return 200, _charge_answer(txn, call.base)

    def _end(self, ident: str, action: str, notices: list[Notice]) -> Answer:
        txn = self.state.find(ident)
        if txn is None:
            return 200, midtrans_error("404", NOT_FOUND)
        self.state.expire_if_due(txn, notices)
        if txn.status != "pending":
            return 200, cannot_modify()
        if action == "cancel":
            self.state.move(txn, "cancel", notices)
            head = {"status_code": "200", "status_message": "Success, transaction is canceled"}
        else:
            self.state.move(txn, "expire", notices)
            head = {"status_code": "407", "status_message": "Success, transaction has expired"}
        return 200, head | _transaction_fields(txn)


def _transaction_fields(txn: Transaction) -> dict[str, Any]:
    return {
        "transaction_id": txn.transaction_id,
        "order_id": txn.order_id,
        "merchant_id": MERCHANT_ID,
        "gross_amount": txn.amount,
        "currency": "IDR",
        "payment_type": txn.payment_type,
        "transaction_time": txn.created_text,
        "transaction_status": txn.status,
        "fraud_status": txn.fraud_status,
    }


def _notify_urls(header: str | None) -> tuple[str, ...]:
    """The http(s) URLs of an X-*-Notification header, at most 3."""
    if not header:
        return ()
    urls = [part.strip() for part in header.split(",")]
    return tuple(url for url in urls if url.startswith(("http://", "https://")))[:MAX_NOTIFY_URLS]


def _charge_answer(txn: Transaction, base: str) -> dict[str, Any]:
    tid = txn.transaction_id
    common = {
        "gross_amount": txn.amount,
        "currency": "IDR",
        "payment_type": txn.payment_type,
        "transaction_time": txn.created_text,
        "transaction_status": "pending",
        "fraud_status": "accept",
    }
    if txn.payment_type == "gopay":
        return {
            "status_code": "201",
            "status_message": "GO-PAY transaction is created",
            "transaction_id": tid,
            "order_id": txn.order_id,
            **common,
            "actions": [
                {"name": "generate-qr-code", "method": "GET", "url": f"{base}/v2/gopay/{tid}/qr-code"},
                {"name": "deeplink-redirect", "method": "GET", "url": f"{base}/_sandbox/checkout/{tid}"},
                {"name": "get-status", "method": "GET", "url": f"{base}/v2/{tid}/status"},
                {"name": "cancel", "method": "POST", "url": f"{base}/v2/{tid}/cancel"},
            ],
            "expiry_time": txn.expires_text,
        }
    return {
        "status_code": "201",
        "status_message": "QRIS transaction is created",
        "transaction_id": tid,
        "order_id": txn.order_id,
        "merchant_id": MERCHANT_ID,
        **common,
        "actions": [{"name": "generate-qr-code", "method": "GET", "url": f"{base}/v2/qris/{tid}/qr-code"}],
        "qr_string": txn.qr_string,
        "acquirer": "gopay",
        "expire_time": txn.expires_text,
    }
