"""Refunds: a ledger that matches Midtrans, and a refund command that is safe to rerun.

``refund`` takes these steps; a crash at any point leaves something a rerun of the
same command, ``status`` or ``reconcile`` finishes, and nothing is paid twice:

    1. ask Midtrans for the payment's status (its figures, not midpay's memory);
    2. lock the payment; apply that answer, which merges every refund Midtrans
       reports into the ledger (``db.sync_ledger``); decide: send again an earlier
       ``requested`` refund of the same amount and reason (its answer was lost), call
       a repeat of a refund already made "already done", or record a new
       ``requested`` row with the next refund_key; commit;
    3. POST /v2/{order_id}/refund with that key (Midtrans pays a refund_key once);
    4. lock the payment; the refund row becomes ``done`` and the payment takes
       Midtrans' answer in one transaction; commit.

Refused (412, 414, a 202 denial) makes the row ``rejected``; no answer leaves it
``requested``. docs/RELIABILITY.md lists the crash points and what each leaves.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from midpay import db, states
from midpay.errors import (
    DatabaseUnavailable,
    GatewayError,
    MidpayError,
    MidtransRejected,
    NotFoundError,
    TransactionNotFound,
    UsageError,
    midtrans_failures,
)
from midpay.midtrans.notifications import TransactionView
from midpay.payments.transition import answer_view, apply_locked
from midpay.refunds.ledger import REFUNDABLE_STATES, Ledger, ledger, refund_key
from midpay.refunds.report import chargeback_id, read_report
from midpay.testing.crashpoints import reach

if TYPE_CHECKING:
    from midpay.midtrans.gateway import Gateway

REFUND_STATES: frozenset[str] = frozenset({states.PARTIAL_REFUND, states.REFUND})
MAX_REASON = 255  # Midtrans: String(255), shown in the customer's GoPay history
# A refund of the same amount and reason as one midpay made this recently is taken as
# a rerun of that command (its process died before it could say it was done).
REPEAT_WINDOW = timedelta(hours=24)

# --- the refund command -------------------------------------------------------------------


@dataclass(frozen=True)
class RefundPlan:
    """What a refund command will do, decided from Midtrans' figures and the ledger."""

    ledger: Ledger
    amount: int
    retry: db.Refund | None = None  # an earlier attempt whose outcome is unknown: send its key again
    already: db.Refund | None = None  # this refund was made already: send nothing

    @property
    def payment(self) -> db.Payment:
        return self.ledger.payment


@dataclass(frozen=True)
class RefundOutcome:
    """A finished refund, and the payment and ledger after it.

    ``result``: ``refunded`` (a new refund_key, paid), ``resent`` (an earlier attempt's
    key sent again; Midtrans paid it once), ``recorded`` (Midtrans had paid the earlier
    attempt; nothing sent), ``already`` (the same refund was made before; nothing sent).
    """

    refund: db.Refund
    ledger: Ledger
    result: str

    @property
    def payment(self) -> db.Payment:
        return self.ledger.payment

    @property
    def retried(self) -> bool:
        return self.result in ("resent", "recorded")


def plan_refund(
    conn: db.Connection, gateway: Gateway, order_id: str, amount: int | None = None, reason: str | None = None
) -> RefundPlan:
    """What ``refund`` would do now, from Midtrans' current figures; sends no refund."""
    _check_input(amount, reason)
    view = _midtrans_figures(conn, gateway, order_id)
    with _recording(order_id, "nothing was sent to Midtrans: rerun the same command"), conn.transaction():
        decided, _ = _lock_and_plan(conn, view, amount, reason)
    return _or_raise(decided)


