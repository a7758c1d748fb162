"""Midtrans' answers applied: one row (``status``, ``charge --wait``) or a batch (``reconcile``), one path.

``apply_batch`` hands every answer of a batch to ``transition`` in one transaction;
a single check is a batch of one:

    one transaction    transition: lock the rows (byte-wise order_id order), check each
                       answer once, decide (forward only, paid_at once), write every
                       row in one statement
    commit             only then are reconcile's leases completed (by its caller)

An answer that does not fit its row (a mismatch) is refused before anything of that row
is written, and fails alone. When the write itself fails (a value the database refuses,
a deadlock, a constraint at commit) the transaction is rolled back whole and the batch
applied again carefully, each row in a savepoint of its own (and, if the transaction
still fails at commit, row by row), so that only the row at fault fails. A lost
connection raises DatabaseUnavailable and nothing of the batch is committed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import psycopg

from midpay import db, states
from midpay.errors import (
    DatabaseUnavailable,
    DataConflict,
    InvalidPayload,
    MidpayError,
    MidtransRejected,
    NotFoundError,
)
from midpay.payments import transition
from midpay.payments.transition import AnswerMismatch, ApplyResult, Change, check_answer

if TYPE_CHECKING:
    from midpay.midtrans.notifications import TransactionView


@dataclass(frozen=True)
class Checked:
    """What asking Midtrans about one payment did: the state before and after, and the row's problem if any."""

    status_before: str
    status_after: str
    problem: MidpayError | None = None  # Midtrans answered, but the answer could not be applied
    view: TransactionView | None = None
    payment: db.Payment | None = None  # the row as written, when it was written


@dataclass(frozen=True)
class Answered:
    """A payment as it was asked about, and Midtrans' answer about it, which needs a write."""

    payment: db.Payment
    view: TransactionView


@dataclass(frozen=True)
class Written:
    """What the batch did to one row: a check's outcome, or the row's own failure text."""

    answered: Answered
    checked: Checked | None  # None when ``failure`` says why the row could not be applied
    failure: str | None = None


def applied(before: str, result: ApplyResult, view: TransactionView) -> Checked:
    """What applying ``view`` did, as a check's outcome: a refused move of an open row is its problem."""
    if result.note and not result.applied and states.is_open(result.status_before):
        return Checked(before, result.status_after, MidtransRejected(result.note), view, result.payment)
    return Checked(before, result.status_after, None, view, result.payment)


def preview(now: db.Payment, view: TransactionView) -> Checked:
    """What applying ``view`` to the row as it is ``now`` would do (--dry-run): nothing written."""
    try:
        target = check_answer(now, view)
    except AnswerMismatch as exc:
        return Checked(now.status, now.status, exc, view)
    decision = states.decide(now.status, target)
    return Checked(now.status, target if decision is states.Decision.APPLY else now.status, view=view)


def apply_batch(conn: db.Connection, batch: list[Answered], *, answers: bool = False) -> list[Written]:
    """Apply every answer of ``batch`` in one transaction (module docstring).

    ``answers``: the rows come back with their stored answer (one row shown to an operator).
    """
    try:
        return _quick(conn, batch, answers)
    except _Redo:
        return _careful(conn, batch, answers)


def preview_batch(conn: db.Connection, batch: list[Answered]) -> list[Written]:
    """--dry-run: what ``apply_batch`` would do to each row as it is now; nothing written."""
    try:
        current = db.read_payments(conn, [a.payment.id for a in batch])
        conn.rollback()
    except psycopg.Error as exc:
        raise (_lost(conn, exc) or DataConflict(f"could not read the rows: {db.first_line(exc)}")) from exc
    return [Written(a, preview(current.get(a.payment.id) or a.payment, a.view)) for a in batch]


class _Redo(Exception):
    """A write of the quick pass failed: its transaction is rolled back, the batch is to be redone carefully."""


