"""The one apply path: every change to a payment goes through here.

    lock the row of the order that was asked about
    check Midtrans' answer against it     order_id, gross_amount, transaction_id, a known status
    decide                                states.recorded_state (fraud_status), states.decide
    write                                 status, paid_at once, payment_type, the answer kept

An answer that fails a check changes no row and raises ``AnswerMismatch`` (exit 1): the
caller records and shows it, and its run goes on. ``apply_answer`` opens its own
transaction; ``apply_locked`` works inside the caller's, on a row it has locked.
``apply_proven`` is the offline variant: a state proven by a notification's signature
alone, nothing else written.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from midpay import db, states
from midpay.db import intake as events_sql
from midpay.db import schema
from midpay.errors import GatewayProtocolError, InvalidPayload, MidpayError, NotFoundError
from midpay.midtrans.notifications import TransactionView, parse_view

_PAYMENT_TYPE = re.compile(r"[a-z0-9_]{1,64}", re.ASCII)


@dataclass(frozen=True)
class ApplyResult:
    """What applying Midtrans' view did to one payment."""

    order_id: str
    status_before: str
    status_after: str
    applied: bool  # the row was written (a move, paid_at filled, payment_type, the mark cleared)
    note: str | None = None  # why a view was not applied (stale, out of order)
    payment: db.Payment | None = None


class AnswerMismatch(MidpayError):
    """Midtrans' answer does not fit the payment asked about, or contradicts itself: nothing applied."""


def check_answer(payment: db.Payment, view: TransactionView) -> str:
    """Refuse an answer that is not about this payment; return the state to record for it.

    Its order_id must be the one asked about, its gross_amount the stored amount, its
    transaction_id the stored one once there is one, its transaction_status one midpay
    knows, and its fraud_status must not contradict that status (``states``).
    """
    order = payment.order_id
    if view.order_id != order:
        raise AnswerMismatch(f"order {order}: Midtrans' answer is about order {view.order_id[:60]!r}; nothing applied")
    if view.gross_amount != payment.gross_amount:
        raise AnswerMismatch(
            f"amount mismatch for {order}: Midtrans says {view.gross_amount_raw[:40]}, stored {payment.gross_amount}; "
            "nothing applied"
        )
    known = payment.midtrans_transaction_id
    if known is not None and view.transaction_id is not None and view.transaction_id != known:
        raise AnswerMismatch(
            f"order {order}: Midtrans' answer is about transaction {view.transaction_id[:60]!r}, stored {known}; "
            "nothing applied"
        )
    if view.transaction_status not in states.MIDTRANS_STATES:
        raise AnswerMismatch(
            f"order {order}: Midtrans reports transaction_status {view.transaction_status[:40]!r}, "
            "which midpay does not know; nothing applied"
        )
    target = states.recorded_state(view.transaction_status, view.fraud_status)
    if target is None:
        raise AnswerMismatch(
            f"order {order}: Midtrans reports {view.transaction_status} with fraud_status "
            f"{(view.fraud_status or '')[:20]!r}, which contradict each other; nothing applied"
        )
    return target


def needs_write(payment: db.Payment, view: TransactionView) -> bool:
    """Whether applying ``view`` could do anything to the row (write, or raise AnswerMismatch).

    False only for an answer that fits the row and repeats exactly what it holds, so
    that a caller may skip the transaction altogether (reconcile's unchanged rows).
    """
    try:
        target = check_answer(payment, view)
    except AnswerMismatch:
        return True
    said = (view.payment_type or "").strip().lower()
    return (
        target != payment.status
        or payment.unconfirmed_since is not None
        or (target in states.MONEY_STATES and payment.paid_at is None)
        or (bool(said) and said != payment.payment_type)
        or (payment.midtrans_transaction_id is None and view.transaction_id is not None)
    )


def apply_answer(
    conn: db.Connection, order_id: str, answer: TransactionView | Mapping[str, Any], *, what: str = "status answer"
) -> ApplyResult:
    """Lock the row of ``order_id`` (the order that was asked about), check the answer, decide, write.

    One transaction of its own. ``answer`` is Midtrans' decoded answer or its view.
    """
    view = answer if isinstance(answer, TransactionView) else answer_view(dict(answer), order_id, what)
    with conn.transaction():
        payment = db.get_payment(conn, order_id, for_update=True)
        if payment is None:
            raise NotFoundError(f"no such order: {order_id}")
        return apply_locked(conn, payment, view)


