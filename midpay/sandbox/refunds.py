"""Refunds as Midtrans makes and reports them, and the sandbox's record of every payout.

- ``POST /v2/{id}/refund`` (and ``/refund/online/direct``) with ``{refund_key, amount,
  reason}``; ``amount`` defaults to what remains. The answer carries this refund's
  ``refund_chargeback_id`` (an integer, increasing across the sandbox), ``refund_amount``
  and ``refund_key``; the transaction moves to ``partial_refund``, or ``refund`` once the
  refunds add up to the gross amount. More than what remains (or <= 0) is 414; a
  transaction that is not settled is 412.
- The same ``refund_key`` again (on the same transaction) replays the first answer and
  pays nothing, whatever the amount: Midtrans' docs call that the safe retry.
- A refund without a ``refund_key``, and one made outside midpay (the dashboard,
  ``refund_outside``), gets a key Midtrans makes up: a UUID, as in its direct refund
  sample. So an unknown key in ``refunds[]`` is how midpay meets a refund it never asked for.
- Each refund sends two notifications, as Midtrans does: one when it is made, one when
  the bank confirms it (``refund_method`` and ``bank_confirmed_at`` added to its
  ``refunds[]`` item). Confirmation is immediate unless ``auto_confirm`` is off; then
  ``confirm`` does it.
- Every refund request the API processed is kept (``requests``), replays included, so a
  test can assert that Midtrans paid out exactly what was asked, once.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

from midpay.errors import MidtransRejected, NotFoundError, UsageError

from .shapes import INVALID, INVALID_REFUND_AMOUNT, NOT_FOUND, SYNTAX_ERROR, cannot_modify, midtrans_error, money
from .state import Notice, Refund, SandboxState, Transaction

REFUNDABLE = frozenset({"settlement", "partial_refund"})
REASON_MAX = 255
_REFUND_KEY_RE = re.compile(r"[A-Za-z0-9_-]{1,100}", re.ASCII)

Answer = tuple[int, dict[str, Any]]


class RefundDesk:
    """Makes refunds on a SandboxState and keeps the payout record."""

    def __init__(self, state: SandboxState, *, auto_confirm: bool = True) -> None:
        self.state = state
        self.auto_confirm = auto_confirm
        self._next_id = 1
        self._requests: list[dict[str, Any]] = []

    # -- the API endpoint (state.lock held) --

    def request(self, ident: str, data: bytes, direct: bool, notices: list[Notice]) -> Answer:
        state = self.state
        txn = state.find(ident)
        if txn is None:
            return 200, midtrans_error("404", NOT_FOUND)
        state.expire_if_due(txn, notices)
        try:
            request = json.loads(data) if data.strip() else {}
        except ValueError:
            return 200, midtrans_error("413", SYNTAX_ERROR)
        if not isinstance(request, dict):
            return 200, midtrans_error("400", INVALID)
        refund_key = request.get("refund_key")
        amount = request.get("amount")
        if isinstance(amount, float) and amount.is_integer():
            amount = int(amount)
        entry: dict[str, Any] = {
            "order_id": txn.order_id,
            "transaction_id": txn.transaction_id,
            "endpoint": "direct" if direct else "refund",
            "refund_key": refund_key,
            "amount": amount if isinstance(amount, int) and not isinstance(amount, bool) else None,
            "replay": False,
            "paid": 0,
        }
        status, answer = self._decide(txn, request, refund_key, amount, direct, notices, entry)
        entry.update(status_code=answer.get("status_code"), refund_chargeback_id=answer.get("refund_chargeback_id"))
        self._requests.append(entry)
        return status, answer

    def _decide(
        self,
        txn: Transaction,
        request: dict[str, Any],
        refund_key: object,
        amount: object,
        direct: bool,
        notices: list[Notice],
        entry: dict[str, Any],
    ) -> Answer:
        if refund_key is not None and not (isinstance(refund_key, str) and _REFUND_KEY_RE.fullmatch(refund_key)):
            problem = "refund_key may hold only letters, digits, '-' and '_'"
            return 200, midtrans_error("400", INVALID, validation_messages=[problem])
        if isinstance(refund_key, str) and refund_key in txn.refund_answers:
            entry["replay"] = True
            return 200, dict(txn.refund_answers[refund_key])  # the same refund again pays nothing
        if txn.status not in REFUNDABLE:
            return 200, cannot_modify()
        remaining = txn.gross_amount - txn.refunded
        if amount is None:
            amount = remaining
        if isinstance(amount, bool) or not isinstance(amount, int):
            return 200, midtrans_error("400", INVALID, validation_messages=["amount must be a whole number"])
        if amount <= 0 or amount > remaining:
            return 200, {"status_code": "414", "status_message": INVALID_REFUND_AMOUNT}
        reason = request.get("reason")
        if reason is not None and not (isinstance(reason, str) and len(reason) <= REASON_MAX):
            return 200, midtrans_error("400", INVALID, validation_messages=["reason must be text of at most 255"])
        key = refund_key if isinstance(refund_key, str) else str(uuid.uuid4())
        refund = self._make(txn, amount, reason or "", key, "direct" if direct else "api", notices)
        entry["paid"] = amount
        approved = (
            "Success, refund request is approved by the bank" if direct else "Success, refund request is approved"
        )
        answer = {
            "status_code": "200",
            "status_message": approved,
            "transaction_id": txn.transaction_id,
            "order_id": txn.order_id,
            "payment_type": txn.payment_type,
            "transaction_time": txn.created_text,
            "transaction_status": txn.status,
            "gross_amount": txn.amount,
            "refund_chargeback_id": refund.chargeback_id,
            "refund_amount": money(amount),
            "refund_key": key,
        }
        txn.refund_answers[key] = answer
        self.state.stats.bump("refunds", txn.order_id)
        return 200, dict(answer)

    def _make(self, txn: Transaction, amount: int, reason: str, key: str, source: str, notices: list[Notice]) -> Refund:
        refund = Refund(self._next_id, amount, self.state.now(), reason, key, source)
        self._next_id += 1
        txn.refunds.append(refund)
        self.state.move(txn, "refund" if txn.refunded == txn.gross_amount else "partial_refund", notices)
        if self.auto_confirm or source == "direct":  # a direct refund is approved by the bank at once
            refund.confirmed = self.state.now()
            self.state.queue_notification(txn, notices)
        return refund

    # -- the Python API (takes the lock) --

    def outside(self, order_id: str, amount: int | None, reason: str | None) -> dict[str, Any]:
        """A refund made on the Midtrans dashboard: no request from midpay, a key of Midtrans' own."""
        if amount is not None and (isinstance(amount, bool) or not isinstance(amount, int)):
            raise UsageError("amount must be a whole number of rupiah")
        if reason is not None and (not isinstance(reason, str) or len(reason) > REASON_MAX):
            raise UsageError("reason must be text of at most 255 characters")
        notices: list[Notice] = []
        error: Exception | None = None
        item: dict[str, Any] = {}
        with self.state.lock:
            txn = self.state.find(order_id)
            if txn is None:
                raise NotFoundError(f"the sandbox has no order {order_id!r}")
            self.state.expire_if_due(txn, notices)
            remaining = txn.gross_amount - txn.refunded
            if txn.status not in REFUNDABLE:
                error = MidtransRejected(
                    f"order {order_id!r} is {txn.status}: nothing to refund", "412", cannot_modify()
                )
            elif not 0 < (remaining if amount is None else amount) <= remaining:
                error = MidtransRejected(
                    f"order {order_id!r} has {remaining} left to refund, not {amount}",
                    "414",
                    {"status_code": "414", "status_message": INVALID_REFUND_AMOUNT},
                )
            else:
                refund = self._make(
                    txn, remaining if amount is None else amount, reason or "", str(uuid.uuid4()), "outside", notices
                )
                item = {**refund.item(), "source": refund.source}
        self.state.emit(notices)
        if error is not None:
            raise error
        return item

    def confirm(self, order_id: str, chargeback_id: int | None = None) -> list[dict[str, Any]]:
        """The bank confirms the order's unconfirmed refunds (or one): one notification each, returned."""
        notices: list[Notice] = []
        with self.state.lock:
            txn = self.state.find(order_id)
            if txn is None:
                raise NotFoundError(f"the sandbox has no order {order_id!r}")
            waiting = [r for r in txn.refunds if r.confirmed is None]
            if chargeback_id is not None:
                waiting = [r for r in waiting if r.chargeback_id == chargeback_id]
                if not waiting:
                    raise NotFoundError(f"order {order_id!r} has no unconfirmed refund {chargeback_id}")
            bodies = []
            for refund in waiting:
                refund.confirmed = self.state.now()
                bodies.append(self.state.queue_notification(txn, notices))
        self.state.emit(notices)
        return bodies

    def paid_out(self, order_id: str) -> int:
        with self.state.lock:
            txn = self.state.find(order_id)
            if txn is None:
                raise NotFoundError(f"the sandbox has no order {order_id!r}")
            return txn.refunded

    def requests(self, order_id: str | None = None) -> list[dict[str, Any]]:
        with self.state.lock:
            return [dict(r) for r in self._requests if order_id is None or r["order_id"] == order_id]
