"""Refunds: a ledger in payment_refunds, made safe to retry by the refund_key.

Midtrans pays a refund_key out once however often it is sent:

    1. lock the payment; reuse its ``requested`` refund of the same amount (an earlier
       attempt whose answer was lost), or record a new one with the next key; commit;
    2. POST /v2/{order_id}/refund with that key;
    3. answer   -> ``done``, and the answer is applied to the payment;
       refused  -> ``rejected``, unless the status answer lists the key (a retried key, or
                   a "Duplicate refund ID" 406): then ``done``;
       no answer -> stays ``requested``: the same command sends the same key again.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from midpay import db, states
from midpay.apply import ApplyResult, answer_view, apply_answer
from midpay.errors import (
    GatewayError,
    MidpayError,
    MidtransRejected,
    NotFoundError,
    OutcomeUnknown,
    TransactionNotFound,
    UsageError,
)

if TYPE_CHECKING:
    from midpay.gateway import Gateway

# Payments with money received and not all of it refunded.
REFUNDABLE_STATES: frozenset[str] = frozenset({states.SETTLEMENT, states.CAPTURE, states.PARTIAL_REFUND})
REFUND_STATES: frozenset[str] = frozenset({states.PARTIAL_REFUND, states.REFUND})
MAX_REASON = 255  # Midtrans: String(255), shown in the customer's GoPay history

_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9_-]", re.ASCII)
_KEY_STEM = 30  # the order id part of a refund_key; the rest is "-rf-N", within 46



def refund_key(order_id: str, number: int) -> str:
    """The refund_key of the ``number``-th refund of an order: ``{order_id}-rf-{number}``.

    Midtrans takes letters, digits, '-' and '_' only. An order id with other characters,
    or longer than 30, is cleaned and cut, and a hash of the full id keeps it unique.
    """
    stem = _KEY_UNSAFE.sub("_", order_id)
    if stem != order_id or len(stem) > _KEY_STEM:
        digest = hashlib.sha256(order_id.encode()).hexdigest()[:8]
        stem = f"{stem[: _KEY_STEM - 9]}-{digest}"
    return f"{stem}-rf-{number}"


@dataclass(frozen=True)
class RefundPlan:
    """What a refund command would ask of Midtrans, decided from the stored rows."""

    payment: db.Payment
    amount: int
    refunded: int  # the sum of refunds Midtrans confirmed
    retry: db.Refund | None  # the earlier attempt, with an unknown outcome, this one repeats
    number: int  # how many refunds the payment had before (for a new key)

    @property
    def remainder(self) -> int:
        return self.payment.gross_amount - self.refunded


@dataclass(frozen=True)
class RefundOutcome:
    """A finished refund, and the payment after Midtrans' answer was applied."""

    refund: db.Refund
    payment: db.Payment
    result: ApplyResult | None
    retried: bool  # the refund_key was sent before (an earlier attempt's answer was lost)


def plan_refund(conn: db.Connection, order_id: str, amount: int | None = None) -> RefundPlan:
    """Check a refund of ``amount`` (default: all that is left) without writing anything."""
    with conn.transaction():
        payment = db.get_payment(conn, order_id)
        if payment is None:
            raise NotFoundError(f"no such order: {order_id}")
        return _plan(conn, payment, amount)


def _plan(conn: db.Connection, payment: db.Payment, amount: int | None) -> RefundPlan:
    order_id = payment.order_id
    db.whole_amount(payment)  # a stored fraction of a rupiah is refused, never rounded
    if amount is not None and (isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0):
        raise UsageError(f"--amount must be a positive whole number of rupiah, not {amount!r}")
    refunds = db.list_refunds(conn, payment.id)
    refunded = sum(r.amount for r in refunds if r.status == "done")
    open_refund = next((r for r in reversed(refunds) if r.status == "requested"), None)
    allowed = REFUNDABLE_STATES | ({states.REFUND} if open_refund is not None else frozenset())
    if payment.status not in allowed:
        raise MidpayError(
            f"order {order_id} is {payment.status}: only settlement, capture or partial_refund payments "
            "can be refunded; nothing was sent to Midtrans"
        )
    remainder = payment.gross_amount - refunded
    if remainder <= 0:
        raise MidpayError(
            f"order {order_id} has nothing left to refund ({refunded} of {payment.gross_amount} refunded)"
        )
    if amount is None:
        amount = remainder
    if amount > remainder:
        raise UsageError(
            f"--amount {amount} is more than the {remainder} rupiah left to refund of order {order_id} "
            f"(paid {payment.gross_amount}, refunded {refunded})"
        )
    if open_refund is not None and open_refund.amount != amount:
        raise MidpayError(
            f"order {order_id} has a refund of {open_refund.amount} whose outcome is unknown "
            f"(refund_key {open_refund.refund_key}); retry it first: "
            f"midpay refund {order_id} --amount {open_refund.amount}"
        )
    return RefundPlan(payment, amount, refunded, open_refund, len(refunds))


