"""THE transition: every change to a payment goes through ``transition``, one row or many.

    lock     the rows asked about, in byte-wise order_id order (``db.lock_orders``),
             unless the caller holds them locked already
    check    Midtrans' answer against its row, once (``check_answer``): order_id,
             gross_amount, transaction_id, a known status, a fraud_status that fits it
    decide   ``states.recorded_state`` and ``states.decide``: forward only, paid_at once;
             offline, ``proven``: only what a notification's signature proves
    write    every row in ONE statement (``db.write_payments``, the only SQL that sets
             status), then the awaiting notifications of the rows Midtrans confirmed

A batch is many rows in the caller's transaction (reconcile, the replay appliers); a
single check, charge, cancel, expire, refund or notification is a batch of one
(``apply_answer`` in a transaction of its own, ``apply_locked`` on a row the caller
locked); offline evidence (``Proven``) comes from ``intake.pipeline.decide_offline``, a
batch at a time. An answer that fails a check changes nothing of its row and comes
back as ``AnswerMismatch`` (exit 1) in that row's place; the others go on.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from midpay import db, states
from midpay.db import intake as events_sql
from midpay.db import schema
from midpay.errors import GatewayProtocolError, InvalidPayload, MidpayError, NotFoundError
from midpay.midtrans.notifications import TransactionView, parse_view
from midpay.refunds.report import read_report

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
    """Whether ``view`` could do anything to the row: a write, or a refusal to report.

    False only for an answer that repeats exactly what the row holds, so that a caller
    may skip the transaction altogether (reconcile's unchanged rows). It compares and
    does not check: anything else goes to ``transition``, which checks it once.
    """
    said = (view.payment_type or "").strip().lower()
    known = payment.midtrans_transaction_id
    repeats = (
        view.order_id == payment.order_id
        and view.gross_amount == payment.gross_amount
        and (view.transaction_id is None or view.transaction_id == known)
        and view.transaction_status in states.MIDTRANS_STATES
        and states.recorded_state(view.transaction_status, view.fraud_status) == payment.status
        and payment.unconfirmed_since is None
        and (payment.status not in states.MONEY_STATES or payment.paid_at is not None)
        and (not said or said == payment.payment_type)
    )
    return not repeats


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
    """The offline rule (``transition``'s, for offline evidence).

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


@dataclass(frozen=True)
class Proven:
    """Offline evidence: the state a verified notification's signature proves, exactly or only as a floor."""

    state: str | None
    exact: bool


@dataclass(frozen=True)
class Change:
    """One row to move: the order asked about, and Midtrans' answer about it (or, offline, a proof)."""

    order_id: str
    evidence: TransactionView | Proven


Moved = ApplyResult | AnswerMismatch | NotFoundError


@dataclass(frozen=True)
class _Step:
    result: ApplyResult
    write: db.PaymentWrite | None = None
    settles: bool = False  # Midtrans confirmed a marked row: its awaiting notifications are decided


def transition(
    conn: db.Connection, changes: Sequence[Change], *, locked: Mapping[str, db.Payment] | None = None,
    answers: bool = False, read_back: bool = True,
) -> list[Moved]:
    """THE transition (module docstring), in the caller's transaction: one result per change, in order.

    ``locked``: rows the caller holds locked already, by order id; the others are locked
    here, with their stored answer when ``answers``. Changes of one row apply one after
    the other and are written together. A write PostgreSQL refuses raises DataConflict.
    Without ``read_back`` the results carry the rows as written here, not as read back
    (the offline batches, which need no more).
    """
    rows = dict(locked or {})
    wanted = sorted({c.order_id for c in changes} - rows.keys())
    if wanted:
        rows.update(db.lock_orders(conn, wanted, answers=answers))
    steps: list[_Step | AnswerMismatch | NotFoundError] = []
    writes: dict[str, db.PaymentWrite] = {}
    for change in changes:
        payment = rows.get(change.order_id)
        if payment is None:
            steps.append(NotFoundError.order(change.order_id))
            continue
        try:
            step = _decide(conn, payment, change.evidence)
        except AnswerMismatch as exc:
            steps.append(exc)
            continue
        steps.append(step)
        if step.write is not None:
            writes[change.order_id] = _merge(writes.get(change.order_id), step.write)
            rows[change.order_id] = _as_written(payment, step.write)
    written = db.write_payments(conn, list(writes.values()), rows=read_back)
    settled = [(s.result.order_id, "applied" if s.result.status_after != s.result.status_before else "unchanged")
               for s in steps if isinstance(s, _Step) and s.settles]
    events_sql.settle_awaiting_many(conn, settled)
    moved: list[Moved] = []
    for done in steps:
        if isinstance(done, _Step):
            row = rows[done.result.order_id]
            moved.append(replace(done.result, payment=written.get(row.id, row)))
        else:
            moved.append(done)
    return moved


def _decide(conn: db.Connection, payment: db.Payment, evidence: TransactionView | Proven) -> _Step:
    if isinstance(evidence, Proven):
        return _prove(payment, evidence)
    return _confirm(conn, payment, evidence)


def _confirm(conn: db.Connection, payment: db.Payment, view: TransactionView) -> _Step:
    """Midtrans' answer on a locked row: checked once, merged into the refund ledger, decided.

    The answer counts as confirmed: it clears the row's awaiting-confirmation mark.
    """
    target = check_answer(payment, view)
    db.sync_ledger(conn, payment, read_report(view.raw))  # every refund Midtrans reports gets its ledger row
    before, order = payment.status, payment.order_id
    unmark = payment.unconfirmed_since is not None
    decision = states.decide(before, target)
    if decision is states.Decision.REFUSED:
        # Nothing of a refused answer is written to the row; only its mark goes.
        result = ApplyResult(order, before, before, False, f"not applied: {target} after {before} "
                             "(status only moves forward)")
        write = db.PaymentWrite(payment.id, before, response={}, unconfirmed=False) if unmark else None
        return _Step(result, write, unmark)
    paid_at = None
    if target in states.MONEY_STATES and payment.paid_at is None:
        # Midtrans' settlement_time says when it was paid; a refund reported after lost
        # notifications carries it too, so the refunded row still knows.
        paid_at = view.settlement_time or view.transaction_time or datetime.now(UTC)
    payment_type = _payment_type(conn, view.payment_type, payment.payment_type)
    fill_id = payment.midtrans_transaction_id is None and view.transaction_id is not None
    moves = decision is states.Decision.APPLY
    changed = moves or paid_at is not None or payment_type is not None or fill_id
    if not (changed or unmark):
        return _Step(ApplyResult(order, before, before, False))
    status = target if moves else before
    write = db.PaymentWrite(payment.id, status, view.transaction_id, view.raw, paid_at, payment_type,
                            False if unmark else None)
    return _Step(ApplyResult(order, before, status, changed), write, unmark)


def _prove(payment: db.Payment, evidence: Proven) -> _Step:
    """Offline: only what a verified notification's signature proves; nothing unsigned is written."""
    before = payment.status
    proof = proven(before, payment.unconfirmed_since is not None, evidence.state, exact=evidence.exact)
    result = ApplyResult(payment.order_id, before, proof.after, proof.decision is states.Decision.APPLY, proof.note)
    if not proof.writes:
        return _Step(result)
    return _Step(result, db.PaymentWrite(payment.id, proof.after, unconfirmed=True if proof.mark else None))


def _merge(earlier: db.PaymentWrite | None, later: db.PaymentWrite) -> db.PaymentWrite:
    """Two writes of one row in one batch as one: what the second leaves of the first."""
    if earlier is None:
        return later
    response = None if earlier.response is None and later.response is None else {
        **(earlier.response or {}), **(later.response or {})
    }
    return db.PaymentWrite(
        later.payment_id, later.status, earlier.transaction_id or later.transaction_id, response,
        earlier.paid_at or later.paid_at, later.payment_type or earlier.payment_type,
        later.unconfirmed if later.unconfirmed is not None else earlier.unconfirmed,
    )


def _as_written(payment: db.Payment, write: db.PaymentWrite) -> db.Payment:
    """The locked row as ``write`` leaves it, for the next change of the same row in the batch."""
    unconfirmed = payment.unconfirmed_since
    if write.unconfirmed is not None:
        unconfirmed = (unconfirmed or datetime.now(UTC)) if write.unconfirmed else None
    return replace(
        payment, status=write.status, unconfirmed_since=unconfirmed, paid_at=payment.paid_at or write.paid_at,
        payment_type=write.payment_type or payment.payment_type,
        midtrans_transaction_id=payment.midtrans_transaction_id or write.transaction_id,
    )


# --- one row ------------------------------------------------------------------------------


def apply_answer(
    conn: db.Connection, order_id: str, answer: TransactionView | Mapping[str, Any], *, what: str = "status answer"
) -> ApplyResult:
    """``transition`` for the row of ``order_id`` (the order that was asked about), in a transaction of its own.

    ``answer`` is Midtrans' decoded answer or its view; AnswerMismatch or NotFoundError raised.
    """
    view = answer if isinstance(answer, TransactionView) else answer_view(dict(answer), order_id, what)
    with conn.transaction():
        return _one(transition(conn, [Change(order_id, view)], answers=True))


def apply_locked(conn: db.Connection, payment: db.Payment, view: TransactionView) -> ApplyResult:
    """``transition`` for one payment the caller locked; AnswerMismatch raised on a bad answer."""
    return _one(transition(conn, [Change(payment.order_id, view)], locked={payment.order_id: payment}))


def _one(moved: list[Moved]) -> ApplyResult:
    [result] = moved
    if isinstance(result, MidpayError):
        raise result
    return result


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