def _quick(conn: db.Connection, batch: list[Answered], answers: bool) -> list[Written]:
    """Every row in one transaction without savepoints; _Redo (all rolled back) when any write fails."""
    try:
        with conn.transaction():
            current = db.lock_orders(conn, [a.payment.order_id for a in batch], answers=answers)
            todo = [a for a in batch if not _overtaken(current.get(a.payment.order_id), a.view)]
            try:
                moved = transition.transition(conn, [Change(a.payment.order_id, a.view) for a in todo], locked=current)
            except Exception as exc:
                if _fatal(conn, exc):
                    raise
                raise _Redo from exc  # the careful pass finds out which row, and why
    except psycopg.Error as exc:
        lost = _lost(conn, exc)
        if lost is not None:
            raise lost from exc
        raise _Redo from exc  # at commit: a deferred constraint, a serialization failure
    outcomes = dict(zip((id(a) for a in todo), moved, strict=True))
    return [_written(a, outcomes.get(id(a)), current.get(a.payment.order_id)) for a in batch]


def _careful(conn: db.Connection, batch: list[Answered], answers: bool) -> list[Written]:
    """Every row in a savepoint of its own; if the transaction still fails at commit, row by row."""
    written: list[Written] = []
    try:
        with conn.transaction():
            current = db.lock_orders(conn, [a.payment.order_id for a in batch], answers=answers)
            for answered in batch:
                written.append(_one(conn, answered, current))
    except psycopg.Error as exc:
        lost = _lost(conn, exc)
        if lost is not None:
            raise lost from exc
        if len(batch) == 1:
            return [Written(batch[0], None, _failure(exc))]
        # The transaction itself failed (at commit, say): nothing of it stands. Row by
        # row, so that one row's trouble does not keep the others' answers out.
        return [w for answered in batch for w in _careful(conn, [answered], answers)]
    return written


def _one(conn: db.Connection, answered: Answered, current: dict[str, db.Payment]) -> Written:
    order_id = answered.payment.order_id
    payment = current.get(order_id)
    if _overtaken(payment, answered.view):
        return _written(answered, None, payment)
    moved: ApplyResult | MidpayError
    try:
        with conn.transaction():  # a savepoint: this row's failure is its own
            [moved] = transition.transition(conn, [Change(order_id, answered.view)], locked=current)
    except _ROW_PROBLEMS as exc:
        moved = exc
    except Exception as exc:
        if _fatal(conn, exc):
            raise
        return Written(answered, None, _failure(exc))  # e.g. a deadlock, a value PostgreSQL refused
    if isinstance(moved, ApplyResult) and moved.payment is not None:
        current[order_id] = moved.payment
    return _written(answered, moved, payment)


def _written(answered: Answered, moved: ApplyResult | MidpayError | None, payment: db.Payment | None) -> Written:
    """One row's outcome; ``moved`` None: the answer was overtaken, nothing written."""
    before, view = answered.payment.status, answered.view
    if moved is None:
        assert payment is not None
        return Written(answered, Checked(payment.status, payment.status))
    if isinstance(moved, MidpayError):
        return Written(answered, Checked(before, before, moved, view))
    return Written(answered, applied(before, moved, view))


_ROW_PROBLEMS = (InvalidPayload, AnswerMismatch, DataConflict, NotFoundError)


def _overtaken(payment: db.Payment | None, view: TransactionView) -> bool:
    """Whether ``view`` is the "never reached Midtrans" failure (``refresh.ask``, after a 404 past the grace
    period) about a row that is no longer ``created``: a notification or another check found the charge at
    Midtrans since it was asked about, so the 404 is stale and nothing is written (the row is checked again)."""
    stale_404 = view.status_code == "404" and view.transaction_id is None
    return payment is not None and stale_404 and states.normalize(payment.status) != states.CREATED


def _fatal(conn: db.Connection, exc: Exception) -> bool:
    """Whether ``exc`` ends the batch, not only its row: the connection is lost, or a midpay error of the run."""
    if isinstance(exc, MidpayError):
        return not isinstance(exc, _ROW_PROBLEMS)
    return conn.broken or conn.closed


def _failure(exc: BaseException) -> str:
    return f"could not be applied: {type(exc).__name__}: {db.first_line(exc)}"[:500]


def _lost(conn: db.Connection, exc: psycopg.Error) -> MidpayError | None:
    """DatabaseUnavailable when ``exc`` lost the connection; None when the connection is still there
    (a deadlock or a serialization failure is an OperationalError too, but the row's own trouble)."""
    if not (conn.broken or conn.closed):
        return None
    return db.map_error(exc) or DatabaseUnavailable(f"PostgreSQL connection failed: {db.first_line(exc)}")
