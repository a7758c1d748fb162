"""The Core API endpoints of the sandbox: charge, status, cancel, expire, refund, QR image.

Each endpoint answers as Midtrans does: HTTP 200 with the outcome in the body's
``status_code`` (201 created, 404 unknown, 406 duplicate, 412 cannot modify, 414 bad
refund amount, ...). ``Idempotency-Key`` (up to 46 characters) replays the saved
successful answer for 300 s, whatever the body of the retry.
"""

from __future__ import annotations

import io
import json
import re
import time
from collections import OrderedDict
from datetime import timedelta
from typing import Any, Final

from midpay.notifications import compute_signature, format_time

from .shapes import (
    ANSWER_CODES,
    CANNOT_MODIFY,
    DUPLICATE_ORDER,
    INVALID,
    INVALID_REFUND_AMOUNT,
    MERCHANT_ID,
    NOT_FOUND,
    SYNTAX_ERROR,
    Reply,
    cannot_modify,
    json_reply,
    midtrans_error,
    money,
)
from .state import Notice, SandboxState, Transaction

IDEMPOTENCY_TTL = 300.0
IDEMPOTENCY_KEY_MAX = 46
ORDER_ID_MAX = 50
MAX_EXPIRY = timedelta(days=7)
_REUSABLE = frozenset({"expire", "cancel"})  # Midtrans frees the order id after these
_REFUNDABLE = frozenset({"settlement", "partial_refund"})
_REFUND_KEY_RE = re.compile(r"[A-Za-z0-9_-]{1,100}", re.ASCII)
_EXPIRY_UNITS: Final = {"minute": 60, "hour": 3600, "day": 86400}

Answer = tuple[int, dict[str, Any]]