def refund(
    conn: db.Connection, gateway: Gateway, order_id: str, *, amount: int | None = None, reason: str | None = None
) -> RefundOutcome:
    """Refund ``amount`` (default: all that is left) through Midtrans; safe to rerun after any failure."""
    _check_input(amount, reason)
    view = _midtrans_figures(conn, gateway, order_id)
    reach("refund.checked", conn)
    with _recording(order_id, "nothing was sent to Midtrans: rerun the same command"), conn.transaction():
        decided, finished = _lock_and_plan(conn, view, amount, reason)
        if isinstance(decided, RefundPlan) and decided.already is None:
            reach("refund.before_row", conn)
            row = decided.retry or _new_refund(conn, decided, reason)
    plan = _or_raise(decided)  # a refusal raises only now: Midtrans' figures were committed
    if plan.already is not None:
        return RefundOutcome(plan.already, plan.ledger, "recorded" if plan.already.id in finished else "already")
    reach("refund.row_committed", conn)
    return _send(conn, gateway, row, retried=plan.retry is not None)


def _check_input(amount: int | None, reason: str | None) -> None:
    if amount is not None and (isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0):
        raise UsageError(f"--amount must be a positive whole number of rupiah, not {amount!r}")
    if reason is not None and len(reason) > MAX_REASON:
        raise UsageError(f"--reason is {len(reason)} characters; Midtrans takes at most {MAX_REASON}")


def _midtrans_figures(conn: db.Connection, gateway: Gateway, order_id: str) -> TransactionView:
    """Midtrans' status answer, after checking that the stored payment can be refunded at all."""
    with _recording(order_id, "nothing was sent to Midtrans: rerun the same command"):
        payment = db.get_payment(conn, order_id)
        conn.commit()
    if payment is None:
        raise NotFoundError.order(order_id)
    db.whole_amount(payment)  # a stored fraction of a rupiah is refused, never rounded
    if payment.status not in REFUNDABLE_STATES | {states.REFUND}:
        raise _not_refundable(payment)
    try:
        answer = gateway.status(order_id)
    except GatewayError as exc:
        raise type(exc)(f"{exc}; nothing was sent to Midtrans: rerun the same command") from exc
    except TransactionNotFound as exc:
        raise MidpayError(
            f"Midtrans does not know order {order_id} although it is {payment.status} here; nothing was sent"
        ) from exc
    return answer_view(answer, order_id, "status answer")


def _not_refundable(payment: db.Payment) -> MidpayError:
    return MidpayError(
        f"order {payment.order_id} is {payment.status}: only settlement, capture or partial_refund payments "
        "can be refunded; nothing was sent to Midtrans"
    )


def _lock_and_plan(
    conn: db.Connection, view: TransactionView, amount: int | None, reason: str | None
) -> tuple[RefundPlan | MidpayError, set[Any]]:
    """Lock the payment, apply Midtrans' answer and its refunds, and decide (caller's transaction).

    The decision is a plan, or the error refusing the refund (returned, not raised, so
    that the caller commits what Midtrans reported before raising it). Also returns the
    ids of midpay's requested rows that this answer showed were paid.
    """
    payment = db.get_payment(conn, view.order_id, for_update=True)
    if payment is None:
        raise NotFoundError.order(view.order_id)
    open_before = {r.id for r in db.list_refunds(conn, payment.id) if r.status == "requested"}
    result = apply_locked(conn, payment, view)
    assert result.payment is not None
    payment = result.payment
    db.sync_ledger(conn, payment, read_report(view.raw))  # the transition merges it too; the refund need not rely on it
    current = ledger(conn, payment)
    finished = {r.id for r in current.rows if r.id in open_before and r.status == "done"}
    try:
        return _plan(current, amount, reason, finished), finished
    except MidpayError as exc:
        return exc, finished


def _or_raise(decided: RefundPlan | MidpayError) -> RefundPlan:
    if isinstance(decided, MidpayError):
        raise decided
    return decided


