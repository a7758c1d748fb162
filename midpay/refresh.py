"""Ask Midtrans about one payment and apply its answer (``status``, ``charge --wait``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from midpay import db, states
from midpay.apply import AnswerMismatch, ApplyResult, apply_answer, synthetic_failure
from midpay.errors import (
    GatewayError,
    InvalidPayload,
    MidpayError,
    MidtransRejected,
    NotFoundError,
    TransactionNotFound,
)
from midpay.ledger import wants_refresh
from midpay.notifications import TransactionView, parse_view

if TYPE_CHECKING:
    from midpay.gateway import Gateway

# A `created` row Midtrans has never heard of, this long after its insert, is a charge
# that never arrived: well past the five-minute life of its Idempotency-Key.
CREATED_GRACE_SECONDS = 600.0



@dataclass(frozen=True)
class RefreshOutcome:
    """A payment after asking Midtrans about it, and what went wrong asking, if anything."""

    payment: db.Payment
    view: TransactionView | None = None
    result: ApplyResult | None = None
    error: MidpayError | None = None


def refresh(
    conn: db.Connection,
    gateway: Gateway | None,
    order_id: str,
    *,
    grace: float = CREATED_GRACE_SECONDS,
) -> RefreshOutcome:
    """Read one payment; when it is unsettled (or its refunds are, ``ledger.wants_refresh``) and a
    gateway is given, apply Midtrans' answer."""
    payment = db.get_payment(conn, order_id)
    conn.commit()
    if payment is None:
        raise NotFoundError(f"no such order: {order_id}")
    if gateway is None or not wants_refresh(conn, payment):
        conn.commit()
        return RefreshOutcome(payment)
    try:
        return _check(conn, gateway, payment, grace=grace)
    except (GatewayError, MidtransRejected, InvalidPayload, AnswerMismatch) as exc:
        return RefreshOutcome(payment, error=exc)


def _check(conn: db.Connection, gateway: Gateway, payment: db.Payment, *, grace: float) -> RefreshOutcome:
    try:
        answer = gateway.status(payment.order_id)
    except TransactionNotFound as exc:
        age = (datetime.now(UTC) - payment.created_at).total_seconds()
        if payment.status == states.CREATED and age >= grace:
            view = synthetic_failure(
                payment, "404", "the charge never reached Midtrans (unknown there after the grace period)", {}
            )
            result = apply_answer(conn, payment.order_id, view)
            assert result.payment is not None
            return RefreshOutcome(result.payment, view, result)
        if payment.status == states.CREATED:
            return RefreshOutcome(payment)  # Midtrans may still be processing the charge
        raise MidtransRejected(
            f"Midtrans does not know order {payment.order_id} although it is {payment.status} here", "404"
        ) from exc
    view = parse_view(answer, what="status answer")
    result = apply_answer(conn, payment.order_id, view)
    assert result.payment is not None
    return RefreshOutcome(result.payment, view, result)

