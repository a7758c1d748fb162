"""Operator use cases: look at payments and stored notifications, reprocess notifications,
cancel, expire and refund a payment.

Like ``payments``, this module owns transaction boundaries and returns data; it never
prints. Every change to a payment still goes through ``payments.apply_view``, fed with
Midtrans' own answer. No transaction is held open while Midtrans is being asked.

A refund is made safe to retry by its ``refund_key``, which Midtrans pays out once
however often it is sent:

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
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from midpay import db, payments, states
from midpay.errors import (
    GatewayError,
    GatewayProtocolError,
    InvalidPayload,
    MidpayError,
    MidtransRejected,
    NotFoundError,
    OutcomeUnknown,
    TransactionNotFound,
    UsageError,
)
from midpay.notifications import TransactionView, parse_view

if TYPE_CHECKING:
    from midpay.gateway import Gateway

# Payments with money received and not all of it refunded.
REFUNDABLE_STATES: frozenset[str] = frozenset({states.SETTLEMENT, states.CAPTURE, states.PARTIAL_REFUND})
REFUND_STATES: frozenset[str] = frozenset({states.PARTIAL_REFUND, states.REFUND})
MAX_REASON = 255  # Midtrans: String(255), shown in the customer's GoPay history

_DURATION = re.compile(r"([0-9]{1,9})\s*([smhdw])", re.ASCII)
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9_-]", re.ASCII)
_KEY_STEM = 30  # the order id part of a refund_key; the rest is "-rf-N", within 46


# --- views -----------------------------------------------------------------------------


def parse_since(text: str, *, now: datetime | None = None) -> datetime:
    """A moment from ``2026-11-26``, ``2026-11-26T10:00:00+07:00`` or a duration ago (``30m``, ``2h``, ``7d``).

    Durations take s, m, h, d or w. A date or time without an offset is local time.
    """
    raw = text.strip()
    moment: datetime | None = None
    try:
        duration = _DURATION.fullmatch(raw.lower())
        if duration is not None:
            ago = timedelta(seconds=int(duration.group(1)) * _SECONDS[duration.group(2)])
            moment = (now or datetime.now(UTC)) - ago
        elif raw:
            moment = datetime.fromisoformat(raw)
            if moment.tzinfo is None:
                moment = moment.astimezone()
    except (ValueError, OverflowError):
        moment = None
    if moment is None:
        raise UsageError(
            f"--since must be a date or time (2026-11-26, 2026-11-26T10:00:00+07:00) "
            f"or a duration like 30m, 2h, 7d; not {text[:40]!r}"
        )
    return moment


def status_filter(status: str | None) -> str | None:
    """A ``--status`` value as stored (lower case), or a usage error naming the known states."""
    if status is None:
        return None
    if not states.is_known(status):
        raise UsageError(f"--status must be one of {', '.join(states.ALL_STATES)}; not {status[:40]!r}")
    return states.normalize(status)


def list_payments(
    conn: db.Connection, *, status: str | None = None, since: datetime | None = None, limit: int = 50
) -> list[db.Payment]:
    """The most recent payments first, optionally of one status and created since a moment."""
    status = status_filter(status)
    if limit < 1:
        raise UsageError("--limit must be at least 1")
    with conn.transaction():
        return db.list_payments(conn, status=status, since=since, limit=limit)


def list_events(
    conn: db.Connection, *, order_id: str | None = None, rejected_only: bool = False, limit: int = 50
) -> list[db.WebhookEvent]:
    """Stored notifications, newest first; ``rejected_only`` keeps those not processed."""
    if limit < 1:
        raise UsageError("--limit must be at least 1")
    with conn.transaction():
        return db.list_events(conn, order_id=order_id, rejected_only=rejected_only, limit=limit)


def reprocess_events(
    conn: db.Connection,
    server_key: str,
    *,
    order_id: str | None = None,
    rejected_only: bool = False,
    on_result: Callable[[payments.NotificationResult], None] | None = None,
) -> list[payments.NotificationResult]:
    """Verify and apply every unprocessed stored notification again, oldest first.

    Each outcome is recorded on the notification's own row. ``rejected_only`` takes
    only the rows recorded as rejected (not those never decided at all). A row that a
    concurrent run is reprocessing is skipped.
    """
    with conn.transaction():
        ids = db.select_unprocessed_event_ids(conn, order_id=order_id, rejected_only=rejected_only)
    results: list[payments.NotificationResult] = []
    for event_id in ids:
        result = payments.reprocess_notification(conn, event_id, server_key, rejected_only=rejected_only)
        if result is not None:
            results.append(result)
            if on_result is not None:
                on_result(result)
    return results


def get_payment(conn: db.Connection, order_id: str) -> db.Payment:
    """The stored payment of ``order_id``, or NotFoundError."""
    with conn.transaction():
        payment = db.get_payment(conn, order_id)
    if payment is None:
        raise NotFoundError(f"no such order: {order_id}")
    return payment


# --- cancel and expire -----------------------------------------------------------------


@dataclass(frozen=True)
class ActionOutcome:
    """A payment after Midtrans' answer to cancel or expire was applied."""

    payment: db.Payment
    result: payments.ApplyResult


def cancel(conn: db.Connection, gateway: Gateway, order_id: str) -> ActionOutcome:
    """Ask Midtrans to cancel a pending payment, then apply its answer."""
    return _end(conn, gateway, order_id, "cancel")


def expire(conn: db.Connection, gateway: Gateway, order_id: str) -> ActionOutcome:
    """Ask Midtrans to expire a pending payment now, then apply its answer."""
    return _end(conn, gateway, order_id, "expire")


def _end(conn: db.Connection, gateway: Gateway, order_id: str, action: str) -> ActionOutcome:
    payment = get_payment(conn, order_id)
    call = gateway.cancel if action == "cancel" else gateway.expire
    try:
        answer = call(order_id)
    except TransactionNotFound as exc:
        raise NotFoundError(
            f"Midtrans does not know order {order_id} (it is {payment.status} here): nothing to {action}"
        ) from exc
    except MidtransRejected as exc:
        raise MidtransRejected(
            f"{exc}; it is {payment.status} here (see `midpay status {order_id}`)",
            exc.status_code,
            exc.body,
        ) from exc
    except OutcomeUnknown as exc:
        raise OutcomeUnknown(
            f"no answer from Midtrans to the {action} of order {order_id}; it may or may not have taken effect: "
            f"run `midpay status {order_id}` to see"
        ) from exc
    except GatewayError as exc:
        raise type(exc)(f"{exc}; order {order_id} was not changed here") from exc
    result = payments.apply_view(conn, _answer_view(answer, order_id, f"{action} answer"))
    assert result.payment is not None
    return ActionOutcome(result.payment, result)


def _answer_view(answer: dict[str, Any], order_id: str, what: str) -> TransactionView:
    """Midtrans' answer about ``order_id`` as a view; an answer about another order is refused."""
    try:
        view = parse_view(answer, what=what)
    except InvalidPayload as exc:
        raise GatewayProtocolError(f"order {order_id}: {exc}") from exc
    if view.order_id != order_id:
        raise GatewayProtocolError(f"order {order_id}: the {what} names order {view.order_id[:60]!r}")
    return view


# --- refund ----------------------------------------------------------------------------


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
    result: payments.ApplyResult | None
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
    view = _answer_view(answer, order_id, "refund answer")
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
    result = payments.apply_view(conn, view)
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