def _plan(current: Ledger, amount: int | None, reason: str | None, finished: set[Any]) -> RefundPlan:
    payment = current.payment
    order_id = payment.order_id
    open_row = next(iter(current.in_flight), None)
    if open_row is not None:
        if open_row.reason == reason and amount in (None, open_row.amount):
            return RefundPlan(current, open_row.amount, retry=open_row)
        again = f"midpay refund {shlex.quote(order_id)} --amount {open_row.amount}"
        if open_row.reason is not None:
            again += f" --reason {shlex.quote(open_row.reason)}"
        raise MidpayError(
            f"order {order_id} has a refund of {open_row.amount} whose outcome is unknown "
            f"(refund_key {open_row.refund_key}); finish it first: {again}"
        )
    repeat = _repeat_of(current, amount, reason, finished)
    if repeat is not None:
        return RefundPlan(current, repeat.amount, already=repeat)
    if payment.status not in REFUNDABLE_STATES:
        if payment.status == states.REFUND:
            raise MidpayError(
                f"order {order_id} is refund: all {payment.gross_amount} of it has been refunded; nothing was sent"
            )
        raise _not_refundable(payment)
    remainder = current.refundable
    if remainder <= 0:
        raise MidpayError(
            f"order {order_id} has nothing left to refund ({current.refunded} of {payment.gross_amount} refunded)"
        )
    if amount is None:
        amount = remainder
    if amount > remainder:
        raise UsageError(
            f"--amount {amount} is more than the {remainder} rupiah left to refund of order {order_id} "
            f"(paid {payment.gross_amount}, refunded {current.refunded})"
        )
    return RefundPlan(current, amount)


def _repeat_of(current: Ledger, amount: int | None, reason: str | None, finished: set[Any]) -> db.Refund | None:
    """A refund midpay made that this command repeats (same amount and reason): one made
    recently, or one whose outcome this very check has just found (however old)."""
    since = datetime.now(UTC) - REPEAT_WINDOW
    made = [
        r for r in current.rows
        if r.origin == "midpay" and r.status == "done" and r.reason == reason
        and (r.created_at >= since or r.id in finished)
    ]
    if amount is not None:
        return next((r for r in reversed(made) if r.amount == amount), None)
    # "Refund the rest" again, when nothing is left: the rest was refunded by the last one.
    if made and current.payment.status == states.REFUND:
        return made[-1]
    return None


def _new_refund(conn: db.Connection, plan: RefundPlan, reason: str | None) -> db.Refund:
    payment = plan.payment
    number = sum(1 for r in plan.ledger.rows if r.origin == "midpay") + 1
    for _ in range(100):  # a key taken (by another system's refund of this payment) moves on
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


def _send(conn: db.Connection, gateway: Gateway, row: db.Refund, *, retried: bool) -> RefundOutcome:
    """Ask Midtrans for the refund of ``row`` and record its answer with the payment's."""
    order_id, key = row.order_id, row.refund_key
    assert key is not None
    stays = f"refund {key} of {row.amount} stays requested: rerun the same command to retry it safely " \
        "(Midtrans pays out a refund_key once)"
    try:
        with midtrans_failures(
            f"no answer from Midtrans to refund {key} ({row.amount} of order {order_id}); it may or may not "
            f"have been paid out. {stays[0].upper()}{stays[1:]}",
            stays,
        ):
            answer = gateway.refund(
                order_id, refund_key=key, amount=row.amount, reason=row.reason,
                idempotency_key=key if len(key) <= 46 else None,
            )
    except (MidtransRejected, TransactionNotFound) as exc:
        return _refused(conn, gateway, row, exc, retried=retried)
    reach("refund.answered", conn)
    try:
        view = answer_view(answer, order_id, "refund answer")
    except GatewayError as exc:
        raise type(exc)(f"{exc}; {stays}") from exc
    if view.transaction_status not in REFUND_STATES:
        # A definite no in a 2xx answer, e.g. 202 "Refund denied by the bank".
        _reject(conn, row, answer)
        raise MidtransRejected(
            f"Midtrans did not refund order {order_id} ({view.status_code} {view.status_message or ''}".rstrip()
            + f"); it is still {view.transaction_status} there; refund {key} is recorded as rejected",
            view.status_code,
            answer,
        )
    return _record_paid(conn, row, view, "resent" if retried else "refunded")