class CoreApi:
    """Midtrans' /v2 behaviour over a SandboxState."""

    def __init__(self, state: SandboxState) -> None:
        self.state = state
        self._idempotent: OrderedDict[str, tuple[float, Reply]] = OrderedDict()

    def handle(self, endpoint: str, ident: str, idempotency_key: str | None, host: str, data: bytes) -> Reply:
        """Answer one authorized request; ``host`` is the base URL the answer's links use."""
        key = idempotency_key if endpoint != "status" else None  # POSTs only
        if key is not None and not 0 < len(key) <= IDEMPOTENCY_KEY_MAX:
            key = None  # Midtrans ignores over-long keys
        notices: list[Notice] = []
        state = self.state
        with state.lock:
            now = time.monotonic()
            while self._idempotent:
                oldest = next(iter(self._idempotent.values()))
                if oldest[0] > now:
                    break
                self._idempotent.popitem(last=False)
            if key is not None and key in self._idempotent:
                return self._idempotent[key][1]
            if endpoint == "charge":
                status, payload = self._charge(data, host, notices)
            elif endpoint == "status":
                status, payload = self._status(ident, notices)
            elif endpoint == "refund":
                status, payload = self._refund(ident, data, notices)
            else:
                status, payload = self._end(ident, endpoint, notices)
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

    def _charge(self, data: bytes, base: str, notices: list[Notice]) -> Answer:
        try:
            request = json.loads(data or b"null")
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

        existing = self.state.find_order(order_id)
        if existing is not None:
            self.state.expire_if_due(existing, notices)
            if existing.status not in _REUSABLE:
                return 200, midtrans_error("406", DUPLICATE_ORDER)
        txn = self.state.add(order_id, payment_type, amount, lifetime)
        self.state.stats.bump("charges", order_id)
        return 200, _charge_answer(txn, base)

    def _status(self, ident: str, notices: list[Notice]) -> Answer:
        txn = self.state.find(ident)
        if txn is None:
            return 200, midtrans_error("404", NOT_FOUND)
        self.state.expire_if_due(txn, notices)
        code = ANSWER_CODES[txn.status]
        body: dict[str, Any] = {
            "transaction_time": format_time(txn.created),
            "gross_amount": txn.amount,
            "currency": "IDR",
            "order_id": txn.order_id,
            "payment_type": txn.payment_type,
            "signature_key": compute_signature(txn.order_id, code, txn.amount, self.state.server_key),
            "status_code": code,
            "transaction_id": txn.transaction_id,
            "transaction_status": txn.status,
            "fraud_status": "accept",
            "status_message": "Success, transaction is found",
            "merchant_id": MERCHANT_ID,
            "expiry_time": format_time(txn.expires),
        }
        if txn.settled is not None:
            body["settlement_time"] = format_time(txn.settled)
        if txn.payment_type == "qris":
            body["acquirer"] = "gopay"
        if txn.refunds:
            body["refund_amount"] = money(txn.refunded)
            body["refunds"] = [dict(refund) for refund in txn.refunds]
        return 200, body

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

    def _refund(self, ident: str, data: bytes, notices: list[Notice]) -> Answer:
        txn = self.state.find(ident)
        if txn is None:
            return 200, midtrans_error("404", NOT_FOUND)
        self.state.expire_if_due(txn, notices)
        try:
            request = json.loads(data) if data.strip() else {}
        except ValueError:
            return 200, midtrans_error("413", SYNTAX_ERROR)
        if not isinstance(request, dict):
            return 200, midtrans_error("400", INVALID)
        refund_key = request.get("refund_key")
        if refund_key is not None and not (isinstance(refund_key, str) and _REFUND_KEY_RE.fullmatch(refund_key)):
            return 200, midtrans_error(
                "400", INVALID, validation_messages=["refund_key may hold only letters, digits, '-' and '_'"]
            )
        if refund_key is not None and refund_key in txn.refund_answers:
            return 200, dict(txn.refund_answers[refund_key])  # the same refund again pays nothing
        if txn.status not in _REFUNDABLE:
            return 200, {"status_code": "412", "status_message": CANNOT_MODIFY}
        remaining = txn.gross_amount - txn.refunded
        amount = request.get("amount", remaining)
        if isinstance(amount, float) and amount.is_integer():
            amount = int(amount)
        if isinstance(amount, bool) or not isinstance(amount, int):
            return 200, midtrans_error("400", INVALID, validation_messages=["amount must be a whole number"])
        if amount <= 0 or amount > remaining:
            return 200, {"status_code": "414", "status_message": INVALID_REFUND_AMOUNT}
        reason = request.get("reason")
        txn.refunded += amount
        refund = {
            "refund_chargeback_id": len(txn.refunds) + 1,
            "refund_amount": money(amount),
            "created_at": format_time(self.state.now()),
            "reason": reason if isinstance(reason, str) else None,
            "refund_key": refund_key,
        }
        txn.refunds.append(refund)
        self.state.move(txn, "refund" if txn.refunded == txn.gross_amount else "partial_refund", notices)
        answer = {
            "status_code": "200",
            "status_message": "Success, refund request is approved",
            "transaction_id": txn.transaction_id,
            "order_id": txn.order_id,
            "payment_type": txn.payment_type,
            "transaction_time": format_time(txn.created),
            "transaction_status": txn.status,
            "gross_amount": txn.amount,
            "refund_chargeback_id": refund["refund_chargeback_id"],
            "refund_amount": money(amount),
            "refund_key": refund_key,
        }
        if refund_key is not None:
            txn.refund_answers[refund_key] = answer
        self.state.stats.bump("refunds", txn.order_id)
        return 200, dict(answer)


def _transaction_fields(txn: Transaction) -> dict[str, Any]:
    return {
        "transaction_id": txn.transaction_id,
        "order_id": txn.order_id,
        "merchant_id": MERCHANT_ID,
        "gross_amount": txn.amount,
        "currency": "IDR",
        "payment_type": txn.payment_type,
        "transaction_time": format_time(txn.created),
        "transaction_status": txn.status,
        "fraud_status": "accept",
    }


def _charge_answer(txn: Transaction, base: str) -> dict[str, Any]:
    tid = txn.transaction_id
    common = {
        "gross_amount": txn.amount,
        "currency": "IDR",
        "payment_type": txn.payment_type,
        "transaction_time": format_time(txn.created),
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
            "expiry_time": format_time(txn.expires),
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
        "expire_time": format_time(txn.expires),
    }