def refund(
    conn: db.Connection, gateway: Gateway, order_id: str, *, amount: int | None = None, reason: str | None = None
) -> RefundOutcome:
    """Refund ``amount`` (default: all that is left) through Midtrans; safe to repeat after a timeout."""
    if reason is not None and len(reason) > MAX_REASON:
        raise UsageError(f"--reason is {len(reason)} characters; Midtrans takes at most {MAX_REASON}")
    with conn.transaction():
        payment = db.get_payment(conn, order_id, for_update=True)
        if payment is None:
            raise NotFoundError(f"no such order: {order_id}")
        plan = _plan(conn, payment, amount)
        row = plan.retry or _new_refund(conn, payment, plan, reason)
    retried = plan.retry is not None
    try:
        answer = gateway.refund(
            order_id, refund_key=row.refund_key, amount=row.amount, reason=row.reason, idempotency_key=row.refund_key
        )
    except OutcomeUnknown as exc:
        raise OutcomeUnknown(
            f"no answer from Midtrans to refund {row.refund_key} ({row.amount} of order {order_id}); it may or "
            "may not have been paid out. It stays requested: rerun the same command to retry it safely "
            "(Midtrans pays out a refund_key once)"
        ) from exc
    except GatewayError as exc:
        raise type(exc)(
            f"{exc}; refund {row.refund_key} of {row.amount} stays requested: rerun the same command "
            "to retry it safely (Midtrans pays out a refund_key once)"
        ) from exc
    except (MidtransRejected, TransactionNotFound) as exc:
        # A retried key, or one Midtrans calls a duplicate (406), may have been paid out already.
        duplicate = isinstance(exc, MidtransRejected) and exc.status_code == "406"
        found = _refund_in_status(gateway, order_id, row.refund_key) if retried or duplicate else None
        if found is None:
            with conn.transaction():
                db.finish_refund(conn, row.id, status="rejected", response=_error_body(exc))
            raise MidtransRejected(
                f"{exc}; refund {row.refund_key} of order {order_id} is recorded as rejected",
                getattr(exc, "status_code", "404"),
                _error_body(exc),
            ) from exc
        answer = found  # a retried key that Midtrans had paid out already
    view = answer_view(answer, order_id, "refund answer")
    if view.transaction_status not in REFUND_STATES:
        # A definite no in a 2xx answer, e.g. 202 "Refund denied by the bank".
        with conn.transaction():
            db.finish_refund(conn, row.id, status="rejected", response=answer)
        raise MidtransRejected(
            f"Midtrans did not refund order {order_id} ({view.status_code} {view.status_message or ''}".rstrip()
            + f"); it is still {view.transaction_status} there",
            view.status_code,
            answer,
        )
    with conn.transaction():
        done = db.finish_refund(conn, row.id, status="done", response=answer)
    # Recorded as done first: the money has moved even if applying the answer fails.
    result = apply_answer(conn, order_id, view)
    assert result.payment is not None
    return RefundOutcome(done, result.payment, result, retried)


def _new_refund(conn: db.Connection, payment: db.Payment, plan: RefundPlan, reason: str | None) -> db.Refund:
    number = plan.number + 1
    for _ in range(100):  # a key taken by another system's row moves on to the next number
        row = db.insert_refund(
            conn,
            payment_id=payment.id,
            order_id=payment.order_id,
            refund_key=refund_key(payment.order_id, number),
            amount=plan.amount,
            reason=reason,
        )
        if row is not None:
            return row
        number += 1
    raise MidpayError(f"no free refund_key for order {payment.order_id}")


def _refund_in_status(gateway: Gateway, order_id: str, key: str) -> dict[str, Any] | None:
    """Midtrans' status answer when it lists a refund under ``key`` (a retry it had paid already)."""
    try:
        status = gateway.status(order_id)
    except GatewayError as exc:
        raise type(exc)(
            f"{exc}; could not tell whether refund {key} was paid out: it stays requested, "
            "rerun the same command to retry it safely"
        ) from exc
    except (MidtransRejected, TransactionNotFound):
        return None
    listed = status.get("refunds")
    if isinstance(listed, list) and any(isinstance(r, dict) and r.get("refund_key") == key for r in listed):
        return status
    return None


def _error_body(exc: MidpayError) -> dict[str, Any]:
    body = getattr(exc, "body", None)
    return dict(body) if isinstance(body, dict) and body else {"error": str(exc)}