def _record_paid(conn: db.Connection, row: db.Refund, view: TransactionView, result: str) -> RefundOutcome:
    """The refund row becomes done and the payment takes Midtrans' answer: one transaction."""
    made = f"Midtrans made refund {row.refund_key} ({row.amount} of order {row.order_id})"
    with _recording(row.order_id, f"{made}, but recording it failed; rerun the same command or "
                    f"`midpay status {row.order_id}` to record it (nothing is paid twice)"), conn.transaction():
        payment = db.get_payment(conn, row.order_id, for_update=True)
        if payment is None:
            raise NotFoundError.order(row.order_id)
        done = db.finish_refund(
            conn, row.id, status="done", response=view.raw,
            chargeback_id=chargeback_id(view.raw.get("refund_chargeback_id")),
        )
        applied = apply_locked(conn, payment, view)
        assert applied.payment is not None
        current = ledger(conn, applied.payment)
        reach("refund.outcome_written", conn)
    reach("refund.committed", conn)
    return RefundOutcome(done, current, result)


def _refused(
    conn: db.Connection, gateway: Gateway, row: db.Refund, exc: MidpayError, *, retried: bool
) -> RefundOutcome:
    """Midtrans refused: rejected, unless the key was paid before (a retry, or a 406 duplicate)."""
    duplicate = isinstance(exc, MidtransRejected) and exc.status_code == "406"
    if retried or duplicate:
        found = _status_listing(gateway, row)
        if found is not None:
            return _record_paid(conn, row, found, "resent")
    body = getattr(exc, "body", None)
    stored = _reject(conn, row, dict(body) if isinstance(body, dict) and body else {"error": str(exc)})
    if stored.status == "done":  # another process saw it paid meanwhile
        with conn.transaction():
            payment = db.get_payment(conn, row.order_id)
            assert payment is not None
            return RefundOutcome(stored, ledger(conn, payment), "resent")
    raise MidtransRejected(
        f"{exc}; refund {row.refund_key} of order {row.order_id} is recorded as rejected",
        getattr(exc, "status_code", "404"),
        getattr(exc, "body", None),
    ) from exc


def _reject(conn: db.Connection, row: db.Refund, response: dict[str, Any]) -> db.Refund:
    with _recording(row.order_id, f"refund {row.refund_key} stays requested; rerun the same command"), \
            conn.transaction():
        db.get_payment(conn, row.order_id, for_update=True)
        return db.finish_refund(conn, row.id, status="rejected", response=response)


def _status_listing(gateway: Gateway, row: db.Refund) -> TransactionView | None:
    """Midtrans' status answer when it lists ``row``'s key (a retry it had paid already)."""
    try:
        answer = gateway.status(row.order_id)
    except GatewayError as exc:
        raise type(exc)(
            f"{exc}; could not tell whether refund {row.refund_key} was paid out: it stays requested, "
            "rerun the same command to retry it safely"
        ) from exc
    except (MidtransRejected, TransactionNotFound):
        return None
    listed = answer.get("refunds")
    if isinstance(listed, list) and any(isinstance(r, dict) and r.get("refund_key") == row.refund_key for r in listed):
        return answer_view(answer, row.order_id, "status answer")
    return None


@contextmanager
def _recording(order_id: str, consequence: str) -> Iterator[None]:
    """A lost PostgreSQL connection says what it leaves behind for this refund (exit 3)."""
    try:
        yield
    except Exception as exc:
        if db.map_error(exc) is None:
            raise
        raise DatabaseUnavailable(
            f"PostgreSQL connection failed during the refund of order {order_id}: {db.first_line(exc)}; "
            f"{consequence}"
        ) from exc
