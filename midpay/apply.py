"""The one apply path: every change to a payment goes through here.

Lock the row, check Midtrans' answer against it, decide by the forward-only rule of
``states``, write in the same transaction. Callers own the transaction boundaries
around ``apply_to``; ``apply_view`` opens its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from midpay import db, states
from midpay.errors import GatewayProtocolError, InvalidPayload, MidpayError, NotFoundError
from midpay.notifications import TransactionView, parse_view


@dataclass(frozen=True)
class ApplyResult:
    """What applying Midtrans' view did to one payment."""

    order_id: str
    status_before: str
    status_after: str
    applied: bool
    note: str | None = None  # why a view was not applied (stale, out of order)
    payment: db.Payment | None = None


class AmountMismatch(MidpayError):
    """Midtrans' gross_amount differs from the stored amount: never applied."""


def apply_view(conn: db.Connection, view: TransactionView) -> ApplyResult:
    """Lock the payment, decide by the forward-only rule, write in one transaction."""
    with conn.transaction():
        return _apply_locked(conn, view)


def _apply_locked(conn: db.Connection, view: TransactionView) -> ApplyResult:
    payment = db.get_payment(conn, view.order_id, for_update=True)
    if payment is None:
        raise NotFoundError(f"no such order: {view.order_id}")
    return apply_to(conn, payment, view)


def apply_to(
    conn: db.Connection, payment: db.Payment, view: TransactionView, *, event: db.EventOutcome | None = None
) -> ApplyResult:
    """The rule itself, on a payment the caller has locked: check the amount, decide, write.

    With ``event``, a stored notification's outcome is written by the same statement
    when the payment moves (the caller records it otherwise).
    """
    if view.gross_amount != payment.gross_amount:
        raise AmountMismatch(
            f"amount mismatch for {payment.order_id}: Midtrans says {view.gross_amount_raw}, "
            f"stored {payment.gross_amount}"
        )
    db.sync_ledger(conn, payment, view.raw)  # every refund Midtrans reports gets its ledger row (refunds)
    decision = states.decide(payment.status, view.transaction_status)
    if decision is states.Decision.APPLY:
        paid_at = None
        if view.transaction_status in states.PAID_STATES and payment.paid_at is None:
            paid_at = view.settlement_time or view.transaction_time or datetime.now(UTC)
        updated = db.update_payment(
            conn,
            payment.id,
            status=view.transaction_status,
            midtrans_transaction_id=view.transaction_id,
            response=view.raw,
            paid_at=paid_at,
            event=event,
        )
        return ApplyResult(payment.order_id, payment.status, updated.status, True, payment=updated)
    note = None
    if decision is states.Decision.REFUSED:
        note = (
            f"not applied: {view.transaction_status} after {payment.status} "
            "(status only moves forward)"
        )
    return ApplyResult(payment.order_id, payment.status, payment.status, False, note=note, payment=payment)


def synthetic_failure(payment: db.Payment, status_code: str, message: str, answer: dict[str, Any]) -> TransactionView:
    """Midtrans refused the charge: the row ends as `failure`, its answer kept."""
    body = {
        **answer,
        "order_id": payment.order_id,
        "gross_amount": f"{payment.gross_amount}.00",
        "transaction_status": states.FAILURE,
        "status_code": status_code or answer.get("status_code", ""),
        "status_message": message,
    }
    return parse_view(body, what="charge refusal")



def answer_view(answer: dict[str, Any], order_id: str, what: str) -> TransactionView:
    """Midtrans' answer about ``order_id`` as a view; an answer about another order is refused."""
    try:
        view = parse_view(answer, what=what)
    except InvalidPayload as exc:
        raise GatewayProtocolError(f"order {order_id}: {exc}") from exc
    if view.order_id != order_id:
        raise GatewayProtocolError(f"order {order_id}: the {what} names order {view.order_id[:60]!r}")
    return view
