"""Reconcile's writes: the answers that change rows, several rows to one transaction.

Reconcile's workers only ask Midtrans (``refresh.ask``); the answers that need a write
come back to the run's loop, which applies them here, a batch at a time:

    one transaction    lock the batch's rows (id order), then for each row apply_locked
                       (order_id, gross_amount, transaction_id checked; forward only;
                       paid_at once), exactly as a single check applies it
    commit             only then are the rows' leases completed (by the caller)

An answer that does not fit its row (a mismatch) is refused before anything of that row
is written, and fails alone. When a write itself fails (a value the database refuses,
a deadlock, a constraint at commit) the transaction is rolled back whole and the batch
applied again carefully, each row in a savepoint of its own (and, if the transaction
still fails at commit, row by row), so that only the row at fault fails. A lost
connection raises DatabaseUnavailable and nothing of the batch is committed: no lease
is completed, and the rows are checked again by a later run. (The quick pass, without
savepoints, costs one round trip per row instead of three.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import psycopg

from midpay import db, states
from midpay.errors import DatabaseUnavailable, DataConflict, InvalidPayload, MidpayError, NotFoundError
from midpay.payments import refresh
from midpay.payments.transition import AnswerMismatch, apply_locked, check_answer

if TYPE_CHECKING:
    from midpay.midtrans.notifications import TransactionView

BATCH_ROWS = 64  # answers applied in one transaction
BATCH_SECONDS = 0.2  # the longest an answer waits for its batch to fill


@dataclass(frozen=True)
class Answered:
    """A claimed row and Midtrans' answer about it, which needs a write."""

    payment: db.Payment
    view: TransactionView


@dataclass(frozen=True)
class Written:
    """What the batch did to one row: a check's outcome, or the row's own failure text."""

    answered: Answered
    checked: refresh.Checked | None  # None when ``failure`` says why the row could not be applied
    failure: str | None = None


def apply_batch(conn: db.Connection, batch: list[Answered]) -> list[Written]:
    """Apply every answer of ``batch`` in one transaction (module docstring)."""
    try:
        return _quick(conn, batch)
    except _Redo:
        return _careful(conn, batch)


class _Redo(Exception):
    """A write of the quick pass failed: its transaction is rolled back, the batch is to be redone carefully."""


def _quick(conn: db.Connection, batch: list[Answered]) -> list[Written]:
    """Every row in one transaction without savepoints; _Redo (all rolled back) when any write fails."""
    written: list[Written] = []
    try:
        with conn.transaction():
            locked = db.lock_payments(conn, [a.payment.id for a in batch])
            for answered in batch:
                payment, before = locked.get(answered.payment.id), answered.payment.status
                if payment is not None and _overtaken(payment, answered.view):
                    written.append(Written(answered, refresh.Checked(payment.status, payment.status)))
                    continue
                try:
                    if payment is None:
                        raise NotFoundError(f"no such order: {answered.payment.order_id}")
                    check_answer(payment, answered.view)  # refused before anything of the row is written
                except (AnswerMismatch, NotFoundError) as exc:
                    written.append(Written(answered, refresh.Checked(before, before, exc, answered.view)))
                    continue
                try:
                    result = apply_locked(conn, payment, answered.view)
                except Exception as exc:
                    if _fatal(conn, exc):
                        raise
                    raise _Redo from exc  # the careful pass finds out which row, and why
                written.append(Written(answered, refresh.applied(before, result, answered.view)))
    except psycopg.Error as exc:
        lost = _lost(conn, exc)
        if lost is not None:
            raise lost from exc
        raise _Redo from exc  # at commit: a deferred constraint, a serialization failure
    return written


def _careful(conn: db.Connection, batch: list[Answered]) -> list[Written]:
    """Every row in a savepoint of its own; if the transaction still fails at commit, row by row."""
    written: list[Written] = []
    try:
        with conn.transaction():
            locked = db.lock_payments(conn, [a.payment.id for a in batch])
            for answered in batch:
                written.append(_one(conn, answered, locked.get(answered.payment.id)))
    except psycopg.Error as exc:
        lost = _lost(conn, exc)
        if lost is not None:
            raise lost from exc
        if len(batch) == 1:
            return [Written(batch[0], None, _failure(exc))]
        # The transaction itself failed (at commit, say): nothing of it stands. Row by
        # row, so that one row's trouble does not keep the others' answers out.
        return [w for answered in batch for w in _careful(conn, [answered])]
    return written


def preview_batch(conn: db.Connection, batch: list[Answered]) -> list[Written]:
    """--dry-run: what ``apply_batch`` would do to each row as it is now; nothing written."""
    try:
        current = db.read_payments(conn, [a.payment.id for a in batch])
        conn.rollback()
    except psycopg.Error as exc:
        raise (_lost(conn, exc) or DataConflict(f"could not read the rows: {db.first_line(exc)}")) from exc
    return [Written(a, refresh.preview(current.get(a.payment.id) or a.payment, a.view)) for a in batch]


def _one(conn: db.Connection, answered: Answered, payment: db.Payment | None) -> Written:
    before = answered.payment.status
    if payment is not None and _overtaken(payment, answered.view):
        return Written(answered, refresh.Checked(payment.status, payment.status))
    try:
        with conn.transaction():  # a savepoint: this row's failure is its own
            if payment is None:
                raise NotFoundError(f"no such order: {answered.payment.order_id}")
            result = apply_locked(conn, payment, answered.view)
    except _ROW_PROBLEMS as exc:
        return Written(answered, refresh.Checked(before, before, exc, answered.view))
    except Exception as exc:
        if _fatal(conn, exc):
            raise
        return Written(answered, None, _failure(exc))  # e.g. a deadlock, a value PostgreSQL refused
    return Written(answered, refresh.applied(before, result, answered.view))


_ROW_PROBLEMS = (InvalidPayload, AnswerMismatch, DataConflict, NotFoundError)


def _overtaken(payment: db.Payment, view: TransactionView) -> bool:
    """Whether ``view`` is reconcile's own "never reached Midtrans" failure (``refresh.ask``, after a 404 past
    the grace period) about a row that is no longer ``created``: a notification or another check found the
    charge at Midtrans since the claim, so the 404 is stale and nothing is written (the row is checked again)."""
    stale_404 = view.status_code == "404" and view.transaction_id is None
    return stale_404 and states.normalize(payment.status) != states.CREATED


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