def apply_locked(conn: db.Connection, payment: db.Payment, view: TransactionView) -> ApplyResult:
    """The rule itself, on a payment the caller locked: check, decide, write; AnswerMismatch on a bad answer.

    The answer counts as confirmed: it clears the row's awaiting-confirmation mark and
    records that order's awaiting notifications as decided.
    """
    target = check_answer(payment, view)
    db.sync_ledger(conn, payment, view.raw)  # every refund Midtrans reports gets its ledger row (refunds)
    decision = states.decide(payment.status, target)
    paid_at = None
    if target in states.MONEY_STATES and payment.paid_at is None and decision is not states.Decision.REFUSED:
        # Midtrans' settlement_time says when it was paid; a refund reported after lost
        # notifications carries it too, so the refunded row still knows.
        paid_at = view.settlement_time or view.transaction_time or datetime.now(UTC)
    payment_type = _payment_type(conn, view.payment_type, payment.payment_type)
    unmark = payment.unconfirmed_since is not None
    fill_id = payment.midtrans_transaction_id is None and view.transaction_id is not None
    note = None
    if decision is states.Decision.REFUSED:
        note = f"not applied: {target} after {payment.status} (status only moves forward)"
    status = target if decision is states.Decision.APPLY else payment.status
    if decision is states.Decision.APPLY or paid_at is not None or payment_type is not None or unmark or fill_id:
        if decision is states.Decision.REFUSED:
            # Only the mark goes: nothing of a refused answer is written to the row.
            paid_at = payment_type = None
        updated = db.update_payment(
            conn,
            payment.id,
            status=status,
            midtrans_transaction_id=view.transaction_id if decision is not states.Decision.REFUSED else None,
            response=view.raw if decision is not states.Decision.REFUSED else {},
            paid_at=paid_at,
            payment_type=payment_type,
            unconfirmed=False if unmark else None,
        )
        if unmark:
            moved = "applied" if updated.status != payment.status else "unchanged"
            events_sql.settle_awaiting(conn, payment.order_id, moved)
        changed = decision is states.Decision.APPLY or paid_at is not None or payment_type is not None or (
            fill_id and decision is not states.Decision.REFUSED
        )
        return ApplyResult(payment.order_id, payment.status, updated.status, changed, note=note, payment=updated)
    return ApplyResult(payment.order_id, payment.status, payment.status, False, note=note, payment=payment)


@dataclass(frozen=True)
class Proof:
    """What a verified body's signed fields make of a row offline (``proven``)."""

    decision: states.Decision
    after: str  # the status the row ends with
    mark: bool  # the row becomes awaiting confirmation
    note: str | None

    @property
    def writes(self) -> bool:
        return self.decision is states.Decision.APPLY or self.mark


def proven(before: str, awaiting: bool, state: str | None, *, exact: bool) -> Proof:
    """The offline rule, shared by ``apply_proven`` and the offline batches (``intake_batch.proven_step``).

    An ``exact`` state goes through the forward-only rule; a floor (not exact) only
    moves a ``created`` row, and marks the row awaiting confirmation unless it already is.
    """
    decision = states.decide(before, state) if state is not None else states.Decision.UNCHANGED
    if not exact and before != states.CREATED:
        decision = states.Decision.UNCHANGED
    refused = decision is states.Decision.REFUSED
    note = f"not applied: {state} after {before} (status only moves forward)" if refused else None
    after = state if decision is states.Decision.APPLY and state is not None else before
    return Proof(decision, after, not exact and not awaiting, note)


def apply_proven(conn: db.Connection, payment: db.Payment, state: str | None, *, exact: bool) -> ApplyResult:
    """Offline: apply only what a verified notification's signature proves, on a locked row.

    An ``exact`` state goes through the forward-only rule; a floor (not exact) only
    moves a ``created`` row. Nothing unsigned is written: no transaction id, no time, no
    answer. When not exact, the row is marked as awaiting confirmation.
    """
    before = payment.status
    proof = proven(before, payment.unconfirmed_since is not None, state, exact=exact)
    decision, mark, note = proof.decision, proof.mark, proof.note
    if proof.writes:
        updated = db.update_payment(
            conn,
            payment.id,
            status=proof.after,
            midtrans_transaction_id=None,
            response={},
            paid_at=None,
            unconfirmed=True if mark else None,
        )
        return ApplyResult(payment.order_id, before, updated.status, decision is states.Decision.APPLY, note, updated)
    return ApplyResult(payment.order_id, before, before, False, note, payment)


def _payment_type(conn: db.Connection, said: str | None, stored: str) -> str | None:
    """Midtrans' payment_type when it differs from the stored one and fits the column (else None)."""
    if not said:
        return None
    value = said.strip().lower()
    if value == stored or not _PAYMENT_TYPE.fullmatch(value):
        return None
    limit = schema.layout(conn, conn.info.dsn).max_length("payment_transactions", "payment_type")
    if limit is not None and len(value) > limit:
        return None
    return value


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
    body.pop("transaction_id", None)  # a refusal names no transaction of this payment
    body.pop("fraud_status", None)
    return parse_view(body, what="charge refusal")


def answer_view(answer: dict[str, Any], order_id: str, what: str) -> TransactionView:
    """Midtrans' answer about ``order_id`` as a view; an answer about another order is refused."""
    try:
        view = parse_view(answer, what=what)
    except InvalidPayload as exc:
        raise GatewayProtocolError(f"order {order_id}: {exc}") from exc
    if view.order_id != order_id:
        raise AnswerMismatch(
            f"order {order_id}: Midtrans' {what} is about order {view.order_id[:60]!r}; nothing applied"
        )
    return view
