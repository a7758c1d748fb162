"""Reconcile's writes: the answers that change rows, several rows to one transaction.

Reconcile's workers only ask Midtrans (``refresh.ask``); the answers that need a write
come back to the run's loop, which applies them here, a batch at a time:

    one transaction    lock the batch's rows (id order), then for each row, in a savepoint:
                       apply_locked (order_id, gross_amount, transaction_id checked;
                       forward only; paid_at once), exactly as a single check applies it
    commit             only then are the rows' leases completed (by the caller)

A row whose answer does not fit (a mismatch, a value the columns refuse, an error of
its own in the database) rolls back its own savepoint and fails alone; the others
commit. A lost connection raises DatabaseUnavailable and nothing of the batch is
committed: no lease is completed, and the rows are checked again by a later run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import psycopg

from midpay import db, refresh
from midpay.apply import AnswerMismatch, apply_locked
from midpay.errors import DataConflict, InvalidPayload, MidpayError, NotFoundError

if TYPE_CHECKING:
    from midpay.notifications import TransactionView

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
    """Apply every answer of ``batch`` in one transaction, each row in a savepoint (module docstring)."""
    written: list[Written] = []
    try:
        with conn.transaction():
            locked = db.lock_payments(conn, [a.payment.id for a in batch])
            for answered in batch:
                written.append(_one(conn, answered, locked.get(answered.payment.id)))
    except psycopg.Error as exc:
        mapped = db.map_error(exc)
        if mapped is not None:
            raise mapped from exc
        if len(batch) == 1:
            return [Written(batch[0], None, _failure(exc))]
        # The transaction itself failed (at commit, say): nothing of it stands. Row by
        # row, so that one row's trouble does not keep the others' answers out.
        return [w for answered in batch for w in apply_batch(conn, [answered])]
    return written


def preview_batch(conn: db.Connection, batch: list[Answered]) -> list[Written]:
    """--dry-run: what ``apply_batch`` would do to each row as it is now; nothing written."""
    try:
        current = db.read_payments(conn, [a.payment.id for a in batch])
        conn.rollback()
    except psycopg.Error as exc:
        raise _lost(exc) from exc
    return [Written(a, refresh.preview(current.get(a.payment.id) or a.payment, a.view)) for a in batch]


def _one(conn: db.Connection, answered: Answered, payment: db.Payment | None) -> Written:
    before = answered.payment.status
    try:
        with conn.transaction():  # a savepoint: this row's failure is its own
            if payment is None:
                raise NotFoundError(f"no such order: {answered.payment.order_id}")
            result = apply_locked(conn, payment, answered.view)
    except (InvalidPayload, AnswerMismatch, DataConflict, NotFoundError) as exc:
        return Written(answered, refresh.Checked(before, before, exc, answered.view))
    except MidpayError:
        raise
    except psycopg.Error as exc:
        if conn.broken or conn.closed:
            raise
        return Written(answered, None, _failure(exc))  # e.g. a deadlock, a value PostgreSQL refused
    except Exception as exc:  # noqa: BLE001 - one row's surprise must not sink the batch
        return Written(answered, None, _failure(exc))
    return Written(answered, refresh.applied(before, result, answered.view))


def _failure(exc: BaseException) -> str:
    return f"could not be applied: {type(exc).__name__}: {db.first_line(exc)}"[:500]


def _lost(exc: psycopg.Error) -> MidpayError:
    mapped = db.map_error(exc)
    return mapped if mapped is not None else DataConflict(f"the batch could not be written: {db.first_line(exc)}")
